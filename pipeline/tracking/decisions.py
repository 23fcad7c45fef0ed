"""Stage promote's body. In: metrics/metrics.json and registry.json (evaluate's), params. Out: the
aliases promotion.promote moves; metrics/promotion.json (a DVC metric: promoted 1/0, Δ nats/token,
p_better, significant 1/0), promotion.md. Errors: StateError (file, model, key) before any move."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from pipeline import files
from pipeline.tracking import mlflow_runs, promotion, store

FIX = "rerun evaluate, which writes it: `dvc repro -f -s evaluate`"


def run(out: Path, params) -> None:
    """Gate each registered model of `out`/metrics.json; write promotion.json and promotion.md."""
    tracking_uri = store.tracking_uri(params.mlflow, files.repo_root())
    results = files.read_json(out / "metrics.json", fix=FIX)
    registered = files.read_json(out / "registry.json", fix=FIX)
    for name, result in results.items():
        check_result(out / "metrics.json", name, result)
        if name in registered:
            check_entry(out / "registry.json", name, registered[name])
    mlflow_runs.check_store(tracking_uri, params.mlflow.experiment)
    decisions = {name: _decide(tracking_uri, name, result, registered.get(name), params)
                 for name, result in results.items()}
    (out / "promotion.json").write_text(json.dumps(
        {name: summary(d) for name, d in decisions.items()}, indent=2))
    (out / "promotion.md").write_text(markdown(decisions))


def _decide(tracking_uri: str, name: str, result: dict, entry: dict | None, params) -> dict:
    if entry is None:
        return {"promoted": 0, "version": None, "test_ppl": result["test_ppl"],
                "champion_version": None, "reason": "not registered (evaluate.register_models: false)"}
    model = params.models.get(name)
    spread = promotion.seed_spread(tracking_uri, entry["run_id"], recipe(params, name),
                                   params.seed if model.seed is None else model.seed,
                                   entry["test_set"]["id"]) if model and entry.get("run_id") else None
    d = promotion.promote(
        tracking_uri, entry["model"], entry["version"], result, entry["test_set"],
        params.promote.margin, run_id=entry.get("run_id"),
        require_significant=params.promote.require_significant,
        resamples=params.evaluate.bootstrap_resamples, level=params.evaluate.confidence_level,
        seed=params.seed, spread=spread, sweep=params.promote.sweep)
    print(f"promote: {name} v{d['version']} (test set {d['test_set']}): "
          f"{'promoted' if d['promoted'] else 'kept back'} ({d['reason']}); {d['default']}",
          flush=True)
    if d["champion_version"] and d["champion_version"] != d["version"]:
        print(f"promote: {name} v{d['version']} vs champion v{d['champion_version']}: "
              f"{paired_cell(d)}", flush=True)
    return d


def recipe(params, kind: str) -> str:
    """SHA-256 (12 hex digits) of what trains `kind` but its seed: models.KIND without seed, train."""
    what = {"model": params.models[kind].model_dump(exclude={"seed"}), "train": params.train.model_dump()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


RANGES = {"ppl": (1.0, math.inf, "a perplexity >= 1"), "accuracy": (0.0, 1.0, "an accuracy in [0, 1]"),
          "bits_per": (0.0, math.inf, "bits >= 0")}   # a metric's range, by a part of its name


def check_result(path: Path, name: str, result) -> None:
    """StateError for metrics.json's entry of `name` without test_ppl or a metric outside RANGES."""
    for key, value in {"test_ppl": None, **(result if isinstance(result, dict) else {})}.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        low, high, words = next((r for part, r in RANGES.items() if part in key),
                                (-math.inf, math.inf, "a finite number"))
        ok = number and math.isfinite(value) and low <= value <= high
        if not ok and (number or key == "test_ppl"):   # text, such as objective, is no metric
            raise files.damaged(path, f"{name} has {key}={value!r}, not {words}", fix=FIX)


WRITTEN = {   # registry.json: what evaluate writes for each key of an entry
    "test_set": lambda v: isinstance(v, dict) and isinstance(v.get("id"), str) and v["id"] != ""
    and all(isinstance(x, str) for x in v.values()),   # evaluation_runs.test_set_of
    "model": lambda v: isinstance(v, str) and v != "",
    "version": lambda v: str(v).isdigit()}


def check_entry(path: Path, name: str, entry) -> None:
    """StateError for registry.json's entry of `name` unless it is what evaluate writes (WRITTEN)."""
    entry = entry if isinstance(entry, dict) else {}
    if bad := next((key for key, ok in WRITTEN.items() if key not in entry or not ok(entry[key])), None):
        raise files.damaged(path, f"{name}: bad {bad} {json.dumps(entry.get(bad))[:60]}", fix=FIX)


def summary(decision: dict) -> dict:
    """The DVC metric of a decision: promoted; with a comparison Δ (nats/token), p_better, significant."""
    out = {"promoted": decision["promoted"]}
    paired = decision.get("paired")
    if paired:
        out.update(delta_nats_per_token=paired["delta_nats_per_token"],
                   p_better=paired["p_better"], significant=int(paired["verdict"] == "yes"))
    return out


def paired_cell(d: dict) -> str:
    """The paired-comparison cell: "Δ +0.0310 nats/token [lo, hi], P(better) 0.999: ...", or "-"."""
    paired = d.get("paired")
    if paired is None:
        problem = d.get("paired_problem")
        return f"unavailable: {problem}" if problem else "-"
    verdict = {"yes": "significant", "no": "significantly worse"}.get(paired["verdict"],
                                                                      "not significant")
    return (f"Δ {paired['delta_nats_per_token']:+.4f} nats/token [{paired['delta_ci_low']:+.4f}, "
            f"{paired['delta_ci_high']:+.4f}], P(better) {paired['p_better']:.3f}: {verdict} at "
            f"{promotion.percent(paired['level'])}")


def markdown(decisions: dict[str, dict]) -> str:
    """promotion.md: one row per model."""
    lines = ["| model | version | test set | decision | test ppl | line champion | "
             "paired vs line champion | reason | alias champion |",
             "|---|---|---|---|---:|---|---|---|---|"]
    for name, d in decisions.items():
        champion = f"v{d['champion_version']}" if d.get("champion_version") else "-"
        lines.append(f"| {name} | {d.get('version') or '-'} | {d.get('test_set') or '-'} | "
                     f"{'**promoted**' if d['promoted'] else 'kept back'} | {d['test_ppl']:.3f} | "
                     f"{champion} | {paired_cell(d)} | {d['reason']} | {d.get('default') or '-'} |")
    return "\n".join(lines) + "\n"
