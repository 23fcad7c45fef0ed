"""Parallel DVC queue workers on the embedded MLflow store (sqlite:///mlflow.db): does every
experiment end up in MLflow exactly once, and does any worker hit "database is locked"?

Builds a throwaway git + DVC repository in a temporary folder (the project's pipeline/, stages/,
configs/, dvc.yaml, params.yaml with the tiny settings of tests/test_pipeline_e2e.py), runs
`dvc repro` once and commits, then queues --experiments experiments that retrain two models
each (`dvc exp run --queue -n w-seed-K -S models.gru.seed=K -S models.rnn.seed=K`; DVC's run
cache restores the other models), starts `dvc queue start -j
--jobs` and waits for the queue to drain. Prints JSON lines: the queue's outcome, the wall
time, MLflow's pipeline (parent) and model runs per experiment, runs by status, experiments
with more than one parent run (duplicates) or none (missing), the model versions registered
and whether their numbers are unique, the store's journal mode, and how often "database is
locked" appears in `dvc queue logs`. --without-wal replaces pipeline/tracking/store.py's
prepare() in the throwaway copy with a no-op: the store stays in MLflow's rollback journal,
for comparison. Run from the repository root (2 CPU cores: about 10 minutes for 8 experiments):

    .venv/bin/python benchmarks/parallel_workers.py [--experiments 8] [--jobs 4] [--without-wal] [--keep]
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # tests.conftest: the tests' throwaway repository
SWEPT = ("gru", "rnn")   # retrained by every experiment; the others come from the run cache
LOCKED = "database is locked"
NO_WAL = '\n\ndef prepare(tracking_uri):   # benchmarks/parallel_workers.py --without-wal\n' \
         '    return tracking_uri\n'


def sh(args: list[str], cwd: Path, env: dict, log: Path | None = None) -> str:
    """Run a command; its stdout (to `log` instead when given: `dvc queue start` leaves workers
    behind that hold a pipe open). Exits with the output's tail when it fails."""
    if log is not None:
        with log.open("a") as out:
            result = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, text=True)
        text = log.read_text()
    else:
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
        text = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed in {cwd}:\n{text[-3000:]}")
    return result.stdout if log is None else ""


def build(repo: Path, env: dict, without_wal: bool) -> None:
    """tests/conftest.py's dvc_repo with tests/test_pipeline_e2e.py's tiny params, then `dvc
    repro` and a commit."""
    from tests.conftest import dvc_repo
    from tests.test_pipeline_e2e import tiny
    dvc_repo(repo, tiny)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    if without_wal:
        store = repo / "pipeline" / "tracking" / "store.py"
        store.write_text(store.read_text() + NO_WAL)
        sh([*git, "commit", "-q", "-am", "without WAL"], repo, env)
    sh(["dvc", "repro"], repo, env, log=repo.parent / "repro.log")
    sh(["git", "add", "-A"], repo, env)
    sh([*git, "commit", "-q", "-m", "repro"], repo, env)


def queue_status(repo: Path, env: dict) -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    states = {}
    for cells in map(str.split, sh(["dvc", "queue", "status"], repo, env).splitlines()):
        if len(cells) >= 3 and cells[-1] in ("Queued", "Running", "Success", "Failed", "Unknown"):
            states[cells[1]] = cells[-1]
    return states


def store_counts(db: Path, names: list[str]) -> dict:
    """What the experiments left in MLflow: parent and model runs per experiment (tags
    lmpipe.role and dvc_exp_name), every run's status, the registered versions."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
        tags = {}
        for run, key, value in con.execute("select run_uuid, key, value from tags"):
            tags.setdefault(run, {})[key] = value
        status = dict(con.execute("select run_uuid, status from runs"))
        versions = con.execute("select name, count(*), count(distinct version), max(version) "
                               "from model_versions group by name").fetchall()
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    mine = {run for run, t in tags.items() if t.get("dvc_exp_name") in names}
    parents = {run for run in mine if tags[run].get("lmpipe.role") == "pipeline"}
    models = {run for run, t in tags.items() if t.get("mlflow.parentRunId") in parents}
    per_experiment = Counter(tags[run]["dvc_exp_name"] for run in parents)
    models_per = Counter(tags[tags[run]["mlflow.parentRunId"]]["dvc_exp_name"] for run in models)
    return {"journal_mode": mode,
            "pipeline_runs_per_experiment": dict(sorted(per_experiment.items())),
            "model_runs_per_experiment": dict(sorted(models_per.items())),
            "runs_by_status": dict(Counter(status[run] for run in mine | models)),
            "runs_left_running": sum(1 for s in status.values() if s == "RUNNING"),
            "duplicates": sorted(n for n, c in per_experiment.items() if c > 1),
            "missing": sorted(set(names) - set(per_experiment)),
            "registered": {name: {"versions": count, "unique": distinct == count, "max": top}
                           for name, count, distinct, top in versions}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--without-wal", action="store_true",
                        help="leave the store in MLflow's rollback journal (prepare() a no-op)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    scratch = Path(tempfile.mkdtemp(prefix="lmpipe-workers-"))
    repo, finished = scratch / "repo", False
    try:
        started = time.perf_counter()
        build(repo, env, args.without_wal)
        print(json.dumps({"setup_s": round(time.perf_counter() - started, 1), "repo": str(repo),
                          "without_wal": args.without_wal}), flush=True)
        names = [f"w-seed-{k}" for k in range(1, args.experiments + 1)]
        for k, name in enumerate(names, 1):
            seeds = [flag for kind in SWEPT for flag in ("-S", f"models.{kind}.seed={k}")]
            sh(["dvc", "exp", "run", "--queue", "-n", name, *seeds], repo, env)
        started = time.perf_counter()
        sh(["dvc", "queue", "start", "-j", str(args.jobs)], repo, env, log=scratch / "start.log")
        states = queue_status(repo, env)
        while any(state in ("Queued", "Running") for state in states.values()):
            time.sleep(5)
            states = queue_status(repo, env)
        wall = time.perf_counter() - started
        outcome = {name: states.get(name, "Unknown") for name in names}
        logs = {name: subprocess.run(["dvc", "queue", "logs", name], cwd=repo, env=env,
                                     capture_output=True, text=True).stdout for name in names}
        print(json.dumps({"experiments": len(names), "jobs": args.jobs,
                          "wall_s": round(wall, 1),
                          "queue": dict(Counter(outcome.values())),
                          "failed": {n: _last_error(logs[n]) for n, s in outcome.items()
                                     if s != "Success"}}), flush=True)
        print(json.dumps({"database_is_locked": sum(log.count(LOCKED) for log in logs.values()),
                          "experiments_with_it": sorted(n for n, log in logs.items()
                                                        if LOCKED in log),
                          "operational_errors": sum(log.count("OperationalError")
                                                    for log in logs.values())}), flush=True)
        print(json.dumps(store_counts(repo / "mlflow.db", names)), flush=True)
        finished = True
    finally:
        if (repo / ".dvc").is_dir():
            subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env, capture_output=True)
        if args.keep or not finished:
            print(json.dumps({"kept": str(scratch)}), flush=True)
        else:   # the workers' keepers may still write their pid files for a moment
            for _ in range(10):
                shutil.rmtree(scratch, ignore_errors=True)
                if not scratch.exists():
                    break
                time.sleep(3)


def _last_error(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no log)"])[-1][:300]


if __name__ == "__main__":
    main()
