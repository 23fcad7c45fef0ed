"""Out-of-core n-gram counting and Kneser-Ney estimation within `memory` bytes, as KenLM's lmplz
with -S and -T (lm/builder/corpus_count.cc, util/stream/sort.hh). In: a token stream on disk
(TokenFile). Out: `DiskCounts`, counting.NgramCounts' tables bitwise identical, each column a file
in the spill folder read back in slices (explicit reads, not memory maps, so read pages leave the
RSS); estimation on them: disk_estimate.py. Errors: SpillError naming the spill folder."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.files import Column, Spill, spilling
from pipeline.ngram import counting
from pipeline.text.vocab import BOS_ID

BYTES_PER_POSITION = 128  # counting.count's peak per token of a block (stream, ids, keys, sort, allocator slack)
BYTES_PER_ENTRY = 112     # merging: key, count, suffix, inverse, sort scratch per run entry, allocator slack
WORKING_SHARE = 0.75      # of the budget for the tables being sorted and summed; the rest is the
                          # interpreter, numpy and pyarrow (~100 MiB) and the allocator's slack


def in_memory_bytes(order: int) -> int:
    """Peak bytes per token (with `<s>` and `</s>`) of counting.count and kneser_ney.estimate
    holding everything in memory, an upper bound measured on the KJV and 10 distinct copies of
    it (166 at order 5, benchmarks/ngram.py)."""
    return 40 * max(order, 2)


class TokenFile:
    """A token stream on disk, int32 ids: a raw file, or a .npy file read past its header."""

    def __init__(self, path: str | os.PathLike, length: int | None = None, offset: int = 0,
                 spill: Spill | None = None):
        self.path, self.offset, self.spill = Path(path), offset, spill
        if self.path.suffix == ".npy":   # numpy's own header reader: the map is dropped unread
            mapped = np.load(self.path, mmap_mode="r")
            shape, dtype, self.offset = mapped.shape, mapped.dtype, mapped.offset
            del mapped
            if len(shape) != 1 or dtype != np.int32:
                raise ValueError(f"{self.path}: holds a {dtype} array of shape {shape}, not a "
                                 "1-D int32 token stream")
            length = shape[0]
        self.length = int(length if length is not None else
                          (self.path.stat().st_size - offset) // 4)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens start..stop. A file in a spill folder (`spill`) that cannot be read raises
        SpillError."""
        stop = min(stop, self.length)
        with spilling(self.spill.path) if self.spill else nullcontext(), open(self.path, "rb") as handle:
            return np.fromfile(handle, dtype=np.int32, count=max(stop - start, 0),
                               offset=self.offset + start * 4)


def sentence_blocks(tokens: TokenFile, size: int) -> list[tuple[int, int]]:
    """Ranges (start, stop) of about `size` tokens that cut `tokens` only before a `<s>`, so no
    n-gram crosses a block; a sentence longer than `size` makes its block longer."""
    blocks, start = [], 0
    while start < tokens.length:
        stop = start + size
        while stop < tokens.length:
            window = tokens.read(max(stop - size, start + 1), stop)
            heads = np.flatnonzero(window == BOS_ID)
            if len(heads):
                stop = max(stop - size, start + 1) + int(heads[-1])
                break
            stop += size
        stop = min(stop, tokens.length)
        blocks.append((start, stop))
        start = stop
    return blocks


@dataclass
class DiskCounts:
    """counting.NgramCounts with each order's columns on disk: keys, counts, adjusted and suffix
    (int64, `order` entries each; order 1 keys are the word ids). `adjusted[order-1]` is the
    counts column (Kneser-Ney's highest order uses raw counts)."""
    vocab_size: int
    keys: list[Column]
    counts: list[Column]
    adjusted: list[Column]
    suffix: list[Column]

    @property
    def order(self) -> int:
        return len(self.keys)

    def num_ngrams(self) -> list[int]:
        return [k.length for k in self.keys]

    def to_memory(self) -> counting.NgramCounts:
        """The whole tables in memory (tests; a result that fits)."""
        return counting.NgramCounts(
            self.vocab_size, [k.read() for k in self.keys], [c.read() for c in self.counts],
            [a.read() for a in self.adjusted],
            [np.empty(0, np.int64)] + [s.read() for s in self.suffix[1:]])

    def words(self, n: int, start: int, stop: int) -> np.ndarray:
        """(rows, n) word ids of the order-n n-grams start..stop (counting.words_of)."""
        return counting.words_of(self.keys, self.vocab_size, n, start, stop)

    def truncated(self, order: int) -> DiskCounts:
        """The counts of orders 1..order (counting.NgramCounts.truncated on disk): the highest
        order's adjusted counts are its raw counts."""
        return DiskCounts(self.vocab_size, self.keys[:order], self.counts[:order],
                          [*self.adjusted[:order - 1], self.counts[order - 1]], self.suffix[:order])


def count(tokens: TokenFile, vocab_size: int, order: int, memory: int, spill: Spill,
          progress=None) -> DiskCounts:
    """Count n-grams of orders 1..order of `tokens` (and their adjusted counts) in blocks of
    whole sentences, using about `memory` bytes. Same tables as `counting.count` (its keys: in
    context order already). Order n: per block, keys from the order-(n-1) id of each position (a
    position file) and np.unique, a sorted run; runs merged by key ranges; each run's local ids
    mapped to global ranks give the order-n position file. Raises ValueError as counting.count
    does, SpillError when the spill folder fails."""
    if order < 1:
        raise ValueError(f"order={order} must be >= 1")
    memory = int(memory * WORKING_SHARE)
    blocks = sentence_blocks(tokens, max(memory // BYTES_PER_POSITION, 1024))
    unigram = np.zeros(vocab_size, dtype=np.int64)
    longest = 0
    for start, stop in blocks:
        stream = tokens.read(start, stop)
        if len(stream) and (stream.min() < 0 or stream.max() >= vocab_size):
            raise ValueError(f"token ids must lie in [0, {vocab_size}); got "
                             f"{stream.min()}..{stream.max()}")
        unigram += np.bincount(stream, minlength=vocab_size)
        remaining, _ = counting.positions_left(stream.astype(np.int64))
        longest = max(longest, int(remaining.max(initial=0)))
    if longest < order:
        raise ValueError(f"order={order} but no sentence has {order} tokens including <s> and "
                         "</s>; lower ngram.order or use a larger corpus")
    identity = spill.file("keys1", np.int64)
    identity.append(np.arange(vocab_size, dtype=np.int64))
    keys, counts, suffix = [identity], [spill.file("counts1", np.int64)], [None]
    counts[0].append(unigram)
    positions = None                          # order n-1 id of every position (None: the tokens)
    for n in range(2, order + 1):
        runs = [_count_block(tokens, positions, start, stop, n, vocab_size, spill, i)
                for i, (start, stop) in enumerate(blocks)]
        table = _merge(runs, n, memory, spill)
        keys.append(table[0])
        counts.append(table[1])
        suffix.append(table[2])
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
    adjusted = [_adjusted(keys, counts, suffix, m, vocab_size, memory, spill)
                for m in range(1, order)]
    return DiskCounts(vocab_size, keys, counts, [*adjusted, counts[-1]], suffix)


def _count_block(tokens: TokenFile, positions: Column | None, start: int, stop: int, n: int,
                 vocab_size: int, spill: Spill, index: int) -> dict[str, Column]:
    """One block's run of order-n n-grams: sorted unique keys, their counts and suffix ids, the
    block positions where an n-gram starts and each one's index in the run."""
    stream = tokens.read(start, stop).astype(np.int64)
    previous = stream if positions is None else positions.read(start, stop)
    remaining, _ = counting.positions_left(stream)
    at = np.flatnonzero(remaining >= n)
    key = previous[at] * vocab_size + stream[at + n - 1]
    unique, first, inverse, counted = counting._unique(key)
    del key
    run = {name: spill.file(f"run{n}.{index}.{name}", dtype) for name, dtype in
           (("keys", np.int64), ("counts", np.int64), ("suffix", np.int64),
            ("start", np.int64), ("inverse", np.int32), ("map", np.int64))}
    run["keys"].append(unique)
    run["counts"].append(counted)
    run["suffix"].append(previous[at[first] + 1])
    run["start"].append(at)
    run["inverse"].append(inverse)
    return run


def _merge(runs: list[dict[str, Column]], n: int, memory: int, spill: Spill):
    """Merge sorted runs into the global order-n keys, counts and suffix columns, by key ranges
    of about memory / BYTES_PER_ENTRY entries (splitters: quantiles of keys sampled from every
    run). Appends each run entry's global id to the run's "map" column."""
    total = sum(run["keys"].length for run in runs)
    per_range = max(memory // BYTES_PER_ENTRY, 1024)
    ranges = max(-(-total // per_range), 1)
    splitters = np.empty(0, dtype=np.int64)
    if ranges > 1:
        every = max(per_range // (4 * len(runs)), 1)   # a range overshoots by < runs x every
        samples = np.concatenate([_sample(run["keys"], every) for run in runs])
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


def _sample(column: Column, every: int) -> np.ndarray:
    """Every `every`-th entry of a column, read a slice at a time."""
    step = max(every, 1) * 65536
    return np.concatenate([np.empty(0, dtype=column.dtype),   # an empty run (a block of short lines)
                           *(column.read(lo, lo + step)[::every]
                             for lo in range(0, column.length, step))])


def _bos_rows(keys: list[Column], m: int, vocab_size: int) -> tuple[int, int]:
    """Rows of the order-m table whose n-grams start with `<s>`: a contiguous range, since rows
    are sorted by their words' ids."""
    low, high = BOS_ID, BOS_ID + 1
    for k in range(2, m + 1):
        low, high = (int(x) for x in keys[k - 1].search(np.array([low, high]) * vocab_size))
    return low, high


def _adjusted(keys, counts, suffix, m: int, vocab_size: int, memory: int, spill: Spill) -> Column:
    """Adjusted counts of order m < order: the number of distinct words seen before each n-gram
    (Chen & Goodman; lm/builder/adjust_counts.cc), a scatter-count of the order-(m+1) suffix
    ids, block by block of the order-m table; n-grams starting with `<s>` keep their raw count."""
    size = keys[m - 1].length
    block = max(memory // 24, 1024)    # int64 extensions, and the suffix slices below
    out = spill.file(f"adjusted{m}", np.int64)
    low, high = _bos_rows(keys, m, vocab_size)
    source = suffix[m]
    step = max(memory // 48, 1024)     # ids, mask, selected, shifted, counted: ~40 bytes each
    for lo in range(0, size, block):
        hi = min(lo + block, size)
        extensions = np.zeros(hi - lo, dtype=np.int64)
        for s in range(0, source.length, step):
            ids = source.read(s, s + step)
            ids = ids[(ids >= lo) & (ids < hi)] - lo
            extensions += np.bincount(ids, minlength=hi - lo)
        raw_lo, raw_hi = max(low, lo), min(high, hi)
        if raw_lo < raw_hi:
            extensions[raw_lo - lo: raw_hi - lo] = counts[m - 1].read(raw_lo, raw_hi)
        out.append(extensions)
    return out

