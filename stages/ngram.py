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
from pipeline.ngram import arpa, counting, external, kneser_ney
from pipeline.text.vocab import check_ids, load_vocab, sentence_bounds


def progress(message: str) -> None:
    print(f"ngram: {message}", flush=True)


def main(data_dir: str, out_dir: str) -> None:
    params = config.load()
    data, out = Path(data_dir), Path(out_dir)
    tokens = load_vocab(data).tokens
    p = params.ngram
    files.load_array(data / "train.npy", data, mmap_mode="r")   # missing or damaged: one line
    source = external.TokenFile(data / "train.npy")
    memory = config.parse_size(p.memory)
    # memory_orders is a measurement: capped at the longest sentence rather than refused
    counted = max(p.order, 3, p.memory_orders)
    if source.length * external.in_memory_bytes(counted) <= memory:
        stream = files.load_array(data / "train.npy", data)
        check_ids(stream, len(tokens), data / "train.npy", data)
        in_memory(stream, tokens, p, out)
        return
    try:
        with files.Spill(p.temp_dir or None) as spill:
            progress(f"counting out of core in {memory >> 20:,} MiB (ngram.memory), spilling to "
                     f"{spill.path}")
            out_of_core(source, tokens, p, memory, spill, out)
    except files.SpillError as error:
        raise config.ParamsError(f"ngram.temp_dir: {error}") from None


def _longest(p, longest: int) -> None:
    if p.order > longest:
        raise ValueError(f"ngram.order={p.order} but the longest train sentence has {longest} tokens "
                         f"with <s> and </s>, so no {p.order}-gram occurs; lower ngram.order or use "
                         "a corpus with longer sentences")


def in_memory(stream: np.ndarray, tokens: tuple[str, ...], p, out: Path) -> None:
    started = time.perf_counter()
    starts, ends = sentence_bounds(stream)
    longest = int(np.max(ends - starts + 1, initial=0))   # tokens, with <s> and </s>
    _longest(p, longest)
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


def out_of_core(source, tokens: tuple[str, ...], p, memory: int, spill, out: Path) -> None:
    """The outputs of `in_memory`, the tables counted and estimated within `memory` bytes
    (pipeline/ngram/external.py), every file written a slice at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    started = time.perf_counter()
    longest = 0
    for lo, hi in external.sentence_blocks(source, 1 << 22):
        block = source.read(lo, hi)
        check_ids(block, len(tokens), Path(source.path), Path(source.path).parent)
        starts, ends = sentence_bounds(block)
        longest = max(longest, int(np.max(ends - starts + 1, initial=0)))
    _longest(p, longest)
    counts = external.count(source, len(tokens), max(p.order, 3, min(p.memory_orders, longest)),
                            memory, spill, progress)
    kn_counts = external.truncated(counts, p.order)
    fallback = kneser_ney.LMPLZ_FALLBACK if p.discount_fallback else None
    model = external.estimate(kn_counts, memory, spill, fallback=fallback, progress=progress)
    step = max(memory // 256, 4096)
    row = p.order * (max(len(t.encode()) for t in tokens) + 1) + 26   # bytes of an ARPA line
    lines = int(np.clip(memory // (16 * row), 4096, 250_000))
    with files.staged_dir(out) as scratch:
        arrays = {"vocab_size": np.array(model.vocab_size), "discounts": np.array(model.discounts)}
        for n in range(1, model.order + 1):
            arrays.update({f"keys{n}": model.keys[n - 1], f"log10_prob{n}": model.log10_prob[n - 1],
                           f"log10_backoff{n}": model.log10_backoff[n - 1]})
        external.save_npz(scratch / "model.npz", arrays, step)
        rows = counting.memory_by_order(counts, kneser_ney.BYTES_PER_NGRAM)
        (scratch / "memory.json").write_text(json.dumps(rows, indent=2))
        with open(scratch / "model.arpa", "wb") as handle:
            arpa.write(model, kn_counts, tokens, handle, chunk=lines)
        progress("wrote model.arpa")
        words = pa.array(tokens, pa.string())
        schema = pa.schema([("order", pa.int64()), ("ngram", pa.string()), ("key", pa.int64()),
                            ("count", pa.int64()), ("adjusted", pa.int64()), ("suffix", pa.int64())])
        with pq.ParquetWriter(scratch / "counts.parquet", schema) as writer:
            for n in range(1, counts.order + 1):
                for lo in range(0, counts.keys[n - 1].length, step):
                    hi = min(lo + step, counts.keys[n - 1].length)
                    grams = counts.words(n, lo, hi)   # the words joined in C, by pyarrow
                    text = pc.binary_join_element_wise(*(words.take(grams[:, j]) for j in range(n)),
                                                       " ")
                    suffix = (counts.suffix[n - 1].read(lo, hi) if n > 1
                              else np.full(hi - lo, -1, dtype=np.int64))
                    writer.write_table(pa.table({
                        "order": np.full(hi - lo, n, dtype=np.int64), "ngram": text,
                        "key": counts.keys[n - 1].read(lo, hi),
                        "count": counts.counts[n - 1].read(lo, hi),
                        "adjusted": counts.adjusted[n - 1].read(lo, hi), "suffix": suffix},
                        schema=schema))
        progress(f"wrote counts.parquet; {time.perf_counter() - started:.1f}s in all")


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
