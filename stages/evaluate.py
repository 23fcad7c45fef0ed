"""Stage evaluate: data/prepared + models/ -> metrics/, an MLflow run with a nested run per model
(pipeline/tracking/evaluation_runs.py). Usage: python -m stages.evaluate data/prepared models metrics"""

import sys
from pathlib import Path

from pipeline import config
from pipeline.tracking import evaluation_runs
from stages import run_stage


def main(data_dir: str, models_dir: str, out_dir: str) -> None:
    evaluation_runs.evaluate(config.load(), Path(data_dir), Path(models_dir), Path(out_dir))


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
