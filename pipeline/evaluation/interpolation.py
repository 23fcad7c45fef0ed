"""Linear interpolation of each causal recurrent model with the n-gram model (Jelinek & Mercer
1980; Mikolov et al. 2011): p = λ·p_rnn + (1 − λ)·p_ngram per token, in probability space. In: the
per-token ln p (scoring.Scores.logprobs) of both models on the same valid and test targets. Out:
the interpolation weight λ, chosen on valid only by a grid search (GRID: 0.00, 0.01, ..., 1.00),
and the mixture's per-token ln p of each split. Cloze pseudo-likelihoods are never mixed here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GRID = np.round(np.arange(101) / 100.0, 2)   # candidate interpolation weights λ of the RNN


@dataclass
class Mixture:
    """One interpolated model: `rnn` with `ngram` at weight λ (of the RNN); ln p per split."""
    name: str                            # e.g. "gru+ngram"
    rnn: str
    ngram: str
    weight: float
    logprobs: dict[str, np.ndarray]      # split -> ln p of every non-`<s>` target (nats)


def mix(rnn: np.ndarray, ngram: np.ndarray, weight: float) -> np.ndarray:
    """ln(λ·e^rnn + (1 − λ)·e^ngram) per token (ln p arrays of the same targets); λ = 1 gives
    `rnn` and λ = 0 gives `ngram` exactly (a copy)."""
    rnn, ngram = np.asarray(rnn, dtype=np.float64), np.asarray(ngram, dtype=np.float64)
    if weight >= 1.0:
        return rnn.copy()
    if weight <= 0.0:
        return ngram.copy()
    return np.logaddexp(math.log(weight) + rnn, math.log1p(-weight) + ngram)


def choose_weight(rnn: np.ndarray, ngram: np.ndarray, grid: np.ndarray = GRID) -> float:
    """The λ of `grid` that gives the highest total ln p of mix(rnn, ngram, λ), the smallest on
    a tie. Pass validation scores only: a weight chosen on test would flatter the mixture."""
    totals = [float(np.sum(mix(rnn, ngram, float(weight)))) for weight in grid]
    return float(grid[int(np.argmax(totals))])


def mixtures(logprobs: dict[str, dict[str, np.ndarray]], ngram: str = "ngram") -> list[Mixture]:
    """A Mixture of `ngram` with each other model of `logprobs` ({name: {split: ln p}}, causal
    models only, every one scored on the same targets), λ chosen on "valid"."""
    out = []
    for name, scores in logprobs.items():
        if name == ngram or ngram not in logprobs:
            continue
        weight = choose_weight(scores["valid"], logprobs[ngram]["valid"])
        out.append(Mixture(f"{name}+{ngram}", name, ngram, weight,
                           {split: mix(lp, logprobs[ngram][split], weight) for split, lp in scores.items()}))
    return out
