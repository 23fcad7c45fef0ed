"""Out-of-core n-gram counting within `memory` bytes, as lmplz -S -T (lm/builder/corpus_count.cc,
util/stream/sort.hh). In: a checked token stream on disk. Out: counting.NgramCounts' tables bitwise,
each a files.Column in the spill folder, read in slices. Errors: SpillError naming the folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.files import Column, Spill
from pipeline.ngram import counting
from pipeline.text.vocab import BOS_ID

BYTES_PER_POSITION = 128  # counting.count's peak per token of a block (stream, ids, keys, sort, allocator slack)
BYTES_PER_ENTRY = 112     # merging: key, count, suffix, inverse, sort scratch per run entry, allocator slack
IN_MEMORY_BYTES = 40      # in memory instead: peak bytes per token and order >= 2 (benchmarks/ngram.py)


class TokenFile:
    """A .npy token stream of 1-D int32 ids, read in slices past its header (numpy's reader)."""
    spill = None   # a files.Column of tokens in a spill folder serves as well

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mapped = np.load(self.path, mmap_mode="r")   # the map is dropped unread
        if mapped.ndim != 1 or mapped.dtype != np.int32:
            raise ValueError(f"{self.path}: holds {mapped.dtype} {mapped.shape}, not 1-D int32 ids")
        self.offset, self.length = mapped.offset, len(mapped)

    def read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as handle:
            return np.fromfile(handle, dtype=np.int32, count=max(min(stop, self.length) - start, 0),
                               offset=self.offset + start * 4)


def sentence_blocks(tokens: TokenFile, size: int) -> list[tuple[int, int]]:
    """Ranges (start, stop) of about `size` tokens, cut only before a `<s>`."""
    def last_head(lo: int, hi: int) -> int:
        at = max(hi - size, lo + 1)   # the rows before were searched already
        heads = np.flatnonzero(tokens.read(at, hi) == BOS_ID)
        return at + int(heads[-1]) if len(heads) else lo
    return list(counting.cut_ranges(tokens.length, size, last_head))


def count(tokens: TokenFile, vocab_size: int, order: int, memory: int, spill: Spill,
          progress=None) -> counting.NgramCounts:
    """counting.count's tables of `tokens` within about `memory` bytes. Order n: per block of
    whole sentences, keys from each position's order-(n-1) id and np.unique, a sorted run; runs
    merged by key ranges; each run's ids mapped to global ranks give the order-n positions."""
    memory = int(memory * counting.WORKING_SHARE)
    blocks = sentence_blocks(tokens, max(memory // BYTES_PER_POSITION, 1024))
    unigram = np.zeros(vocab_size, dtype=np.int64)
    for start, stop in blocks:
        unigram += np.bincount(tokens.read(start, stop), minlength=vocab_size)
    identity = spill.file("keys1", np.int64)
    identity.append(np.arange(vocab_size, dtype=np.int64))
    keys, counts, suffix = [identity], [spill.file("counts1", np.int64)], [None]
    counts[0].append(unigram)
    positions = None                          # order n-1 id of every position (None: the tokens)
    for n in range(2, order + 1):
        runs = [_count_block(tokens, positions, start, stop, n, vocab_size, spill, i)
                for i, (start, stop) in enumerate(blocks)]
        for table, column in zip((keys, counts, suffix), _merge(runs, n, memory, spill), strict=True):
            table.append(column)
        following = spill.file(f"positions{n}", np.int64)
        for run, (start, stop) in zip(runs, blocks, strict=True):
            local = run["inverse"].read()
            ids = np.full(stop - start, -1, dtype=np.int64)
            ids[run["start"].read()] = run["map"].read()[local]
            following.append(ids)
            for column in run.values():
                column.remove()
        if positions is not None:
            positions.remove()
        positions = following
        if progress:
            progress(f"counted {keys[-1].length:,} distinct {n}-grams ({len(runs)} runs merged)")
    if positions is not None:
        positions.remove()
    adjusted = [counting.adjusted_counts(keys, counts, suffix, m, vocab_size, memory, spill)
                for m in range(1, order)]
    return counting.NgramCounts(vocab_size, keys, counts, [*adjusted, counts[-1]], suffix)


def _count_block(tokens: TokenFile, positions: Column | None, start: int, stop: int, n: int,
                 vocab_size: int, spill: Spill, index: int) -> dict[str, Column]:
    """One block's run of order-n n-grams: keys, counts, suffix ids, start positions, run index."""
    stream = tokens.read(start, stop).astype(np.int64)
    previous = stream if positions is None else positions.read(start, stop)
    columns = counting.order_ngrams(stream, previous, counting.positions_left(stream)[0], n, vocab_size)
    run = {name: spill.file(f"run{n}.{index}.{name}", dtype) for name, dtype in
           (("keys", np.int64), ("counts", np.int64), ("suffix", np.int64),
            ("start", np.int64), ("inverse", np.int32), ("map", np.int64))}
    for name, values in zip(("keys", "counts", "suffix", "start", "inverse"), columns, strict=True):
        run[name].append(values)
    return run


def _merge(runs: list[dict[str, Column]], n: int, memory: int, spill: Spill):
    """The order-n keys, counts and suffix columns of sorted runs merged by key ranges (sampled
    quantiles) of about memory / BYTES_PER_ENTRY entries; each run entry's id to its "map"."""
    total = sum(run["keys"].length for run in runs)
    per_range = max(memory // BYTES_PER_ENTRY, 1024)
    ranges = max(-(-total // per_range), 1)
    splitters = np.empty(0, dtype=np.int64)
    if ranges > 1:
        every = max(per_range // (4 * len(runs)), 1)   # a range overshoots by < runs x every
        step = every * 65536                            # every `every`-th key, read in slices
        samples = np.concatenate([np.empty(0, np.int64), *(run["keys"].read(lo, lo + step)[::every]
                                  for run in runs for lo in range(0, run["keys"].length, step))])
        samples.sort()
        splitters = np.unique(samples[(np.arange(1, ranges) * len(samples)) // ranges])
    bounds = [np.concatenate([[0], run["keys"].search(splitters), [run["keys"].length]])
              for run in runs]
    keys, counts, suffix = (spill.file(f"{name}{n}", np.int64) for name in ("keys", "counts", "suffix"))
    base = 0
    for r in range(len(splitters) + 1):
        parts = [(run, int(b[r]), int(b[r + 1])) for run, b in zip(runs, bounds, strict=True)]
        key = np.concatenate([run["keys"].read(lo, hi) for run, lo, hi in parts])
        if not len(key):
            continue
        unique, first, inverse, _ = counting._unique(key)
        del key
        summed = np.bincount(inverse, np.concatenate([run["counts"].read(lo, hi)
                                                      for run, lo, hi in parts]))
        keys.append(unique)
        counts.append(summed.astype(np.int64))
        suffix.append(np.concatenate([run["suffix"].read(lo, hi) for run, lo, hi in parts])[first])
        offset = 0
        for run, lo, hi in parts:
            run["map"].append(base + inverse[offset: offset + hi - lo].astype(np.int64))
            offset += hi - lo
        base += len(unique)
    return keys, counts, suffix
