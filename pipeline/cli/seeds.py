"""`lmpipe seeds KIND [--run N --jobs J]`: how far one model's test perplexity moves with its
training seed, beside the bootstrap interval of one run. In: DVC's experiment queue (`--run N`
queues KIND-seed-K with -S models.KIND.seed=K and starts J workers) and `dvc exp show --json`.
Out: a table of the finished experiments that differ from the workspace only in that seed, and
mean ± SD over seeds vs the mean CI half-width. Errors: ValueError, one line naming the argument
and the fix (docs/sweeps.md)."""

from __future__ import annotations

import copy
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

from pipeline import config
from pipeline.cli.experiments import cell, repository, table
from pipeline.tracking import commands

METRICS = "metrics/metrics.json"   # evaluate's metrics file, as `dvc exp show` names it
PARAMS = "params.yaml"
BUSY = ("Queued", "Running")       # DVC's queue states of an unfinished task
POLL_S = 10.0                      # between two looks at DVC's queue
PROGRESS_S = 60.0                  # a progress line at least this often (and on every change)


def seeds(args) -> None:
    """The `lmpipe seeds` command. In: args.kind (a key of params.yaml `models`), args.count
    (--run N: seeds to queue; None: report only), args.first, args.jobs, args.no_wait. Out: with
    --run, the queued experiments, started workers and progress lines, then (unless --no-wait)
    the report on stdout. Raises ValueError (one line) on bad arguments, a repository that is
    not a DVC project, a name already taken, a failing dvc command, or failed experiments
    (after the report of those that finished)."""
    kind = args.kind
    check_arguments(args)
    root = project_root(kind)
    if args.count is None:
        print(report(root, kind, getattr(args, "all_commits", False)))
        return
    names = queue(root, kind, range(args.first, args.first + args.count), args.jobs)
    if args.no_wait:
        print(f"lmpipe: not waiting; progress: `dvc queue status`; the report once they "
              f"finish: `lmpipe seeds {kind}`")
        return
    outcome = wait(root, names)
    print(report(root, kind, getattr(args, "all_commits", False)))
    failed = [name for name in names if outcome.get(name) != "Success"]
    if failed:
        raise ValueError(f"{len(failed)} of the {len(names)} experiments did not succeed "
                         f"({', '.join(failed)}); `dvc queue logs {failed[0]}` shows why")


def check_arguments(args) -> None:
    """The numbers of `lmpipe seeds` before anything runs: --run, --jobs >= 1, --first >= 0 and
    the seeds below 2**32; --jobs, --first and --no-wait only with --run."""
    if args.count is None:
        given = [f"{flag} {value}".replace(" True", "") for flag, value in (
            ("--jobs", args.jobs), ("--first", args.first), ("--no-wait", args.no_wait or None))
            if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --run N, the number of seeds to "
                             f"queue (e.g. lmpipe seeds {args.kind} --run 5 {' '.join(given)})")
        return
    args.jobs = 1 if args.jobs is None else args.jobs
    args.first = 1 if args.first is None else args.first
    if args.count < 1:
        raise ValueError(f"--run {args.count}: the number of seeds to queue must be at least 1 "
                         "(e.g. --run 5)")
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: the number of queue workers must be at least 1 "
                         "(e.g. --jobs 2; each worker runs one experiment at a time)")
    if not (0 <= args.first and args.first + args.count <= 2**32):
        raise ValueError(f"--first {args.first}: seeds run from --first to --first + --run - 1 "
                         "and must lie in 0 .. 2**32 - 1")


def project_root(kind: str) -> Path:
    """The repository root (the current directory, as for `dvc`) after checking that it is a
    DVC project with a params.yaml that loads and names `kind` under models."""
    root = repository("seeds", (PARAMS, "dvc.yaml"))
    if not (root / ".dvc").is_dir():
        raise ValueError(f"{root} is not a DVC repository (no .dvc/): run `lmpipe seeds` in the "
                         "project's git + DVC checkout (or `git init && dvc init` first)")
    known = config.load(root / PARAMS).models
    if kind not in known:
        raise ValueError(f"KIND {kind!r} is not a model of params.yaml; use one of "
                         f"{', '.join(known)}")
    check_pipeline(root, kind)
    return root


def check_pipeline(root: Path, kind: str) -> None:
    """dvc.yaml checked as DVC checks it (config.read_yaml: ruamel, as DVC parses it; then DVC's
    own schema, dvc.schema), with a stage train (train@KIND reruns in every experiment), before
    any dvc command runs: dvc itself would fail in each queued experiment, and `dvc exp show`
    reports a broken file as a workspace without data. Raises ValueError, one line naming
    dvc.yaml, what is wrong and the fix."""
    import voluptuous  # here, as DVC's 0.3 s import below: only `lmpipe seeds` needs them
    from dvc.schema import COMPILED_MULTI_STAGE_SCHEMA
    path = config.relative(root / "dvc.yaml")
    restore = f"`git checkout {path}` restores the committed one"
    try:
        pipeline = config.read_yaml(path)
    except config.ParamsError as error:   # "dvc.yaml: not valid YAML (line L, column C): ..."
        raise ValueError(f"{error} ({restore})") from None
    if pipeline is None:
        raise ValueError(f"{path}: is empty, no pipeline for `lmpipe seeds` to run; {restore}")
    try:
        COMPILED_MULTI_STAGE_SCHEMA(pipeline)
    except voluptuous.Invalid as error:
        raise ValueError(f"{path}: DVC cannot read it ({error}); fix the file ({restore})") from None
    if "train" not in (pipeline.get("stages") or {}):
        raise ValueError(f"{path}: no stage train, so train@{kind} would not run in the "
                         f"experiments; {restore}")


def experiment_name(kind: str, seed: int) -> str:
    return f"{kind}-seed-{seed}"


def queue(root: Path, kind: str, seed_range: range, jobs: int) -> list[str]:
    """Queue one DVC experiment per seed (`dvc exp run --queue -n KIND-seed-K -S
    models.KIND.seed=K`) and start `jobs` workers (`dvc queue start -j`). Returns the names.
    Refuses names already taken by experiments of the HEAD commit (before queueing any);
    prints one note when uncommitted changes go into the experiments."""
    names = [experiment_name(kind, seed) for seed in seed_range]
    taken = sorted(set(names) & _names(_exp_show(root)), key=names.index)
    if taken:
        last = max(int(name.rsplit("-", 1)[1]) for name in taken)
        raise ValueError(f"experiment {', '.join(taken)} already exist(s) for this commit; "
                         f"queue other seeds with --first {last + 1}, or remove them first "
                         f"(dvc exp remove {' '.join(taken)})")
    note = uncommitted_note(root)
    if note:
        print(note, flush=True)
    copies = [flag for path in copy_paths(root, kind) for flag in ("-C", path)]
    for done, (seed, name) in enumerate(zip(seed_range, names, strict=True)):
        try:
            commands.run(root, "dvc", "exp", "run", "--queue", "-n", name, "-S",
                         f"models.{kind}.seed={seed}", *copies)
        except ValueError as error:
            if done:   # the ones before stay queued, not started
                raise ValueError(f"{error} ({', '.join(names[:done])} stay queued: `dvc queue "
                                 f"start -j {jobs}` runs them, `dvc queue remove "
                                 f"{' '.join(names[:done])}` drops them)") from None
            raise
    commands.run(root, "dvc", "queue", "start", "-j", str(jobs))
    print(f"lmpipe: queued {', '.join(names)} (models.{kind}.seed = {seed_range.start}.."
          f"{seed_range.stop - 1}); {jobs} worker(s) started", flush=True)
    return names


def copy_paths(root: Path, kind: str) -> list[str]:
    """The workspace outputs each queued experiment gets a copy of (`dvc exp run -C`): those of
    every stage but train@KIND that are neither in DVC's cache nor in git (cache: false and
    git-ignored: train's checkpoints/<kind>). DVC's temporary clone holds the commit and the
    cached outputs only; without these, every train stage would rerun in every experiment
    (verified with DVC 3.67). KIND's own are left out: its checkpoints are of another seed."""
    with _repo(root, "pipeline") as repo:
        paths = [out.def_path for stage in repo.index.stages
                 if stage.addressing != f"train@{kind}" for out in stage.outs
                 if not out.use_cache and (root / out.def_path).exists()]
    if not paths:
        return []
    # exit status 1: none of them is ignored
    ignored = commands.run(root, "git", "check-ignore", "--", *paths, codes=(0, 1)).splitlines()
    return [path for path in paths if path in ignored]


@contextmanager
def _repo(root: Path, what: str):
    """DVC's Repo of `root`; a DvcException is a ValueError naming `what` DVC cannot read."""
    from dvc.exceptions import DvcException  # here: DVC's 0.4 s import, for `lmpipe seeds` only
    from dvc.repo import Repo
    try:
        with Repo(str(root)) as repo:
            yield repo
    except DvcException as error:
        raise ValueError(f"DVC cannot read the {what} of {root}: {error}") from None


def uncommitted_note(root: Path) -> str:
    """One line when `git status --porcelain` shows changes: DVC queues tracked and staged
    changes with the experiments (verified with DVC 3.67: the snapshot is taken at queueing),
    untracked files are left out. "" for a clean workspace. Raises ValueError outside git."""
    status = commands.run(root, "git", "status", "--porcelain",
                          fix=f"{root} needs git for DVC experiments (git init, commit, then dvc init)")
    lines = [line for line in status.splitlines() if line.strip()]
    changed = [line[3:] for line in lines if not line.startswith("??")]
    untracked = [line[3:] for line in lines if line.startswith("??")]
    parts = []
    if changed:
        parts.append(f"uncommitted changes to {_some(changed)} go into the queued experiments "
                     "(DVC queues the workspace as it is now, on top of the last commit; later "
                     "edits do not reach them; commit first so that git holds what they ran)")
    if untracked:
        parts.append(f"untracked {_some(untracked)} do not (git add them to include them)")
    return "lmpipe: note: " + "; ".join(parts) if parts else ""


def _some(paths: list[str], shown: int = 3) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


def wait(root: Path, names: list[str]) -> dict[str, str]:
    """Poll DVC's queue (queue_tasks) until no task is Queued or Running, printing a progress line
    when the counts of `names` change and at least every PROGRESS_S seconds. Returns
    {name: final status} ("Success" if any of a name's tasks succeeded). Ctrl-C stops the
    waiting only: the experiments go on (SystemExit with what to run next)."""
    start = last_print = time.monotonic()
    shown = None
    try:
        while True:
            tasks = queue_tasks(root)
            mine = {name: _outcome([s for n, s in tasks if n == name]) for name in names}
            counts = {state: sum(1 for s in mine.values() if s == state)
                      for state in ("Running", "Queued", "Success", "Failed")}
            busy = any(status in BUSY for _, status in tasks)
            now = time.monotonic()
            if counts != shown or now - last_print >= PROGRESS_S or not busy:
                print(f"lmpipe: {_clock(now - start)} " + ", ".join(
                    f"{count} {state.lower()}" for state, count in counts.items()), flush=True)
                shown, last_print = counts, now
            if not busy:
                return mine
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        raise SystemExit("\nlmpipe: stopped waiting; the experiments go on in DVC's queue "
                         "(dvc queue status; dvc queue kill NAME to stop one); the report: "
                         f"lmpipe seeds {names[0].rsplit('-seed-', 1)[0]}") from None


def queue_tasks(root: Path) -> list[tuple[str | None, str]]:
    """(name, status) of each task in DVC's experiment queue, as `dvc queue status` lists them:
    Running, Queued, Failed, Success (an unnamed task's name is None)."""
    with _repo(root, "experiment queue") as repo:
        return [(task["name"], task["status"]) for task in repo.experiments.celery_queue.status()]


def _outcome(states: list[str]) -> str:
    for state in ("Success", "Running", "Queued", "Failed"):
        if state in states:
            return state
    return "Unknown"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def report(root: Path, kind: str, all_commits: bool = False) -> str:
    """The seed table and summary of `kind` from `dvc exp show --json` (the HEAD commit's
    experiments; with `all_commits`, every commit's: `dvc exp show -A`) and, when up to date,
    the workspace's own metrics."""
    shown = _exp_show(root, all_commits)
    current = _up_to_date(root)
    rows, left_out = collect(shown, kind, workspace=current)
    stale = not current and bool(collect(shown[:1], kind)[0])   # it has metrics, left out
    return render(kind, rows, summarize(rows), left_out, stale)


def collect(shown: list[dict], kind: str, workspace: bool = True) -> tuple[list[dict], int]:
    """Rows of one seed each from `dvc exp show --json` output (DVC 3.x: a list whose first
    entry is the workspace, then the baseline commit(s), each with "experiments": [{"name",
    "executor": {"state"} or None, "revs": [{"name", "error", "data": {"params": {file:
    {"data"}}, "metrics": {file: {"data"}}}}]}]). A row is {"seed", "experiment",
    "objective", "test_ppl", "ci_low", "ci_high"} (None where absent), sorted by seed. Kept:
    the workspace (if `workspace` and it has KIND's test_ppl) and every finished experiment
    whose params equal the workspace's except models.KIND.seed; the first row of a seed wins.
    Returns (rows, how many finished experiments were left out for other params)."""
    if not shown or shown[0].get("rev") != "workspace":
        raise ValueError("`dvc exp show --json` returned no workspace entry; is this a DVC "
                         "repository with at least one commit?")
    if not isinstance(shown[0].get("data"), dict):   # dvc.yaml or params.yaml unreadable
        why = (shown[0].get("error") or {}).get("msg") or "no data"
        raise ValueError(f"`dvc exp show` cannot read the workspace ({why}); fix dvc.yaml and "
                         "params.yaml (`dvc status` says more)")
    reference = _params(shown[0]["data"])
    rows, seen, left_out = [], set(), 0
    candidates = [("workspace", shown[0]["data"])] if workspace else []
    for baseline in shown[1:]:
        for experiment in baseline.get("experiments") or []:
            executor = experiment.get("executor") or {}
            if executor.get("state", "success") != "success":
                continue          # queued, running or failed: nothing to count yet
            for rev in experiment.get("revs") or []:
                if rev.get("error") is None and rev.get("data"):
                    candidates.append((rev.get("name") or rev["rev"][:7], rev["data"]))
    for name, data in candidates:
        params = _params(data)
        if name != "workspace" and _without_seed(params, kind) != _without_seed(reference, kind):
            left_out += 1
            continue
        metrics = ((data.get("metrics") or {}).get(METRICS) or {}).get("data") or {}
        values = metrics.get(kind) or {}
        if values.get("test_ppl") is None:
            continue
        seed = _seed(params, kind)
        if seed in seen:
            continue
        seen.add(seed)
        rows.append({"seed": seed, "experiment": name, "objective": values.get("objective"),
                     "test_ppl": values["test_ppl"], "ci_low": values.get("test_ppl_ci_low"),
                     "ci_high": values.get("test_ppl_ci_high")})
    return sorted(rows, key=lambda row: row["seed"]), left_out


def _params(data: dict) -> dict:
    """{params file: its values} of one `dvc exp show --json` entry."""
    return {path: (entry or {}).get("data") for path, entry in (data.get("params") or {}).items()}


def _without_seed(params: dict, kind: str) -> dict:
    params = copy.deepcopy(params)
    models = (params.get(PARAMS) or {}).get("models") or {}
    if isinstance(models.get(kind), dict):
        models[kind].pop("seed", None)
    return params


def _seed(params: dict, kind: str) -> int | None:
    """The training seed of `kind`: models.KIND.seed, or the top-level seed when null."""
    values = params.get(PARAMS) or {}
    own = ((values.get("models") or {}).get(kind) or {}).get("seed")
    return values.get("seed") if own is None else own


def summarize(rows: list[dict]) -> dict:
    """The spread over seeds. In: rows with "test_ppl" and optionally "ci_low"/"ci_high".
    Out: {"n", "mean", "sd" (sample standard deviation, ddof=1; None below 2 rows),
    "ci_half_width" (mean of (ci_high - ci_low) / 2 over the rows that have both; None if
    none)}. `mean` is None for no rows."""
    values = [row["test_ppl"] for row in rows]
    widths = [(row["ci_high"] - row["ci_low"]) / 2 for row in rows
              if row.get("ci_low") is not None and row.get("ci_high") is not None]
    return {"n": len(values),
            "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) >= 2 else None,
            "ci_half_width": statistics.fmean(widths) if widths else None}


def render(kind: str, rows: list[dict], summary: dict, left_out: int = 0,
           stale: bool = False) -> str:
    """The report: a table (seed, experiment, test ppl, 95% CI), a line per thing left out
    (`left_out` experiments with other params; the workspace's metrics when `stale`) and one
    summary line; below two seeds, what to run instead."""
    lines = []
    if rows:
        lines.append(table([{"seed": row["seed"], "experiment": row["experiment"],
                              "test ppl": row["test_ppl"],
                              "95% CI": f"{cell(row['ci_low'])}–{cell(row['ci_high'])}"
                              if row["ci_low"] is not None and row["ci_high"] is not None
                              else "-"} for row in rows], markdown=False))
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
    interval = (f"the bootstrap 95% interval of one run is ±{cell(width)} on average (half-width)"
                if width is not None else "no bootstrap interval in metrics.json "
                "(test_ppl_ci_low/high) to set it against")
    lines.append(f"{kind}: {what} mean {cell(summary['mean'])} ± SD {cell(summary['sd'])} over "
                 f"{n} seeds (sample standard deviation); {interval}")
    return "\n".join(lines)


def _up_to_date(root: Path) -> bool:
    """Whether the workspace's metrics are those of its params and code: `dvc status` finds
    nothing to rerun for evaluate and the stages before it."""
    try:
        out = commands.run(root, "dvc", "status", "--json", "--with-deps", "evaluate")
    except ValueError:   # e.g. a dependency missing: not up to date either
        return False
    return json.loads(out.strip() or "{}") == {}


def _exp_show(root: Path, all_commits: bool = False) -> list[dict]:
    return json.loads(commands.run(root, "dvc", "exp", "show", "--json",
                                   *(["-A"] if all_commits else [])))


def _names(shown: list[dict]) -> set[str]:
    """The names of the experiments (queued, running or finished) in `dvc exp show --json`."""
    return {experiment.get("name") for baseline in shown[1:]
            for experiment in baseline.get("experiments") or []} - {None}
