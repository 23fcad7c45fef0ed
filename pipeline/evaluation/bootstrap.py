"""Bootstrap percentile intervals (Efron & Tibshirani 1993, ch. 13) and paired comparisons (Koehn
2004); why: docs/internals.md. In: per-unit sums (U,) of each model's nll (nats) and tokens. Out:
one seeded draw of B replicates for every model and metric; intervals of ratios; Comparisons."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHUNK = 1 << 24   # weight-matrix entries per block of replicates (128 MiB of float64)


def resample_sums(columns: dict[str, np.ndarray], resamples: int, seed: int) -> dict[str, np.ndarray]:
    """{name: (B,)} Σ of each column (U,) over each replicate's U units, drawn with replacement
    (PCG64 seeded by `seed`); one draw for every column, so ratios of columns are per replicate."""
    names = list(columns)
    matrix = np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], axis=1)  # (U, K)
    units = len(matrix)
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(names)))
    block = max(1, CHUNK // units)
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        drawn = rng.integers(0, units, size=(rows, units))
        drawn += np.arange(rows)[:, None] * units       # row b's draws, counted per unit
        weights = np.bincount(drawn.reshape(-1), minlength=rows * units).reshape(rows, units)
        out[start:start + rows] = weights.astype(np.float64) @ matrix
    return {n: out[:, k] for k, n in enumerate(names)}


def interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval: the (1 - level) / 2 and (1 + level) / 2 quantiles (linear)."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of A against B: delta = (Σ nll_B - Σ nll_A) / Σ tokens, nats per token."""
    a: str
    b: str
    delta: float
    low: float
    high: float
    p_better: float
    level: float

    @property
    def verdict(self) -> str:
        return "yes" if self.low > 0 else "no" if self.high < 0 else "not distinguishable"

    def sentence(self) -> str:
        """E.g. "gru better than ngram: yes (Δ +0.152 nats/token [0.131, 0.174], P = 1.000)"."""
        level = f" at {self.level:.0%}" if self.verdict == "not distinguishable" else ""
        return (f"{self.a} better than {self.b}: {self.verdict}{level} (Δ {self.delta:+.4f} "
                f"nats/token [{self.low:+.4f}, {self.high:+.4f}], P(better) = {self.p_better:.3f})")

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "delta_nats_per_token": self.delta,
                "delta_ci_low": self.low, "delta_ci_high": self.high, "p_better": self.p_better,
                "level": self.level, "verdict": self.verdict}


def paired(a: str, b: str, nll_a: np.ndarray, nll_b: np.ndarray, tokens: np.ndarray,
           replicates: dict[str, np.ndarray], level: float) -> Comparison:
    """A against B on the same targets: per-unit sums (U,), resample_sums' "nll_a", "nll_b", "tokens"."""
    delta = float((np.sum(nll_b) - np.sum(nll_a)) / np.sum(tokens))
    drawn = (replicates["nll_b"] - replicates["nll_a"]) / replicates["tokens"]
    low, high = interval(drawn, level)
    return Comparison(a, b, delta, low, high, float(np.mean(drawn > 0)), level)


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray, level: float,
                   transform=None) -> tuple[float, float]:
    """Interval of numerator / denominator per replicate ((B,) each), through a monotone `transform`."""
    values = numerator / denominator
    return interval(values if transform is None else transform(values), level)


def bits(nats: np.ndarray) -> np.ndarray:
    return nats / math.log(2.0)
