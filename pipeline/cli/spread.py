"""The seed spread of `lmpipe seeds`. In: `dvc exp show --json` (DVC 3.x) and a model kind. Out:
one row per seed (test ppl and its 95% bootstrap interval), the mean ± sample SD over seeds beside
the mean half-width of one run's interval, and the report."""

from __future__ import annotations

import copy
import statistics

from pipeline.cli.experiments import cell, interval, table

METRICS = "metrics/metrics.json"   # evaluate's metrics file, as `dvc exp show` names it
PARAMS = "params.yaml"


def collect(shown: list[dict], kind: str, workspace: bool = True) -> tuple[list[dict], int]:
    """(rows sorted by seed, finished experiments left out for other params). Kept: the workspace
    (if `workspace`) and each finished experiment whose params differ from its only in
    models.KIND.seed, the first of a seed; a row: seed, experiment, objective, test_ppl, ci_*."""
    first = shown[0] if shown and shown[0].get("rev") == "workspace" else {}
    if not isinstance(first.get("data"), dict):   # no workspace entry, or dvc.yaml/params.yaml unreadable
        why = (first.get("error") or {}).get("msg") or "no entry; commit once in a DVC repository"
        raise ValueError(f"`dvc exp show` cannot read the workspace ({why}); see `dvc status`")
    _, reference = _seeded(first["data"], kind)
    rows, seen, left_out = [], set(), 0
    candidates = [("workspace", first["data"])] if workspace else []
    for baseline in shown[1:]:
        for experiment in baseline.get("experiments") or []:
            executor = experiment.get("executor") or {}
            if executor.get("state", "success") != "success":
                continue          # queued, running or failed: nothing to count yet
            for rev in experiment.get("revs") or []:
                if rev.get("error") is None and rev.get("data"):
                    candidates.append((rev.get("name") or rev["rev"][:7], rev["data"]))
    for name, data in candidates:
        seed, params = _seeded(data, kind)
        if name != "workspace" and params != reference:
            left_out += 1
            continue
        metrics = ((data.get("metrics") or {}).get(METRICS) or {}).get("data") or {}
        values = metrics.get(kind) or {}
        if values.get("test_ppl") is None:
            continue
        if seed in seen:
            continue
        seen.add(seed)
        rows.append({"seed": seed, "experiment": name, "objective": values.get("objective"),
                     "test_ppl": values["test_ppl"], "ci_low": values.get("test_ppl_ci_low"),
                     "ci_high": values.get("test_ppl_ci_high")})
    return sorted(rows, key=lambda row: row["seed"]), left_out


def _seeded(data: dict, kind: str) -> tuple[int | None, dict]:
    """(the training seed of `kind`: models.KIND.seed, or the top-level seed when null; the params
    of every file without models.KIND.seed)."""
    params = {path: copy.deepcopy((entry or {}).get("data")) for path, entry in (data.get("params") or {}).items()}
    values = params.get(PARAMS) or {}
    own = (values.get("models") or {}).get(kind)
    seed = own.pop("seed", None) if isinstance(own, dict) else None
    return values.get("seed") if seed is None else seed, params


def summarize(rows: list[dict]) -> dict:
    """{n, mean, sd (ddof=1), ci_half_width (mean over rows with both ends)}; None where too few."""
    values = [row["test_ppl"] for row in rows]
    widths = [(row["ci_high"] - row["ci_low"]) / 2 for row in rows
              if row.get("ci_low") is not None and row.get("ci_high") is not None]
    return {"n": len(values),
            "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) >= 2 else None,
            "ci_half_width": statistics.fmean(widths) if widths else None}


def render(kind: str, rows: list[dict], summary: dict, left_out: int = 0,
           stale: bool = False) -> str:
    """The table, a line per thing left out, and the summary line (below two seeds: what to run)."""
    lines = []
    if rows:
        lines.append(table([{"seed": row["seed"], "experiment": row["experiment"],
                              "test ppl": row["test_ppl"],
                              "95% CI": interval(row["ci_low"], row["ci_high"], "–") or "-"}
                             for row in rows], markdown=False))
    if left_out:
        lines.append(f"({left_out} finished experiment(s) differ in more than "
                     f"models.{kind}.seed and are left out)")
    if stale:
        lines.append("(the workspace's own metrics are left out: `dvc status` finds stages to "
                     "rerun, so they are not those of its params and code; dvc repro counts them)")
    what = "test pseudo-ppl (cloze)" if any(r["objective"] == "cloze" for r in rows) else "test ppl"
    n = summary["n"]
    if n < 2:
        have = f"only 1 seed ({rows[0]['seed']})" if n == 1 else \
            f"no finished experiment with the workspace's params (nor workspace metrics) for {kind}"
        lines.append(f"{kind}: {have}; a spread needs at least 2 seeds: "
                     f"lmpipe seeds {kind} --run 5 --jobs 2 (experiments queued from an earlier "
                     f"commit: lmpipe seeds {kind} --all-commits)")
        return "\n".join(lines)
    width = summary["ci_half_width"]
    one_run = (f"the bootstrap 95% interval of one run is ±{cell(width)} on average (half-width)"
               if width is not None else "no bootstrap interval in metrics.json "
               "(test_ppl_ci_low/high) to set it against")
    lines.append(f"{kind}: {what} mean {cell(summary['mean'])} ± SD {cell(summary['sd'])} over "
                 f"{n} seeds (sample standard deviation); {one_run}")
    return "\n".join(lines)
