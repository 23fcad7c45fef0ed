"""Interpolated modified Kneser-Ney (Chen & Goodman 1998) as lmplz estimates it, and MLE; formulas:
docs/internals.md. In: NgramCounts (arrays or Columns). Out: NGramLM (log10 p and backoff per stored
n-gram, as ARPA), MLE p, log10 p of a stream's targets. Errors: DiscountError, SpillError."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from pipeline.ngram.counting import WORKING_SHARE, NgramCounts, cut_ranges, find, lookup_all
from pipeline.out_of_core import Column, Spill, chunks, release
from pipeline.text.vocab import BOS_ID

LMPLZ_FALLBACK = (0.5, 1.0, 1.5)
BYTES_PER_NGRAM = 24  # NGramLM stores an int64 key, a float64 log10 p and a float64 log10 backoff
BYTES_PER_ROW = 96    # out of core: key, adjusted, suffix, context, discount, p, gathers per row
LOG10_SLACK = 1e-9    # log10 p above 0 that NGramLM.problem tolerates: p = u + γ p_lower rounded


class DiscountError(ValueError):
    """Modified Kneser-Ney discounts cannot be estimated from these counts."""


@dataclass
class NGramLM:
    vocab_size: int
    keys: list[np.ndarray]       # as NgramCounts.keys
    log10_prob: list[np.ndarray]  # log10 p(g) for every stored n-gram, interpolated
    log10_backoff: list[np.ndarray]  # log10 γ(g) of g used as a context (0 when never one)
    discounts: list[tuple[float, float, float]]

    @property
    def order(self) -> int:
        return len(self.keys)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.keys, *self.log10_prob, *self.log10_backoff))

    def arrays(self) -> dict:
        """model.npz's arrays by name (from_arrays reads them)."""
        arrays = {"vocab_size": np.array(self.vocab_size), "discounts": np.array(self.discounts)}
        for n in range(1, self.order + 1):
            arrays.update({f"keys{n}": self.keys[n - 1], f"log10_prob{n}": self.log10_prob[n - 1],
                           f"log10_backoff{n}": self.log10_backoff[n - 1]})
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> NGramLM:
        order = len(arrays["discounts"])
        return cls(int(arrays["vocab_size"]),
                   [arrays[f"keys{n}"] for n in range(1, order + 1)],
                   [arrays[f"log10_prob{n}"] for n in range(1, order + 1)],
                   [arrays[f"log10_backoff{n}"] for n in range(1, order + 1)],
                   [tuple(map(float, d)) for d in arrays["discounts"]])

    def release(self) -> None:
        """Hand the pages of memory-mapped tables back (out_of_core.release); in memory, nothing."""
        release((*self.keys, *self.log10_prob, *self.log10_backoff))

    def problem(self) -> str | None:
        """Why a model.npz's tables cannot be scored (order 1 keyed by every word id, higher keys
        sorted, finite log10 p <= 0 but <s>'s -inf, finite backoffs), or None."""
        if self.order < 1 or self.vocab_size <= BOS_ID:
            return f"has {self.order} orders and a {self.vocab_size}-token vocabulary"
        if not (len(self.log10_prob) == len(self.log10_backoff) == len(self.discounts) == self.order):
            return (f"has {self.order} key, {len(self.log10_prob)} probability, "
                    f"{len(self.log10_backoff)} backoff and {len(self.discounts)} discount tables")
        if not np.all(np.isfinite(np.asarray(self.discounts, dtype=np.float64))):
            return "holds non-finite discounts"
        for n, (keys, prob, backoff) in enumerate(
                zip(self.keys, self.log10_prob, self.log10_backoff, strict=True), start=1):
            keys, prob, backoff = (a if isinstance(a, np.ndarray) else np.asarray(a) for a in (keys, prob, backoff))
            if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
                return f"holds order-{n} keys of dtype {keys.dtype} and shape {keys.shape}, not integers"
            if prob.shape != keys.shape or backoff.shape != keys.shape:
                return (f"holds {len(keys):,} order-{n} keys but probabilities of shape {prob.shape} "
                        f"and backoffs of shape {backoff.shape}")
            if not (np.issubdtype(prob.dtype, np.floating) and np.issubdtype(backoff.dtype, np.floating)):
                return f"holds order-{n} probabilities or backoffs that are not floating-point"
            if fault := self._table_fault(n, keys, prob, backoff):
                return fault
        return None

    def _table_fault(self, n: int, keys, prob, backoff) -> str | None:
        """problem() of order n's tables, read a slice at a time (out_of_core.chunks)."""
        if n == 1 and len(keys) != self.vocab_size:
            return f"holds order-1 keys other than the word ids 0..{self.vocab_size - 1}"
        bad, first, top, previous = [0, 0], [None, None], (-np.inf, 0), -1
        for i, (k, p, b) in enumerate(zip(*(chunks(a, 1 << 20) for a in (keys, prob, backoff)), strict=True)):
            lo = i << 20
            if n == 1 and not np.array_equal(k, np.arange(lo, lo + len(k))):
                return f"holds order-1 keys other than the word ids 0..{self.vocab_size - 1}"
            if n > 1 and (np.any(k[1:] <= k[:-1]) or k[0] <= previous or k[-1] >= len(self.keys[n - 2]) * self.vocab_size):
                return f"holds order-{n} keys out of order or out of range (they are binary-searched)"
            previous, finite = k[-1], np.isfinite(p)
            if n == 1 and lo <= BOS_ID < lo + len(p):
                finite[BOS_ID - lo] |= p[BOS_ID - lo] == -np.inf      # <s>: context only, p = 0
            for i, (values, good) in enumerate(((p, finite), (b, np.isfinite(b)))):
                bad[i] += np.count_nonzero(~good)
                if first[i] is None and not good.all():
                    first[i] = (lo + int(np.flatnonzero(~good)[0]), values[np.flatnonzero(~good)[0]])
            if p[(m := int(np.argmax(p)))] > top[0]:
                top = (p[m], lo + m)
        for i, what in enumerate(("probabilities", "backoffs")):
            if bad[i]:
                return (f"holds non-finite log10 {what} ({bad[i]:,} of order {n}, "
                        f"the first {first[i][1]} at entry {first[i][0]})")
        if top[0] > LOG10_SLACK:
            return f"holds positive log10 probabilities (p > 1; order {n}, up to {top[0]:.6g} at entry {top[1]})"
        return None

    def gram_ids(self, grams: np.ndarray) -> np.ndarray:
        """Id of each row of `grams` (B, k) in keys[k-1], or -1 (not stored, or holds a -1)."""
        ids = np.where(grams[:, 0] >= 0, grams[:, 0], -1)
        for j in range(1, grams.shape[1]):
            found, at = find(self.keys[j], ids * self.vocab_size + grams[:, j])
            ids = np.where((ids >= 0) & (grams[:, j] >= 0) & found, at, -1)
        return ids

    def log10_probs(self, stream: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """log10 p(w_t | history) of every position of `stream` but the sentences' starts (default:
        each `<s>`), by ARPA backoff as KenLM's FullScore; a `<s>` inside a sentence scores 0 (lmplz's)."""
        ids, offset, targets = lookup_all(stream, self.keys, self.vocab_size, starts)
        result = np.zeros(len(targets))
        resolved = np.zeros(len(targets), dtype=bool)
        for n in range(self.order, 0, -1):
            start = targets - n + 1
            fits = offset[targets] >= n - 1             # the n-gram stays inside the sentence
            gram = np.where(fits, ids[n - 1][np.maximum(start, 0)], -1)
            hit = ~resolved & (gram >= 0)
            prob = self.log10_prob[n - 1][gram[hit]]
            result[hit] += np.where(prob == -np.inf, 0.0, prob)   # only <s> is -inf (context only)
            resolved |= hit
            if n > 1:  # not found at order n: back off over the context of order n-1, if stored
                context = np.where(fits, ids[n - 2][np.maximum(start, 0)], -1)
                back = ~resolved & (context >= 0)
                result[back] += self.log10_backoff[n - 2][context[back]]
        self.release()
        return result


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
