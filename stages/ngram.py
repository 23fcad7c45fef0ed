"""Stage ngram: data/prepared -> OUT/counts.parquet (orders 1..max(N, 3, memory_orders)),
model.npz and model.arpa (interpolated modified Kneser-Ney of order N), memory.json (n-grams
and bytes of a KN model of each order, for the "n-grams consume a lot of memory" claim).
Usage: python -m stages.ngram data/prepared models/ngram"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import config, files
from pipeline.ngram import arpa, counting, kneser_ney
from pipeline.text.vocab import check_ids, load_vocab, sentence_bounds


def progress(message: str) -> None:
    print(f"ngram: {message}", flush=True)


def main(data_dir: str, out_dir: str) -> None:
    params = config.load()
    data, out = Path(data_dir), Path(out_dir)
    tokens = load_vocab(data).tokens
    stream = files.load_array(data / "train.npy", data)
    check_ids(stream, len(tokens), data / "train.npy", data)
    started = time.perf_counter()
    p = params.ngram
    starts, ends = sentence_bounds(stream)
    longest = int(np.max(ends - starts + 1, initial=0))   # tokens, with <s> and </s>
    if p.order > longest:
        raise ValueError(f"ngram.order={p.order} but the longest train sentence has {longest} tokens "
                         f"with <s> and </s>, so no {p.order}-gram occurs; lower ngram.order or use "
                         "a corpus with longer sentences")
    # memory_orders is a measurement: capped at the longest sentence rather than refused
    counts = counting.count(stream, len(tokens), max(p.order, 3, min(p.memory_orders, longest)),
                          progress)
    kn_counts = counts.truncated(p.order)
    fallback = kneser_ney.LMPLZ_FALLBACK if p.discount_fallback else None
    model = kneser_ney.estimate(kn_counts, fallback=fallback, progress=progress)
    with files.staged_dir(out) as scratch:   # models/ngram appears complete or not at all
        np.savez(scratch / "model.npz", **model.arrays())
        memory = counting.memory_by_order(counts, kneser_ney.BYTES_PER_NGRAM)
        (scratch / "memory.json").write_text(json.dumps(memory, indent=2))
        with open(scratch / "model.arpa", "wb") as handle:
            arpa.write(model, kn_counts, tokens, handle)
        progress("wrote model.arpa")
        words = np.array(tokens, dtype=object)
        tables = []
        for n in range(1, counts.order + 1):
            text = pd.Series(words[counts.words(n)].tolist()).str.join(" ")
            tables.append(pd.DataFrame({"order": n, "ngram": text, "key": counts.keys[n - 1],
                                        "count": counts.counts[n - 1],
                                        "adjusted": counts.adjusted[n - 1],
                                        "suffix": counts.suffix[n - 1] if n > 1 else -1}))
        pd.concat(tables).to_parquet(scratch / "counts.parquet", index=False)
        progress(f"wrote counts.parquet; {time.perf_counter() - started:.1f}s in all")


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
