"""Stage train@KIND: data/prepared -> OUT/model.pt (config + state_dict of the best validation
epoch), history.json (val perplexity per epoch), run.json (the MLflow run id). An interrupted
training resumes from its checkpoint folder outside the repository (docs/models.md).
Usage: python -m stages.train KIND data/prepared models/KIND"""

import sys
from pathlib import Path

from pipeline import config
from pipeline.tracking import training
from stages import run_stage


def main(kind: str, data_dir: str, out_dir: str) -> None:
    training.train(config.load(), kind, Path(data_dir), Path(out_dir))


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
