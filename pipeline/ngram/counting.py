"""N-gram counting. In: a checked token stream `<s> w.. </s> <s> ...` (ids < vocab_size), order N.
Out: NgramCounts: per order n = 1..N, sorted int64 keys (prefix_id * V + last word), raw counts,
Kneser-Ney adjusted counts, suffix ids; n-grams never cross a sentence. docs/internals.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from pipeline import out_of_core
from pipeline.text.vocab import BOS_ID, sentence_bounds

WORKING_SHARE = 0.75   # out of core: the budget's share for the tables being sorted and summed;
                       # the rest is the interpreter, numpy and pyarrow (~100 MiB), allocator slack
RELEASE_ROWS = 1 << 16  # lookups in one pass from which a mapped table's pages are released after:
                        # fewer hold little, and faulting pages in again costs ~20 us each


@dataclass
class NgramCounts:
    """Columns np.ndarray, or out_of_core.Column on disk (external.count)."""
    vocab_size: int
    keys: list[np.ndarray]       # keys[n-1]: sorted int64 keys of order n (order 1: arange(V))
    counts: list[np.ndarray]     # raw counts c(g), int64
    adjusted: list[np.ndarray]   # KN adjusted counts a(g): distinct left extensions; raw for the
                                 # highest order and for n-grams starting with <s>
    suffix: list[np.ndarray]     # suffix[n-1][i]: id in order n-1 of g[1:] (order 1: empty)

    @property
    def order(self) -> int:
        return len(self.keys)

    def words(self, n: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(rows, n) word ids of the order-n n-grams start..stop (keys in memory or on disk)."""
        key = self.keys[n - 1][start:stop]
        if n == 1:
            return key[:, None]
        columns, ids = [key % self.vocab_size], key // self.vocab_size
        for m in range(n - 1, 1, -1):
            low = int(ids[0]) if len(ids) else 0
            prefix = self.keys[m - 1][low:int(ids[-1]) + 1 if len(ids) else 0][ids - low]
            columns.append(prefix % self.vocab_size)
            ids = prefix // self.vocab_size
        columns.append(ids)
        return np.stack(columns[::-1], axis=1)

    def truncated(self, order: int) -> NgramCounts:
        """The counts of orders 1..order, the highest one's adjusted counts its raw counts."""
        return NgramCounts(self.vocab_size, self.keys[:order], self.counts[:order],
                           [*self.adjusted[:order - 1], self.counts[order - 1]], self.suffix[:order])


def cut_ranges(length: int, size: int, last_cut):
    """Ranges (lo, hi) of about `size` rows of `length`, hi = last_cut(lo, hi) (lo: grown by `size`)."""
    lo = 0
    while lo < length:
        hi = min(lo + size, length)
        while hi < length:
            cut = last_cut(lo, hi)
            if cut > lo:
                hi = cut
                break
            hi = min(hi + size, length)
        yield lo, hi
        lo = hi


def positions_left(stream: np.ndarray, starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens from each position to its sentence's end inclusive, its offset from its start);
    sentences start at `starts` (default: each `<s>`) and are whole (check_ids refuses others)."""
    starts = sentence_bounds(stream)[0] if starts is None else starts
    lengths = np.diff(starts, append=len(stream))
    position = np.arange(len(stream), dtype=np.int64)
    remaining = np.repeat(starts + lengths, lengths) - position
    offset = position - np.repeat(starts, lengths)
    return remaining, offset


def count(stream: np.ndarray, vocab_size: int, order: int, progress=None) -> NgramCounts:
    """The n-grams of orders 1..order in `stream`, counted, with their adjusted counts."""
    keys, counts, suffix = tables(stream, vocab_size, order, progress)
    adjusted = [adjusted_counts(keys, counts, suffix, m, vocab_size) for m in range(1, order)]
    return NgramCounts(vocab_size, keys, counts, [*adjusted, counts[-1]], suffix)


def tables(stream: np.ndarray, vocab_size: int, order: int, progress=None) -> tuple[list, list, list]:
    """(keys, raw counts, suffix ids) of NgramCounts' orders 1..order in `stream`."""
    stream = np.asarray(stream, dtype=np.int64)
    remaining = positions_left(stream)[0].astype(np.int32)
    keys = [np.arange(vocab_size, dtype=np.int64)]
    counts = [np.bincount(stream, minlength=vocab_size).astype(np.int64)]
    suffix = [np.empty(0, dtype=np.int64)]
    ids = stream.astype(np.int32)             # id of the n-gram starting at each position
    for n in range(2, order + 1):
        start = np.flatnonzero(remaining >= n)  # positions where an n-gram fits in its sentence
        unique, first, inverse, counted = _unique(ids[start].astype(np.int64) * vocab_size + stream[start + n - 1])
        keys.append(unique)
        counts.append(counted)
        suffix.append(ids[start[first] + 1].astype(np.int64))
        ids = np.full(len(stream), -1, dtype=np.int32)
        ids[start] = inverse
        del start, inverse
        if progress:
            progress(f"counted {len(unique):,} distinct {n}-grams")
    return keys, counts, suffix


def adjusted_counts(keys, counts, suffix, m: int, vocab_size: int, memory: int = 0, spill=None):
    """Adjusted counts of order m < order (Chen & Goodman; lm/builder/adjust_counts.cc), the raw
    count for n-grams starting with `<s>`; with `spill`, a Column there, built within `memory`."""
    size, source = len(keys[m - 1]), suffix[m]
    block, step = (max(memory // 24, 1024), max(memory // 48, 1024)) if spill else (size, len(source))
    low, high = BOS_ID, BOS_ID + 1            # rows starting with <s>: a contiguous range
    for k in range(2, m + 1):
        table, wanted = keys[k - 1], np.array([low, high]) * vocab_size
        low, high = (int(x) for x in (table.search(wanted) if spill else np.searchsorted(table, wanted)))
    parts = spill.file(f"adjusted{m}", np.int64) if spill else []
    for lo in range(0, size, block):
        hi = min(lo + block, size)
        extensions = np.zeros(hi - lo, dtype=np.int64)
        for s in range(0, len(source), max(step, 1)):
            ids = source[s:s + step]
            extensions += np.bincount(ids[(ids >= lo) & (ids < hi)] - lo if spill else ids, minlength=hi - lo)
        raw_lo, raw_hi = max(low, lo), min(high, hi)
        if raw_lo < raw_hi:
            extensions[raw_lo - lo:raw_hi - lo] = counts[m - 1][raw_lo:raw_hi]
        parts.append(extensions)
    return parts if spill else parts[0]


def _unique(key: np.ndarray, kind: str = "quicksort"):
    """np.unique(key, return_index, return_inverse, return_counts); its index: any occurrence.
    kind "stable" where `key` is sorted runs one after another (Timsort merges them: ~5x)."""
    order, ordered = packed_argsort(key, kind)
    boundary = np.empty(len(key), dtype=bool)
    boundary[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=boundary[1:])
    heads = np.flatnonzero(boundary)
    group = np.cumsum(boundary, dtype=np.int32) - 1
    inverse = np.empty(len(key), dtype=np.int32)
    inverse[order] = group
    counted = np.diff(heads, append=len(key)).astype(np.int64)
    return ordered[heads], order[heads], inverse, counted


def packed_argsort(key: np.ndarray, kind: str = "quicksort") -> tuple[np.ndarray, np.ndarray]:
    """(positions that sort `key`, the sorted keys): one SIMD sort of (key << bits | position)
    when both fit 64 bits (~10x argsort; keys >= 0), else argsort; `kind` as np.sort's."""
    bits = max(int(len(key) - 1).bit_length(), 1)
    if len(key) and key.min() >= 0 and int(key.max()).bit_length() + bits <= 64:
        packed = (key.astype(np.uint64) << np.uint64(bits)) | np.arange(len(key), dtype=np.uint64)
        packed.sort(kind=kind)
        return (packed & np.uint64((1 << bits) - 1)).astype(np.int64), (packed >> np.uint64(bits)).astype(np.int64)
    order = np.argsort(key, kind=kind)
    return order, key[order]


def _search(table: np.ndarray, key: np.ndarray) -> np.ndarray:
    """np.searchsorted(table, key), many keys searched in key order (cache-friendly)."""
    if len(key) < 65536:
        return np.searchsorted(table, key)
    order, ordered = packed_argsort(key)
    where = np.empty(len(key), dtype=np.int64)
    where[order] = np.searchsorted(table, ordered)
    return where


def find(table: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whether each key is in the sorted table, its index there or 0); a memory-mapped table's
    pages are released after RELEASE_ROWS keys or more (out_of_core.release)."""
    at = np.minimum(_search(table, keys), max(len(table) - 1, 0))
    found = table[at] == keys if len(table) else np.zeros(len(keys), dtype=bool)
    if len(keys) >= RELEASE_ROWS:
        out_of_core.release((table,))
    return found, np.where(found, at, 0)


def lookup_all(stream: np.ndarray, counts_keys: list[np.ndarray], vocab_size: int, starts=None):
    """(ids[n-1][pos]: id of the order-n n-gram starting at pos or -1 (unknown, or past the end),
    each position's offset from its sentence's start, the targets: all positions but the starts)."""
    stream = np.asarray(stream, dtype=np.int64)
    remaining, offset = positions_left(stream, starts)
    ids = [np.where(stream < vocab_size, stream, -1)]
    for n in range(2, len(counts_keys) + 1):
        current = np.full(len(stream), -1, dtype=np.int64)
        start = np.flatnonzero((remaining >= n) & (ids[-1] >= 0))
        key = ids[-1][start] * vocab_size + stream[start + n - 1]
        found, where = find(counts_keys[n - 1], key)
        current[start[found]] = where[found]
        ids.append(current)
    return ids, offset, np.flatnonzero(offset)


def mle_tables(path, streams: list[np.ndarray], vocab_size: int, n: int) -> tuple[NgramCounts, list]:
    """(NgramCounts of a counts.parquet's orders 1..n: every unigram, longer n-grams only where
    the streams hold them, ids renumbered in key order; per order m >= 2 the total count after
    each kept (m-1)-gram) for mle_probs, read a row group at a time: memory follows the streams,
    not the model. Errors: OSError, ValueError (pyarrow's ArrowInvalid): a missing or damaged file."""
    file = pq.ParquetFile(path)
    if missing := {"order", "key", "count"} - set(file.schema_arrow.names):
        raise ValueError(f"no column {sorted(missing)[0]!r}")
    at = file.schema_arrow.get_field_index("order")

    def rows(m: int):                                 # (keys, counts) of order m, a row group at a time
        for i in range(file.num_row_groups):
            stats = file.metadata.row_group(i).column(at).statistics
            if stats is None or not stats.has_min_max or stats.min <= m <= stats.max:
                part = file.read_row_group(i, columns=["order", "key", "count"])
                keep = part.column("order").to_numpy() == m
                yield part.column("key").to_numpy()[keep], part.column("count").to_numpy()[keep]

    V, unigram = vocab_size, np.zeros(vocab_size, dtype=np.int64)
    for keys, counts in rows(1):
        unigram[keys] = counts
    tables, original, totals = NgramCounts(V, [np.arange(V)], [unigram], [], []), [np.arange(V)], []
    for m in range(2, n + 1):
        wanted = [np.zeros(0, dtype=np.int64)]        # original keys of the streams' m-grams
        for stream in streams:
            prefix, remaining = lookup_all(stream, tables.keys, V)[0][m - 2], positions_left(stream)[0]
            start = np.flatnonzero((remaining >= m) & (prefix >= 0))
            wanted.append(original[m - 2][prefix[start]] * V + np.asarray(stream)[start + m - 1])
        wanted, found = np.unique(np.concatenate(wanted)), [(np.zeros(0, dtype=np.int64),) * 3]
        total, offset = np.zeros(len(original[m - 2])), 0   # float64, as bincount sums: exact
        for keys, counts in rows(m):                  # keys sorted: each batch finds its share
            hit, where = find(keys, wanted)
            found.append((wanted[hit], offset + where[hit], counts[where[hit]]))
            kept, context = find(original[m - 2], keys // V)
            total += np.bincount(context[kept], counts[kept], minlength=len(total))
            offset += len(keys)
        keys, ids, counts = (np.concatenate(column) for column in zip(*found, strict=True))
        tables.keys.append(np.searchsorted(original[m - 2], keys // V) * V + keys % V)
        tables.counts.append(counts)
        original.append(ids)
        totals.append(total)
    return tables, totals
