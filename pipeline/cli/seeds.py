"""`lmpipe seeds KIND [--run N --jobs J]`: how far one model's test perplexity moves with its
training seed, beside the bootstrap interval of one run. In: DVC's experiment queue (`--run N`
queues KIND-seed-K with -S models.KIND.seed=K and starts J workers) and `dvc exp show --json`.
Out: a table of the finished experiments that differ from the workspace only in that seed, and
mean ± SD over seeds vs the mean CI half-width. Errors: ValueError, one line naming the argument
and the fix (docs/sweeps.md)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from pipeline import config, files
from pipeline.cli.experiments import repository
from pipeline.cli.spread import PARAMS, collect, render, summarize
from pipeline.tracking import commands

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
        raise ValueError(f"{', '.join(failed)} failed; `dvc queue logs {failed[0]}` shows why")


def check_arguments(args) -> None:
    """The numbers of `lmpipe seeds` before anything runs: --run, --jobs >= 1, --first >= 0 and
    the seeds below 2**32; --jobs, --first and --no-wait only with --run."""
    if args.count is None:
        given = [f"{flag} {value}".replace(" True", "") for flag, value in (
            ("--jobs", args.jobs), ("--first", args.first), ("--no-wait", args.no_wait or None))
            if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --run N (e.g. --run 5)")
        return
    args.jobs = 1 if args.jobs is None else args.jobs
    args.first = 1 if args.first is None else args.first
    low = {"--run": (args.count, 1), "--jobs": (args.jobs, 1), "--first": (args.first, 0)}
    bad = [f"{flag} {value}" for flag, (value, least) in low.items() if value < least]
    if bad or args.first + args.count > 2**32:
        raise ValueError(f"{(bad or [f'--first {args.first}'])[0]}: --run and --jobs must be >= 1, "
                         "the seeds --first .. --first + --run - 1 in 0 .. 2**32 - 1")


def project_root(kind: str) -> Path:
    """The repository root (the current directory, as for `dvc`) after checking that it is a
    DVC project with a params.yaml that loads and names `kind` under models."""
    root = repository("seeds", (PARAMS, "dvc.yaml"))
    if not (root / ".dvc").is_dir():
        raise ValueError(f"{root}: no .dvc/, not a DVC repository; run in the project's checkout")
    known = config.load(root / PARAMS).models
    if kind not in known:
        raise ValueError(f"KIND {kind!r} is not a model of params.yaml; use {', '.join(known)}")
    check_pipeline(root, kind)
    return root


def check_pipeline(root: Path, kind: str) -> None:
    """dvc.yaml checked as DVC checks it (files.read_yaml: ruamel, as DVC parses it; then DVC's
    own schema, dvc.schema), with a stage train (train@KIND reruns in every experiment), before
    any dvc command runs: dvc itself would fail in each queued experiment, and `dvc exp show`
    reports a broken file as a workspace without data. Raises ValueError, one line naming
    dvc.yaml, what is wrong and the fix."""
    import voluptuous  # here, as DVC's 0.3 s import below: only `lmpipe seeds` needs them
    from dvc.schema import COMPILED_MULTI_STAGE_SCHEMA
    path = files.relative(root / "dvc.yaml")
    restore = f"`git checkout {path}` restores the committed one"
    try:
        pipeline = files.read_yaml(path)
    except config.ParamsError as error:   # "dvc.yaml: not valid YAML (line L, column C): ..."
        raise ValueError(f"{error} ({restore})") from None
    if pipeline is None:
        raise ValueError(f"{path}: is empty, no pipeline for `lmpipe seeds` to run; {restore}")
    try:
        COMPILED_MULTI_STAGE_SCHEMA(pipeline)
    except voluptuous.Invalid as error:
        raise ValueError(f"{path}: DVC cannot read it ({error}); fix the file ({restore})") from None
    if "train" not in (pipeline.get("stages") or {}):
        raise ValueError(f"{path}: no stage train for train@{kind}; {restore}")


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
        raise ValueError(f"{', '.join(taken)}: taken in this commit; give --first {last + 1}, "
                         f"or `dvc exp remove {' '.join(taken)}`")
    note = uncommitted_note(root)
    if note:
        print(note, flush=True)
    copies = [flag for path in copy_paths(root, kind) for flag in ("-C", path)]
    for done, (seed, name) in enumerate(zip(seed_range, names, strict=True)):
        try:
            commands.run(root, "dvc", "exp", "run", "--queue", "-n", name, "-S",
                         f"models.{kind}.seed={seed}", *copies)
        except ValueError as error:   # the ones before stay queued, not started
            kept = " ".join(names[:done])
            raise ValueError(f"{error} ({kept} stay queued: `dvc queue start -j {jobs}` runs them, "
                             f"`dvc queue remove {kept}` drops them)") if done else error from None
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
        kind = names[0].rsplit("-seed-", 1)[0]
        raise SystemExit("\nlmpipe: stopped waiting; the experiments go on in DVC's queue (`dvc "
                         f"queue status`); the report: lmpipe seeds {kind}") from None


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
