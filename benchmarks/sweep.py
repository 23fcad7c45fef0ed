"""A sweep of one GRU param on DVC's experiment queue: wall time and the train stages that ran,
for the pipeline at each --ref (e.g. d62eb64, before train's resume state left DVC's outputs,
and HEAD). Each ref gets a throwaway git + DVC repository (its pipeline/, stages/, configs/,
dvc.yaml, params.yaml with the tiny settings of tests/test_pipeline_e2e.py), `dvc repro`, a
commit, then the no-op `dvc repro` time (median of 3), and --repeats times: the sweep queued
(`dvc exp run --queue -S models.gru.hidden_dim=V`), `dvc queue start -j --jobs`, waited for
(then the experiments and DVC's run cache are removed, so that a repeat finds no earlier run).
Prints JSON lines (with the seconds spent inside each stage kind's command, summed over the
experiments: what is left of wall x jobs is DVC's own work per experiment). Run from the repository root (2 CPU cores: about 10 minutes a ref):

    .venv/bin/python benchmarks/sweep.py --ref d62eb64 --ref HEAD [--values 12 20 24 32] [--jobs 2]
        [--repeats 3] [--set train.max_epochs=3]
"""

import argparse
import functools
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # tests: the tiny params
sys.path.insert(0, str(ROOT / "benchmarks"))
from parallel_workers import queue_status, sh  # noqa: E402

FILES = ("pipeline", "stages", "configs", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")
DEADLINE_S = 1800
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def build(ref: str, repo: Path, env: dict, settings: list[str]) -> None:
    """The pipeline of `ref` with the tests' tiny params and `settings` (KEY=VALUE), reproduced
    and committed."""
    import yaml

    from tests.test_pipeline_e2e import tiny
    archive = subprocess.run(["git", "archive", ref, *FILES], cwd=ROOT, capture_output=True,
                             check=True).stdout
    repo.mkdir(parents=True)
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(repo, filter="data")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    tiny(params)
    for setting in settings:   # e.g. train.max_epochs=3
        key, value = setting.split("=", 1)
        *path, last = key.split(".")
        functools.reduce(dict.__getitem__, path, params)[last] = yaml.safe_load(value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh([*GIT, "commit", "-q", "-m", "init"], repo, env)
    sh(["dvc", "repro"], repo, env, log=repo.parent / "repro.log")
    sh(["git", "add", "-A"], repo, env)
    sh([*GIT, "commit", "-q", "-m", "repro"], repo, env)


def sweep(repo: Path, env: dict, names: list[str], values: list[int], jobs: int) -> dict:
    """Queue one experiment per value, run them on `jobs` workers: wall time and train stages."""
    for name, value in zip(names, values, strict=True):
        sh(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"models.gru.hidden_dim={value}"],
           repo, env)
    started = time.perf_counter()
    sh(["dvc", "queue", "start", "-j", str(jobs)], repo, env, log=repo.parent / "start.log")
    states = queue_status(repo, env)
    while any(state in ("Queued", "Running") for state in states.values()):
        if time.perf_counter() - started > DEADLINE_S:   # a worker that died leaves "Running"
            sys.exit(f"the queue did not drain in {DEADLINE_S} s: {states}; see `dvc queue status`")
        time.sleep(2)
        states = queue_status(repo, env)
    wall = time.perf_counter() - started
    logs = "".join(sh(["dvc", "queue", "logs", name], repo, env) for name in names)
    spent = {}   # seconds inside each stage's command, summed (run_stage's "done in" line)
    for stage, seconds in re.findall(r"lmpipe: stage (\w+) .*? done in ([\d.]+)s", logs):
        spent[f"{stage}_s"] = round(spent.get(f"{stage}_s", 0) + float(seconds), 1)
    return {"wall_s": round(wall, 1), "outcome": sorted(states.get(n, "Unknown") for n in names),
            "train_stages_run": len(re.findall(r"Running stage 'train@", logs)),
            "train_stages_restored": len(re.findall(r"Stage 'train@\w+' (?:didn't change|is cached)",
                                                    logs)), **spent}


def no_op(repo: Path, env: dict, times: int = 3) -> float:
    """Median seconds of `dvc repro` with nothing to do."""
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        sh(["dvc", "repro"], repo, env)
        spent.append(time.perf_counter() - started)
    return round(statistics.median(spent), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", action="append", required=True, help="a git revision (repeatable)")
    parser.add_argument("--values", type=int, nargs="+", default=[12, 20, 24, 32],
                        help="models.gru.hidden_dim of each experiment")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param over the tiny ones, e.g. train.max_epochs=3 (repeatable)")
    args = parser.parse_args()
    for ref in args.ref:
        scratch = Path(tempfile.mkdtemp(prefix="lmpipe-sweep-"))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "LMPIPE_CHECKPOINTS": str(scratch / "checkpoints")}
        env.pop("MLFLOW_TRACKING_URI", None)
        repo = scratch / "repo"
        try:
            build(ref, repo, env, args.set)
            print(json.dumps({"ref": ref, "set": args.set, "no_op_repro_s": no_op(repo, env)}),
                  flush=True)
            for repeat in range(args.repeats):
                names = [f"h{value}-{repeat}" for value in args.values]
                result = sweep(repo, env, names, args.values, args.jobs)
                print(json.dumps({"ref": ref, "repeat": repeat, "experiments": len(names),
                                  "jobs": args.jobs, **result}), flush=True)
                sh(["dvc", "exp", "remove", *names], repo, env)
                shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)   # next: no hits
        finally:
            subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env, capture_output=True)
            time.sleep(3)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
