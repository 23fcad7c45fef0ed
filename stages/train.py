"""Stage train@KIND: data/prepared -> OUT/model.pt (config + state_dict of the best validation
epoch), history.json (val perplexity per epoch), run.json (the MLflow run id); CKPT/ (persist:
true) holds last.ckpt / best.ckpt, from which an interrupted training resumes.
Usage: python -m stages.train KIND data/prepared models/KIND checkpoints/KIND"""

import sys
from pathlib import Path

from pipeline import config
from pipeline.tracking import training
from stages import run_stage


def main(kind: str, data_dir: str, out_dir: str, ckpt_dir: str) -> None:
    training.train(config.load(), kind, Path(data_dir), Path(out_dir), Path(ckpt_dir))


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
