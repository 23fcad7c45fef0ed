"""Wall time of each pipeline stage: runs `dvc repro --force --single-item STAGE` for every stage in
order, `--repeat` times, and prints one JSON line per stage with every run and the median.
Run from the repository root after `make repro` (it re-executes the stages in place):

    .venv/bin/python benchmarks/pipeline_timing.py --repeat 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml


def stages() -> list[str]:
    models = yaml.safe_load(Path("params.yaml").read_text())["models"]
    return ["prepare", "ngram", *(f"train@{kind}" for kind in models), "evaluate"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    total = [0.0] * args.repeat
    for stage in stages():
        times = []
        for run in range(args.repeat):
            started = time.perf_counter()
            subprocess.run(["dvc", "repro", "--force", "--single-item", stage], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
            total[run] += times[-1]
        print(json.dumps({"stage": stage, "seconds": [round(t, 1) for t in times],
                          "median_s": round(statistics.median(times), 1)}), flush=True)
    print(json.dumps({"stage": "all", "seconds": [round(t, 1) for t in total],
                      "median_s": round(statistics.median(total), 1)}), flush=True)


if __name__ == "__main__":
    main()
