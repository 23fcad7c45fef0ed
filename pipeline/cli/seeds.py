"""`lmpipe seeds KIND [--run N --jobs J]`: one model's test perplexity over training seeds beside
the bootstrap interval of one run. In: DVC's experiment queue (KIND-seed-K, -S models.KIND.seed=K)
and `dvc exp show --json`. Out: the report of cli/spread.py. Errors: one-line ValueErrors."""

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
STATES = ("Success", "Running", "Queued", "Failed")   # a name's state: its first among its tasks'
POLL_S = 10.0                      # between two looks at DVC's queue
PROGRESS_S = 60.0                  # a progress line at least this often (and on every change)


def seeds(args) -> None:
    """Queue --run seeds (unless None) and wait (unless --no-wait), then print the report. Raises
    ValueError for the failed experiments after the report of those that finished."""
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
    failed = [name for name in names if outcome.get(name) != "Success"]
    if failed:
        raise ValueError(f"{', '.join(failed)} failed; `dvc queue logs {failed[0]}` shows why")


def project_root(kind: str) -> Path:
    """The DVC project here, whose params.yaml names `kind` under models and dvc.yaml trains it."""
    root = repository("seeds", (PARAMS, "dvc.yaml", ".dvc"))
    known = config.load(root / PARAMS).models
    if kind not in known:
        raise ValueError(f"KIND {kind!r} is not a model of params.yaml; use {', '.join(known)}")
    check_pipeline(root, kind)
    return root


def check_pipeline(root: Path, kind: str) -> None:
    """dvc.yaml as DVC reads it (ruamel, then dvc.schema) with a stage train, before any dvc
    command: each queued experiment would fail on it. Raises ValueError naming dvc.yaml."""
    import voluptuous  # here, as DVC's 0.3 s import below: only `lmpipe seeds` needs them
    from dvc.schema import COMPILED_MULTI_STAGE_SCHEMA
    path = files.relative(root / "dvc.yaml")
    restore = f"`git checkout {path}` restores the committed one"
    try:
        stages = COMPILED_MULTI_STAGE_SCHEMA(files.read_yaml(path) or {}).get("stages") or {}
    except (voluptuous.Invalid, config.ParamsError) as error:   # the schema's, or not YAML
        raise ValueError(f"{path}: DVC cannot read it ({error}); {restore}") from None
    if "train" not in stages:
        raise ValueError(f"{path}: empty, or no stage train for train@{kind}; {restore}")


def experiment_name(kind: str, seed: int) -> str:
    return f"{kind}-seed-{seed}"


def queue(root: Path, kind: str, seed_range: range, jobs: int) -> list[str]:
    """Queue one experiment per seed and start `jobs` workers; returns the names. Refuses names
    the HEAD commit's experiments hold before queueing any."""
    names = [experiment_name(kind, seed) for seed in seed_range]
    shown = _exp_show(root)   # queued, running or finished: HEAD's experiments
    taken = [name for name in names if name in {experiment.get("name") for baseline in shown[1:]
                                                for experiment in baseline.get("experiments") or []}]
    if taken:
        last = max(int(name.rsplit("-", 1)[1]) for name in taken)
        raise ValueError(f"{', '.join(taken)}: taken; give --first {last + 1} or `dvc exp remove {' '.join(taken)}`")
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
    """The uncached, git-ignored outputs of every stage but train@KIND (checkpoints/<kind>) that
    each experiment copies (`-C`): DVC's clone lacks them and would rerun every train stage."""
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
    from dvc.exceptions import DvcException  # here: DVC's 0.4 s import, for `lmpipe seeds` only
    from dvc.repo import Repo
    try:
        with Repo(str(root)) as repo:
            yield repo
    except DvcException as error:
        raise ValueError(f"DVC cannot read the {what} of {root}: {error}") from None


def uncommitted_note(root: Path) -> str:
    """A note on what `git status` shows: DVC queues tracked changes, not untracked files (3.67)."""
    status = commands.run(root, "git", "status", "--porcelain",
                          fix=f"{root} needs git for DVC experiments (git init, commit, then dvc init)")
    lines = [line for line in status.splitlines() if line.strip()]
    changed = [line[3:] for line in lines if not line.startswith("??")]
    untracked = [line[3:] for line in lines if line.startswith("??")]
    parts = []
    if changed:
        parts.append(f"uncommitted changes to {_some(changed)} go into the queued experiments (as "
                     "they are now; commit first so that git holds what they ran)")
    if untracked:
        parts.append(f"untracked {_some(untracked)} do not (git add them to include them)")
    return "lmpipe: note: " + "; ".join(parts) if parts else ""


def _some(paths: list[str], shown: int = 3) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


def wait(root: Path, names: list[str]) -> dict[str, str]:
    """{name: final status} once no task is Queued or Running, printing progress on a change and
    every PROGRESS_S. Ctrl-C stops the waiting only (SystemExit), not the experiments."""
    start = last_print = time.monotonic()
    shown = None
    try:
        while True:
            tasks = queue_tasks(root)
            mine = {name: next((s for s in STATES if (name, s) in tasks), "Unknown") for name in names}
            counts = {state: sum(1 for s in mine.values() if s == state)
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
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        raise SystemExit(f"\nlmpipe: stopped waiting; the experiments go on (`dvc queue status`); "
                         f"the report: lmpipe seeds {names[0].rsplit('-seed-', 1)[0]}") from None


def queue_tasks(root: Path) -> list[tuple[str | None, str]]:
    """(name or None, Running|Queued|Failed|Success) of each task in DVC's experiment queue."""
    with _repo(root, "experiment queue") as repo:
        return [(task["name"], task["status"]) for task in repo.experiments.celery_queue.status()]


def report(root: Path, kind: str, all_commits: bool = False) -> str:
    """The seed report of `kind` over HEAD's experiments (or every commit's), and the workspace's
    own metrics when they are up to date."""
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
