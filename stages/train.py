"""Stage train@KIND: data/prepared -> OUT (model.pt, history.json, run.json: neural/fit.py); an
interrupted training resumes (docs/models.md). Usage: python -m stages.train KIND data/prepared OUT"""

import sys
from pathlib import Path

from pipeline import config
from pipeline.tracking import training
from stages import run_stage


def main(kind: str, data_dir: str, out_dir: str) -> None:
    training.train(config.load(), kind, Path(data_dir), Path(out_dir))


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
