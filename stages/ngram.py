"""Stage ngram: data/prepared -> OUT/counts.parquet (orders 1..max(N, 3, memory_orders)), model.npz
and model.arpa (Kneser-Ney of order N), memory.json, within ngram.memory (pipeline/ngram/outputs.py).
Usage: python -m stages.ngram data/prepared models/ngram"""

import sys
from pathlib import Path

from pipeline import config, files, out_of_core
from pipeline.ngram import builder, external, kneser_ney, outputs
from pipeline.text.vocab import load_vocab
from stages import run_stage


def main(data_dir: str, out_dir: str) -> None:
    p, data = config.load().ngram, Path(data_dir)
    memory = builder.working(files.parse_size(p.memory))   # ngram.memory less this process
    tokens = load_vocab(data).tokens
    files.load_array(data / "train.npy", mmap_mode="r")   # missing or damaged: one line
    source = external.TokenFile(data / "train.npy")
    counted = builder.orders(source, len(tokens), p.order, p.memory_orders)
    try:
        outputs.write(source, tokens, Path(out_dir), p.order, counted, memory,
                      p.temp_dir or None, kneser_ney.LMPLZ_FALLBACK if p.discount_fallback else None,
                      lambda message: print(f"ngram: {message}", flush=True))
    except out_of_core.SpillError as error:
        raise config.ParamsError(f"ngram.temp_dir: {error}") from None


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
