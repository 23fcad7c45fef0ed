"""`lmpipe seeds KIND [--run N --jobs J]` (docs/sweeps.md#seed-variance). In: DVC's experiment
queue and `dvc exp show --json` (DVC 3.x). Out: a row per seed (test ppl, 95% bootstrap interval),
the mean ± sample SD over seeds beside one run's mean half-width. Errors: one-line ValueErrors."""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from pathlib import Path

from pipeline import config
from pipeline.cli.experiments import cell, interval, repository, table
from pipeline.tracking import commands

METRICS = "metrics/metrics.json"   # evaluate's metrics file, as `dvc exp show` names it
PARAMS = "params.yaml"
SWEEP = "promote.sweep"            # a sweep member's mark: promote records it, moves no champion
BUSY = ("Queued", "Running")       # DVC's queue states of an unfinished task
STATES = ("Success", "Running", "Queued", "Failed")   # a name's state: its first among its tasks'
POLL_S = 10.0                      # between two looks at DVC's queue
PROGRESS_S = 60.0                  # a progress line at least this often (and on every change)
STARTUP_S = 60.0                   # a queue worker's start (DVC's import, celery's broker), at most


def seeds(args) -> None:
    """Queue --run seeds, wait (unless --no-wait), print the report; ValueError naming the failed."""
    kind = args.kind
    given = [f"{flag} {value}".replace(" True", "") for flag, value in (
        ("--jobs", args.jobs), ("--first", args.first), ("--no-wait", args.no_wait or None))
        if value is not None]
    if args.count is None and given:
        raise ValueError(f"{', '.join(given)}: only with --run N (e.g. --run 5)")
    first = 1 if args.first is None else args.first
    if args.count and first + args.count > 2**32:
        raise ValueError(f"--first {first}: the seeds --first .. --first + --run - 1 must be < 2**32")
    root = project_root(kind)
    if args.count is None:
        print(report(root, kind, args.all_commits))
        return
    names = queue(root, kind, range(first, first + args.count), args.jobs or 1)
    if args.no_wait:
        print(f"lmpipe: not waiting; progress: `dvc queue status`; the report once they "
              f"finish: `lmpipe seeds {kind}`")
        return
    outcome = wait(root, names)
    print(report(root, kind, args.all_commits))
    if failed := [name for name in names if outcome.get(name) != "Success"]:
        raise ValueError(f"{', '.join(failed)} failed; `dvc queue logs {failed[0]}` shows why")


def project_root(kind: str) -> Path:
    """The DVC project here; ValueError naming the file unless params.yaml has models.KIND, DVC
    reads dvc.yaml and dvc.lock (commands.dvc_files) and dvc.yaml has a stage train."""
    root = repository("seeds", (PARAMS, "dvc.yaml", ".dvc"))
    known = config.load(root / PARAMS).models
    if kind not in known:
        raise ValueError(f"KIND {kind!r} is not a model of params.yaml; use {', '.join(known)}")
    if "train" not in (commands.dvc_files(root)["dvc.yaml"].get("stages") or {}):
        raise ValueError(f"dvc.yaml: empty, or no stage train for train@{kind}; "
                         f"{commands.RESTORE['dvc.yaml']}")
    return root


def queue(root: Path, kind: str, seed_range: range, jobs: int) -> list[str]:
    """Queue one experiment per seed and start `jobs` workers; returns the names. Refuses names
    the HEAD commit's experiments hold before queueing any."""
    names = [f"{kind}-seed-{seed}" for seed in seed_range]
    shown = _exp_show(root)   # queued, running or finished: HEAD's experiments
    taken = [name for name in names if name in {experiment.get("name") for baseline in shown[1:]
                                                for experiment in baseline.get("experiments") or []}]
    if taken:
        last = max(int(name.rsplit("-", 1)[1]) for name in taken)
        raise ValueError(f"{', '.join(taken)}: taken; give --first {last + 1} or `dvc exp remove {' '.join(taken)}`")
    if note := uncommitted_note(root):
        print(note, flush=True)
    for done, (seed, name) in enumerate(zip(seed_range, names, strict=True)):
        try:
            commands.run(root, "dvc", "exp", "run", "--queue", "-n", name, "-S",
                         f"models.{kind}.seed={seed}", "-S", f"{SWEEP}=true")
        except ValueError as error:   # the ones before stay queued, not started
            kept = " ".join(names[:done])
            raise ValueError(f"{error} ({kept} stay queued: `dvc queue start -j {jobs}` runs them, "
                             f"`dvc queue remove {kept}` drops them)") if done else error from None
    commands.run(root, "dvc", "queue", "start", "-j", str(jobs))
    print(f"lmpipe: queued {', '.join(names)} (models.{kind}.seed = {seed_range.start}.."
          f"{seed_range.stop - 1}); {jobs} worker(s) started", flush=True)
    return names


def uncommitted_note(root: Path) -> str:
    """A note on what `git status` shows: DVC queues tracked changes, not untracked files (3.67)."""
    status = commands.run(root, "git", "status", "--porcelain",
                          fix=f"{root} needs git for DVC experiments (git init, commit, then dvc init)")
    lines = [line for line in status.splitlines() if line.strip()]
    changed = [line[3:] for line in lines if not line.startswith("??")]
    untracked = [line[3:] for line in lines if line.startswith("??")]
    notes = {f"uncommitted changes to {_some(changed)} go into the queued experiments (as they are "
             "now; commit first so that git holds what they ran)": changed,
             f"untracked {_some(untracked)} do not (git add them to include them)": untracked}
    parts = [note for note, paths in notes.items() if paths]
    return "lmpipe: note: " + "; ".join(parts) if parts else ""


def _some(paths: list[str], shown: int = 3) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


def wait(root: Path, names: list[str]) -> dict[str, str]:
    """{name: final status} once nothing is Queued or Running; ValueError naming the queued tasks
    when, past STARTUP_S, nothing runs and no worker is alive; Ctrl-C: SystemExit, the runs go on."""
    start = last_print = time.monotonic()
    shown = None
    try:
        while True:
            tasks = queue_tasks(root)
            mine = {name: next((s for s in STATES if (name, s) in tasks), "Unknown") for name in names}
            counts = {state: list(mine.values()).count(state)
                      for state in ("Running", "Queued", "Success", "Failed")}
            busy = any(status in BUSY for _, status in tasks)
            now = time.monotonic()
            if counts != shown or now - last_print >= PROGRESS_S or not busy:
                minutes, seconds = divmod(int(now - start), 60)
                print(f"lmpipe: {minutes}m{seconds:02d}s " + ", ".join(
                    f"{count} {state.lower()}" for state, count in counts.items()), flush=True)
                shown, last_print = counts, now
            if not busy:
                return mine
            if now - start >= STARTUP_S and not any(status == "Running" for _, status in tasks):
                _check_workers(root, [name or "?" for name, status in tasks if status == "Queued"])
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        raise SystemExit(f"\nlmpipe: stopped waiting; the experiments go on (`dvc queue status`); "
                         f"the report: lmpipe seeds {names[0].rsplit('-seed-', 1)[0]}") from None


def _check_workers(root: Path, queued: list[str]) -> None:
    """ValueError naming the `queued` tasks and the workers' logs when DVC's queue has no worker."""
    alive, logs = _celery(root, lambda queue: (bool(queue.worker_status()), queue.wdir))
    if not alive:   # a worker that failed to start, or died: nothing takes them
        raise ValueError(f"no DVC queue worker is running, so {', '.join(queued)} stay(s) queued "
                         f"(a worker's log: {os.path.relpath(logs, root)}/dvc-exp-worker-N.out); "
                         "`dvc queue start` starts one, `dvc queue remove --queued` drops them")


def queue_tasks(root: Path) -> list[tuple[str | None, str]]:
    """(name or None, Running|Queued|Failed|Success) of each task in DVC's experiment queue."""
    return _celery(root, lambda queue: [(task["name"], task["status"]) for task in queue.status()])


def _celery(root: Path, read):
    """read(DVC's experiment queue of `root`) (celery's; its worker_status() waits 1 s for
    answers); ValueError when DVC cannot read the queue."""
    from dvc.exceptions import DvcException  # here: DVC's 0.4 s import, for `lmpipe seeds` only
    from dvc.repo import Repo
    try:
        with Repo(str(root)) as repo:
            return read(repo.experiments.celery_queue)
    except DvcException as error:
        commands.dvc_files(root)
        raise ValueError(f"DVC cannot read the experiment queue of {root}: {error}") from None


def report(root: Path, kind: str, all_commits: bool = False) -> str:
    """The seed report of `kind`: HEAD's (or every commit's) experiments and an up-to-date workspace."""
    shown = _exp_show(root, all_commits)
    current = _up_to_date(root)
    rows, left_out = collect(shown, kind, workspace=current)
    stale = not current and bool(collect(shown[:1], kind)[0])   # it has metrics, left out
    return render(kind, rows, summarize(rows), left_out, stale)


def _up_to_date(root: Path) -> bool:
    """Whether `dvc status` finds nothing to rerun up to evaluate."""
    try:
        out = commands.run(root, "dvc", "status", "--json", "--with-deps", "evaluate")
    except ValueError:   # e.g. a dependency missing: not up to date either
        return False
    return json.loads(out.strip() or "{}") == {}


def _exp_show(root: Path, all_commits: bool = False) -> list[dict]:
    return json.loads(commands.run(root, "dvc", "exp", "show", "--json",
                                   *(["-A"] if all_commits else [])))


def collect(shown: list[dict], kind: str, workspace: bool = True) -> tuple[list[dict], int]:
    """(rows by seed: seed, experiment, objective, test_ppl, ci_*; finished ones left out): the
    workspace's and each finished one whose params differ only in models.KIND.seed, one a seed."""
    first = shown[0] if shown and shown[0].get("rev") == "workspace" else {}
    if not isinstance(first.get("data"), dict):   # no workspace entry, or dvc.yaml/params.yaml unreadable
        why = (first.get("error") or {}).get("msg") or "no entry; commit once in a DVC repository"
        raise ValueError(f"`dvc exp show` cannot read the workspace ({why}); see `dvc status`")
    _, reference = _seeded(first["data"], kind)
    rows, left_out = {}, 0   # {seed: row}: the first of each seed
    candidates = [("workspace", first["data"])] if workspace else []
    for baseline in shown[1:]:
        for experiment in baseline.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state", "success") != "success":
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
        if values.get("test_ppl") is not None and seed not in rows:
            rows[seed] = {"seed": seed, "experiment": name, "objective": values.get("objective"),
                          "test_ppl": values["test_ppl"], "ci_low": values.get("test_ppl_ci_low"),
                          "ci_high": values.get("test_ppl_ci_high")}
    return sorted(rows.values(), key=lambda row: row["seed"]), left_out


def _seeded(data: dict, kind: str) -> tuple[int | None, dict]:
    """(the training seed of `kind`: models.KIND.seed, or the top-level seed when null; the params
    of every file without models.KIND.seed and promote.sweep)."""
    params = {path: copy.deepcopy((entry or {}).get("data")) for path, entry in (data.get("params") or {}).items()}
    values = params.get(PARAMS) or {}
    own = (values.get("models") or {}).get(kind)
    seed = own.pop("seed", None) if isinstance(own, dict) else None
    if isinstance(values.get("promote"), dict):
        values["promote"].pop("sweep", None)
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
