"""Out-of-core n-gram counting within `memory` bytes, as lmplz -S -T (lm/builder/corpus_count.cc,
util/stream/sort.hh). In: a checked token stream on disk. Out: counting.NgramCounts' tables bitwise,
each a out_of_core.Column in the spill folder, read in slices. Errors: SpillError naming the folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.ngram import counting
from pipeline.out_of_core import Column, Spill
from pipeline.text.vocab import BOS_ID

BYTES_PER_POSITION = 128  # counting.tables' peak per token of a block (stream, ids, keys, sort, allocator slack)
BYTES_PER_TABLE = 24      # and per token for each order's tables it keeps (key, count, suffix)
BYTES_PER_ENTRY = 112     # merging: key, count, suffix, inverse, sort scratch per run entry, allocator slack
IN_MEMORY_BYTES = 40      # in memory instead: peak bytes per token and order >= 2 (benchmarks/ngram.py)


class TokenFile:
    """A .npy token stream of 1-D int32 ids, read in slices past its header (numpy's reader)."""
    spill = None   # a out_of_core.Column of tokens in a spill folder serves as well

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mapped = np.load(self.path, mmap_mode="r")   # the map is dropped unread
        if mapped.ndim != 1 or mapped.dtype != np.int32:
            raise ValueError(f"{self.path}: holds {mapped.dtype} {mapped.shape}, not 1-D int32 ids")
        self.offset, self.length = mapped.offset, len(mapped)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.length)
        with open(self.path, "rb") as handle:
            return np.fromfile(handle, dtype=np.int32, count=max(stop - start, 0),
                               offset=self.offset + start * 4)


def sentence_blocks(tokens: TokenFile, size: int) -> list[tuple[int, int]]:
    """Ranges (start, stop) of about `size` tokens, cut only before a `<s>`."""
    def last_head(lo: int, hi: int) -> int:
        at = max(hi - size, lo + 1)   # the rows before were searched already
        heads = np.flatnonzero(tokens[at:hi] == BOS_ID)
        return at + int(heads[-1]) if len(heads) else lo
    return list(counting.cut_ranges(tokens.length, size, last_head))


def count(tokens: TokenFile | Column, vocab_size: int, order: int, memory: int, spill: Spill,
          progress=None) -> counting.NgramCounts:
    """counting.count's tables of `tokens` within about `memory` bytes: a sorted run per block of
    whole sentences and order; an order's runs renumbered by the merge below, merged by key ranges."""
    memory = int(memory * counting.WORKING_SHARE)
    blocks = sentence_blocks(tokens, max(memory // (BYTES_PER_POSITION + BYTES_PER_TABLE * order), 1024))
    unigram, runs = np.zeros(vocab_size, dtype=np.int64), []
    for i, (start, stop) in enumerate(blocks):
        keys, counts, suffix = counting.tables(tokens[start:stop], vocab_size, order)
        unigram += counts[0]
        runs.append({n: {"keys": _column(spill, f"run{n}.{i}.keys", keys[n - 1]),
                         "counts": _column(spill, f"run{n}.{i}.counts", counts[n - 1]),
                         "suffix": _column(spill, f"run{n}.{i}.suffix", suffix[n - 1]),
                         "map": spill.file(f"run{n}.{i}.map", np.int64)} for n in range(2, order + 1)})
    keys = [_column(spill, "keys1", np.arange(vocab_size, dtype=np.int64))]
    counts, suffix = [_column(spill, "counts1", unigram)], [None]
    for n in range(2, order + 1):
        if n > 2:   # each run's ids of order n-1 in its block: ids of order n-1 merged
            for run in runs:
                _renumber(run[n], run.pop(n - 1)["map"], vocab_size, spill)
        for table, column in zip((keys, counts, suffix), _merge([run[n] for run in runs], n, memory, spill),
                                 strict=True):
            table.append(column)
        for run in runs:
            for name in ("keys", "counts", "suffix"):
                run[n][name].remove()
        if progress:
            progress(f"counted {keys[-1].length:,} distinct {n}-grams ({len(runs)} runs merged)")
    for run in runs:
        for columns in run.values():
            columns["map"].remove()
    adjusted = [counting.adjusted_counts(keys, counts, suffix, m, vocab_size, memory, spill)
                for m in range(1, order)]
    return counting.NgramCounts(vocab_size, keys, counts, [*adjusted, counts[-1]], suffix)


def _column(spill: Spill, name: str, values: np.ndarray) -> Column:
    column = spill.file(name, values.dtype)
    column.append(values)
    return column


def _renumber(run: dict[str, Column], below: Column, vocab_size: int, spill: Spill) -> None:
    """A run's key prefixes and suffix ids through `below`, the order below's block -> merged id."""
    mapping = below[:]
    below.remove()
    keys, suffix = run["keys"][:], run["suffix"][:]
    for name, values in (("keys", mapping[keys // vocab_size] * vocab_size + keys % vocab_size),
                         ("suffix", mapping[suffix])):
        run[name].remove()
        run[name] = _column(spill, run[name].path.name, values)


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
        samples = np.concatenate([np.empty(0, np.int64), *(run["keys"][lo:lo + step][::every]
                                  for run in runs for lo in range(0, run["keys"].length, step))])
        samples.sort()
        splitters = np.unique(samples[(np.arange(1, ranges) * len(samples)) // ranges])
    bounds = [np.concatenate([[0], run["keys"].search(splitters), [run["keys"].length]])
              for run in runs]
    keys, counts, suffix = (spill.file(f"{name}{n}", np.int64) for name in ("keys", "counts", "suffix"))
    base = 0
    for r in range(len(splitters) + 1):
        parts = [(run, int(b[r]), int(b[r + 1])) for run, b in zip(runs, bounds, strict=True)]
        key = np.concatenate([run["keys"][lo:hi] for run, lo, hi in parts])
        if not len(key):
            continue
        unique, first, inverse, _ = counting._unique(key, "stable")   # the runs' slices, each sorted
        del key
        summed = np.bincount(inverse, np.concatenate([run["counts"][lo:hi]
                                                      for run, lo, hi in parts]))
        keys.append(unique)
        counts.append(summed.astype(np.int64))
        suffix.append(np.concatenate([run["suffix"][lo:hi] for run, lo, hi in parts])[first])
        offset = 0
        for run, lo, hi in parts:
            run["map"].append(base + inverse[offset: offset + hi - lo].astype(np.int64))
            offset += hi - lo
        base += len(unique)
    return keys, counts, suffix
