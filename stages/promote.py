"""Stage promote: metrics/metrics.json + registry.json -> the champion aliases of lmpipe-<kind>,
moved only for a better model of the same test set; metrics/promotion.json and promotion.md say
why (pipeline/tracking/decisions.py). Usage: python -m stages.promote metrics"""

import sys
from pathlib import Path

from pipeline import config
from pipeline.tracking import decisions
from stages import run_stage


def main(metrics_dir: str) -> None:
    decisions.run(Path(metrics_dir), config.load())


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
