"""A backoff n-gram model as ARPA stores it (NGramLM): per order, sorted keys (prefix id * V + last
word), log10 p and log10 backoff; checked before scoring (problem), read from memory-mapped tables
(release). Scores: log10 p of a stream's targets by backoff, as KenLM's FullScore."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.ngram.counting import RELEASE_ROWS, find, lookup_all
from pipeline.out_of_core import chunks, release
from pipeline.text.vocab import BOS_ID

LOG10_SLACK = 1e-9    # log10 p above 0 that NGramLM.problem tolerates: p = u + γ p_lower rounded


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

    def release(self, lookups: int = RELEASE_ROWS) -> None:
        """Hand the pages of memory-mapped tables back (out_of_core.release) after a pass of
        RELEASE_ROWS `lookups` or more; in memory, nothing."""
        if lookups >= RELEASE_ROWS:
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
        self.release(len(stream))
        return result
