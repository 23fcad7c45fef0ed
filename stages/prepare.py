"""Stage prepare: corpus source (params corpus.*) -> OUT/{train,valid,test}.npy, vocab.json,
units.npz, stats.json (pipeline/text/chunked.py). Usage: python -m stages.prepare data/prepared"""

import sys

from pipeline import config, files
from pipeline.neural.devices import check_machine
from pipeline.text import chunked
from stages import run_stage


def main(out_dir: str) -> None:
    params = config.load()
    check_machine(params.train)   # refuse impossible training before hours of preparing
    chunked.prepare(params, out_dir, files.parse_size(params.corpus.memory),
                    progress=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
