"""Stage ngram: data/prepared -> OUT/counts.parquet (orders 1..max(N, 3, memory_orders)),
model.npz and model.arpa (interpolated modified Kneser-Ney of order N), memory.json (n-grams
and bytes of a KN model of each order), within ngram.memory (pipeline/ngram/outputs.py).
Usage: python -m stages.ngram data/prepared models/ngram"""

import sys
from pathlib import Path

from pipeline import config, files
from pipeline.ngram import builder, external, kneser_ney, outputs
from pipeline.text.vocab import load_vocab
from stages import run_stage


def main(data_dir: str, out_dir: str) -> None:
    p, data = config.load().ngram, Path(data_dir)
    tokens = load_vocab(data).tokens
    files.load_array(data / "train.npy", data, mmap_mode="r")   # missing or damaged: one line
    source = external.TokenFile(data / "train.npy")
    memory = files.parse_size(p.memory)
    longest = builder.longest(source, len(tokens))   # tokens, with <s> and </s>
    if p.order > longest:
        raise ValueError(f"ngram.order={p.order} but the longest train sentence has {longest} tokens "
                         f"with <s> and </s>, so no {p.order}-gram occurs; lower ngram.order or use "
                         "a corpus with longer sentences")
    # memory_orders is a measurement: capped at the longest sentence rather than refused
    counted = max(p.order, 3, min(p.memory_orders, longest))
    try:
        outputs.write(source, tokens, Path(out_dir), p.order, counted, memory, p.temp_dir or None,
                      kneser_ney.LMPLZ_FALLBACK if p.discount_fallback else None,
                      lambda message: print(f"ngram: {message}", flush=True))
    except files.SpillError as error:
        raise config.ParamsError(f"ngram.temp_dir: {error}") from None


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
