"""Out-of-core n-gram counting and Kneser-Ney estimation within `memory` bytes, as KenLM's lmplz
with -S and -T (lm/builder/corpus_count.cc, util/stream/sort.hh). In: a token stream on disk
(TokenFile). Out: `DiskCounts`, `DiskModel`: counting.NgramCounts' and kneser_ney.NGramLM's tables,
bitwise identical, each column a file in the spill folder read back in slices (explicit reads, not
memory maps, so read pages leave the RSS). Errors: SpillError naming the spill folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.files import Column, Spill, SpillError, spill_message
from pipeline.ngram import counting, kneser_ney
from pipeline.text.vocab import BOS_ID

BYTES_PER_POSITION = 128  # counting.count's peak per token of a block (stream, ids, keys, sort, allocator slack)
BYTES_PER_ENTRY = 112     # merging: key, count, suffix, inverse, sort scratch per run entry, allocator slack
BYTES_PER_ROW = 96        # estimation: key, adjusted, suffix, context, discount, p, gathers
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
        try:
            with open(self.path, "rb") as handle:
                return np.fromfile(handle, dtype=np.int32, count=max(stop - start, 0),
                                   offset=self.offset + start * 4)
        except OSError as error:
            if self.spill is None:
                raise
            raise SpillError(spill_message(self.spill.path, error)) from None


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


@dataclass
class DiskModel:
    """kneser_ney.NGramLM with each order's log10 p and log10 backoff on disk (float64)."""
    vocab_size: int
    counts: DiskCounts
    log10_prob: list[Column]
    log10_backoff: list[Column]
    discounts: list[tuple[float, float, float]]

    @property
    def order(self) -> int:
        return len(self.log10_prob)

    @property
    def keys(self) -> list[Column]:
        return self.counts.keys

    def to_memory(self) -> kneser_ney.NGramLM:
        return kneser_ney.NGramLM(self.vocab_size, [k.read() for k in self.counts.keys],
                                  [p.read() for p in self.log10_prob],
                                  [b.read() for b in self.log10_backoff], list(self.discounts))


def _count_of_counts(column: Column, step: int, exclude: int | None = None) -> list[int]:
    """t1..t4 of an adjusted-count column, read `step` entries at a time; `exclude`: a row left
    out (`<s>` at order 1, never predicted)."""
    t = np.zeros(4, dtype=np.int64)
    for lo in range(0, column.length, step):
        values = column.read(lo, lo + step)
        if exclude is not None and lo <= exclude < lo + len(values):
            values[exclude - lo] = 0
        t += np.bincount(np.clip(values, 0, 5), minlength=6)[1:5]
    return [int(x) for x in t]


class _Lower:
    """p of the order below, looked up by row id: the whole column in memory when it fits
    `memory`, else read block by block for each lookup."""

    def __init__(self, column: Column, memory: int):
        self.column, self.block = column, max(memory // 8, 1024)
        self.whole = column.read() if column.length <= self.block else None

    def of(self, suffix: Column, lo: int, hi: int) -> np.ndarray:
        """p of the order below at the suffix ids of rows lo..hi."""
        return self[suffix.read(lo, hi)]

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        if self.whole is not None:
            return self.whole[ids]
        out = np.empty(len(ids), dtype=np.float64)
        for lo in range(0, self.column.length, self.block):
            values = self.column.read(lo, lo + self.block)
            inside = (ids >= lo) & (ids < lo + len(values))
            out[inside] = values[ids[inside] - lo]
        return out


def estimate(counts: DiskCounts, memory: int, spill: Spill, fallback=None, progress=None,
             remedy: str = kneser_ney.PARAMS_REMEDY) -> DiskModel:
    """Interpolated modified Kneser-Ney of order counts.order, as `kneser_ney.estimate` (the
    equations are in its module docstring) with bitwise identical results: rows are read in
    slices cut at context boundaries, so every context's rows are summed in the same order. Raises kneser_ney.DiscountError as it does, SpillError when
    the spill folder fails."""
    vocab_size, order = counts.vocab_size, counts.order
    memory = int(memory * WORKING_SHARE) // 2    # half for slices of rows, half for p below
    step = max(memory // BYTES_PER_ROW, 1024)
    probs, backoffs, discounts = [], [], []
    lower = None
    for n in range(1, order + 1):
        t = _count_of_counts(counts.adjusted[n - 1], step, BOS_ID if n == 1 else None)
        d = kneser_ney.discounts_from_counts(t, n, fallback, remedy)
        log10_prob = spill.file(f"log10_prob{n}", np.float64)
        prob_out = spill.file(f"prob{n}", np.float64) if n < order else None
        backoff_below = spill.file(f"log10_backoff{n - 1}", np.float64) if n > 1 else None
        written = 0                       # rows of the order below whose backoff is written
        for lo, hi in _context_slices(counts, n, step):
            adjusted = counts.adjusted[n - 1].read(lo, hi)
            if n == 1:
                adjusted[BOS_ID] = 0
            if n == 1:
                context = np.zeros(hi - lo, dtype=np.int64)
                first = 0
            else:
                context = counts.keys[n - 1].read(lo, hi) // vocab_size
                first = int(context[0])
                context -= first
            contexts = int(context[-1]) + 1
            prob, gamma = kneser_ney.interpolate(
                adjusted, d, context, contexts, vocab_size,
                None if n == 1 else partial(lower.of, counts.suffix[n - 1], lo, hi))
            if n > 1:
                backoff_below.append(np.zeros(first - written))
                backoff_below.append(np.log10(gamma))
                written = first + contexts
            with np.errstate(divide="ignore"):
                log10_prob.append(np.log10(prob))
            if prob_out is not None:
                prob_out.append(prob)
        if n > 1:
            backoff_below.append(np.zeros(counts.keys[n - 2].length - written))
            backoffs.append(backoff_below)
        probs.append(log10_prob)
        discounts.append(tuple(float(x) for x in d))
        if lower is not None:
            lower.column.remove()
        lower = _Lower(prob_out, memory) if prob_out is not None else None
        if progress:
            progress(f"estimated order {n}: {log10_prob.length:,} n-grams, discounts "
                     + " ".join(f"{x:.4f}" for x in d))
    top = spill.file(f"log10_backoff{order}", np.float64)
    for lo in range(0, counts.keys[order - 1].length, step):
        top.append(np.zeros(min(step, counts.keys[order - 1].length - lo)))
    backoffs.append(top)
    return DiskModel(vocab_size, counts, probs, backoffs, discounts)


def _context_slices(counts: DiskCounts, n: int, step: int):
    """Row ranges (lo, hi) of about `step` rows of order n, cut only where the context changes
    (order 1: one slice, a single context)."""
    size = counts.keys[n - 1].length
    if n == 1:
        yield 0, size
        return
    lo = 0
    while lo < size:
        hi = min(lo + step, size)
        while hi < size:
            context = counts.keys[n - 1].read(lo, hi) // counts.vocab_size
            cut = int(np.searchsorted(context, context[-1]))
            if cut > 0:
                hi = lo + cut
                break
            hi = min(hi + step, size)
        yield lo, hi
        lo = hi


def truncated(counts: DiskCounts, order: int) -> DiskCounts:
    """The counts of orders 1..order (counting.NgramCounts.truncated on disk): the highest
    order's adjusted counts are its raw counts."""
    return DiskCounts(counts.vocab_size, counts.keys[:order], counts.counts[:order],
                      [*counts.adjusted[:order - 1], counts.counts[order - 1]], counts.suffix[:order])

