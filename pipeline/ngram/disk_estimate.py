"""Out-of-core Kneser-Ney estimation within `memory` bytes (KenLM lm/builder). In: NgramCounts of
files.Column (external.count). Out: an NGramLM of Columns in the spill folder, kneser_ney.estimate's
tables bitwise (each context's rows summed in the same order). Errors: DiscountError, SpillError."""

from __future__ import annotations

from functools import partial

import numpy as np

from pipeline.files import Column, Spill
from pipeline.ngram import kneser_ney
from pipeline.ngram.counting import NgramCounts
from pipeline.ngram.external import WORKING_SHARE
from pipeline.text.vocab import BOS_ID

BYTES_PER_ROW = 96        # estimation: key, adjusted, suffix, context, discount, p, gathers


def _count_of_counts(column: Column, step: int, exclude: int | None = None) -> list[int]:
    """t1..t4 of an adjusted-count column, the row `exclude` left out."""
    t = np.zeros(4, dtype=np.int64)
    for lo in range(0, column.length, step):
        values = column.read(lo, lo + step)
        if exclude is not None and lo <= exclude < lo + len(values):
            values[exclude - lo] = 0
        t += np.bincount(np.clip(values, 0, 5), minlength=6)[1:5]
    return [int(x) for x in t]


class _Lower:
    """p of the order below by row id: in memory when it fits, else read block by block."""

    def __init__(self, column: Column, memory: int):
        self.column, self.block = column, max(memory // 8, 1024)
        self.whole = column.read() if column.length <= self.block else None

    def of(self, suffix: Column, lo: int, hi: int) -> np.ndarray:
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


def estimate(counts: NgramCounts, memory: int, spill: Spill, fallback=None, progress=None,
             remedy: str = kneser_ney.PARAMS_REMEDY) -> kneser_ney.NGramLM:
    """kneser_ney.estimate of `counts`, bitwise: rows read in slices cut at context boundaries."""
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
    return kneser_ney.NGramLM(vocab_size, counts.keys, probs, backoffs, discounts)


def _context_slices(counts: NgramCounts, n: int, step: int):
    """Ranges (lo, hi) of about `step` rows of order n, cut only where the context changes."""
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
