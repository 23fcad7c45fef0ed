"""Interpolated modified Kneser-Ney (Chen & Goodman 1998) as lmplz estimates it, and MLE; formulas:
docs/internals.md. In: NgramCounts (arrays or Columns). Out: NGramLM (log10 p and backoff per stored
n-gram, as ARPA), MLE p. Errors: DiscountError, SpillError."""

from __future__ import annotations

from functools import partial

import numpy as np

from pipeline.ngram.backoff import NGramLM
from pipeline.ngram.counting import WORKING_SHARE, NgramCounts, cut_ranges, lookup_all
from pipeline.out_of_core import Column, Spill
from pipeline.text.vocab import BOS_ID

LMPLZ_FALLBACK = (0.5, 1.0, 1.5)
BYTES_PER_NGRAM = 24  # NGramLM stores an int64 key, a float64 log10 p and a float64 log10 backoff
BYTES_PER_ROW = 96    # out of core: key, adjusted, suffix, context, discount, p, gathers per row


class DiscountError(ValueError):
    """Modified Kneser-Ney discounts cannot be estimated from these counts."""


PARAMS_REMEDY = ("lower ngram.order, use more text, or set ngram.discount_fallback: true (discounts "
                 f"{' '.join(map(str, LMPLZ_FALLBACK))}, as lmplz's --discount_fallback)")


def discounts_from_counts(t: list[int], order: int, fallback=None,
                          remedy: str = PARAMS_REMEDY) -> tuple[float, float, float]:
    """(D1, D2, D3+) of count-of-counts t1..t4 (Chen & Goodman eq. 26) checked as lmplz's
    CalculateDiscounts (t1..t3 > 0, Dk in [0, k]); else `fallback`, or DiscountError + `remedy`."""
    zero = next((k for k in (1, 2, 3) if t[k - 1] == 0), None)
    problem = f"no {order}-gram has adjusted count {zero}"
    if zero is None:
        y = t[0] / (t[0] + 2 * t[1])
        d = tuple(k - (k + 1) * y * t[k] / t[k - 1] for k in (1, 2, 3))
        bad = next((k for k in (1, 2, 3) if not 0 <= d[k - 1] <= k), None)
        if bad is None:
            return d
        problem = f"D{bad if bad < 3 else '3+'} = {d[bad - 1]:.6g} is outside [0, {bad}]"
    if fallback is not None:
        return tuple(map(float, fallback))
    raise DiscountError(f"no Kneser-Ney discounts for order {order}: {problem} (t1..t4 = {t}); {remedy}")


def estimate(counts: NgramCounts, fallback=None, progress=None, remedy: str = PARAMS_REMEDY,
             memory: int = 0, spill: Spill | None = None) -> NGramLM:
    """Interpolated modified Kneser-Ney of order counts.order (DiscountError: discounts_from_counts);
    with `spill`, Columns there, in slices cut at contexts within `memory` bytes: the same tables."""
    vocab_size, order = counts.vocab_size, counts.order
    memory = int(memory * WORKING_SHARE) // 2    # half for slices of rows, half for p below
    step = max(memory // BYTES_PER_ROW, 1024) if spill else 1 << 62   # in memory: one slice
    block = max(memory // 8, 1024)               # p below: read whole when it fits, else by blocks

    def new(name: str):
        return spill.file(name, np.float64) if spill else []
    lower, log10_prob, backoffs, discounts = None, [], [], []
    for n in range(1, order + 1):
        d = discounts_from_counts(_count_of_counts(counts.adjusted[n - 1], step, n), n, fallback, remedy)
        probs, prob_out = new(f"log10_prob{n}"), new(f"prob{n}") if n < order else None
        backoff_below = new(f"log10_backoff{n - 1}")
        written = 0                       # rows of the order below whose backoff is written
        for lo, hi in _context_slices(counts, n, step):
            adjusted = counts.adjusted[n - 1][lo:hi]
            if n == 1:
                adjusted = adjusted.copy()
                adjusted[BOS_ID] = 0                   # <s> is never predicted
            context = counts.keys[n - 1][lo:hi] // vocab_size if n > 1 else np.zeros(hi - lo, np.int64)
            first = int(context[0])
            context -= first
            contexts = int(context[-1]) + 1
            below = None if n == 1 else partial(_lower, lower, counts.suffix[n - 1], lo, hi, block)
            prob, gamma = interpolate(adjusted, d, context, contexts, vocab_size, below)
            if n > 1:
                backoff_below.append(np.zeros(first - written))
                backoff_below.append(np.log10(gamma))
                written = first + contexts
            with np.errstate(divide="ignore"):
                probs.append(np.log10(prob))      # -inf where p = 0 (only <s>)
            if prob_out is not None:
                prob_out.append(prob)
        if n > 1:
            backoff_below.append(np.zeros(len(counts.keys[n - 2]) - written))
            backoffs.append(_joined(backoff_below))
        log10_prob.append(_joined(probs))
        discounts.append(tuple(float(x) for x in d))
        if isinstance(lower, Column):
            lower.remove()
        lower = _joined(prob_out, block) if prob_out is not None else None
        if progress:
            progress(f"estimated order {n}: {len(counts.keys[n - 1]):,} n-grams, discounts "
                     + " ".join(f"{x:.4f}" for x in d))
    top = new(f"log10_backoff{order}")     # calloc: untouched pages cost no memory
    for lo in range(0, len(counts.keys[order - 1]), step):
        top.append(np.zeros(min(step, len(counts.keys[order - 1]) - lo)))
    return NGramLM(vocab_size, list(counts.keys), log10_prob, [*backoffs, _joined(top)], discounts)


def _count_of_counts(column, step: int, n: int) -> list[int]:
    """t1..t4 of an order's adjusted counts (an array or a Column), <s> left out of order 1."""
    t = np.zeros(6, dtype=np.int64)
    for lo in range(0, len(column), step):
        values = np.clip(column[lo:lo + step], 0, 5)
        if n == 1 and lo == 0:
            values[BOS_ID] = 0
        t += np.bincount(values, minlength=6)
    return [int(x) for x in t[1:5]]


def _context_slices(counts: NgramCounts, n: int, step: int):
    """Ranges (lo, hi) of about `step` rows of order n, cut only where the context changes."""
    def last_context(lo: int, hi: int) -> int:
        context = counts.keys[n - 1][lo:hi] // counts.vocab_size
        return lo + int(np.searchsorted(context, context[-1]))
    return cut_ranges(len(counts.keys[n - 1]), step if n > 1 else 1 << 62, last_context)


def _joined(parts, block: int = 0):
    """A list of arrays as one array (not copied when one), a Column read whole (and removed)
    when it has at most `block` entries, else the Column."""
    if isinstance(parts, Column):
        if len(parts) > block:
            return parts
        whole = parts[:]
        parts.remove()
        return whole
    parts = [p for p in parts if len(p)] or [np.zeros(0)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _lower(prob, suffix, lo: int, hi: int, block: int) -> np.ndarray:
    """p of the order below (an array, or a Column read `block` rows at a time) at suffix[lo:hi]."""
    ids = suffix[lo:hi]
    if isinstance(prob, np.ndarray):
        return np.take(prob, ids)
    out = np.empty(len(ids), dtype=np.float64)
    for at in range(0, len(prob), block):
        values = prob[at:at + block]
        inside = (ids >= at) & (ids < at + len(values))
        out[inside] = values[ids[inside] - at]
    return out


def interpolate(adjusted: np.ndarray, d: tuple[float, float, float], context: np.ndarray,
                num_contexts: int, vocab_size: int, lower=None) -> tuple[np.ndarray, np.ndarray]:
    """(p (rows,), γ (num_contexts,)) of one order; `lower()`: p of each row's suffix (None: uniform
    over |V| - 1). Rows summed in row order, so slices cut at contexts give bitwise the same."""
    discount = np.array([0.0, *d])[np.minimum(adjusted, 3)]   # D(a): 0, D1, D2, D3+
    total = np.bincount(context, adjusted, minlength=num_contexts)
    mass = np.bincount(context, discount, minlength=num_contexts)  # Σ D(a) = D1 N1 + D2 N2 + D3 N3+
    safe = np.where(total > 0, total, 1.0)
    gamma = np.where(total > 0, mass / safe, 1.0)
    prob = np.subtract(adjusted, discount, dtype=np.float64)  # in place from here: big arrays
    del discount
    prob /= safe[context]
    if lower is None:
        prob += gamma[0] / (vocab_size - 1)
        prob[BOS_ID] = 0.0
    else:
        prob += gamma[context] * lower()
    return prob, gamma


def mle_probs(counts: NgramCounts, stream: np.ndarray, n: int, totals: list | None = None) -> np.ndarray:
    """MLE p(w | c) of order n (a shorter c at a sentence start; 0 unseen) of each non-`<s>` token;
    totals[m-2]: the count after each (m-1)-gram (counting.mle_tables'), else summed from counts."""
    ids, offset, targets = lookup_all(stream, counts.keys, counts.vocab_size)
    used = np.minimum(n, offset[targets] + 1)        # shorter history at the sentence start
    prob = np.zeros(len(targets))
    for m in range(2, n + 1):
        rows = np.flatnonzero(used == m)
        start = targets[rows] - m + 1
        gram = ids[m - 1][start]
        context = ids[m - 2][start]
        context_total = totals[m - 2] if totals else np.bincount(
            counts.keys[m - 1] // counts.vocab_size, counts.counts[m - 1], minlength=len(counts.keys[m - 2]))
        numerator = np.where(gram >= 0, counts.counts[m - 1][np.maximum(gram, 0)], 0)
        denominator = np.where(context >= 0, context_total[np.maximum(context, 0)], 0)
        prob[rows] = np.divide(numerator, denominator, out=np.zeros(len(rows)), where=denominator > 0)
    return prob
