"""Split methods (`split.method`; docs/internals.md). In: the sentences' lengths (words), documents,
split.* (fractions; contiguous: also words; 0 = the rest), the seed. Out: disjoint train, valid and
test sentence indices in corpus order (contiguous: Bengio et al. 2003's Brown split). SplitError."""

from __future__ import annotations

import numpy as np

METHODS = ("random", "contiguous", "documents")
PARTS = ("train", "valid", "test")
DOCUMENTS_FIX = ("; a document is a run of lines ended by a blank line (the KJV: a chapter): "
                 "separate documents by blank lines, or use split.method: contiguous or random")


class SplitError(ValueError):
    """A split that cannot be made (an empty part, sizes beyond the text); names the params."""


def split(method: str, lengths: np.ndarray, document_of: np.ndarray, wanted: dict[str, float],
          seed: int) -> dict[str, np.ndarray]:
    """Train/valid/test sentence indices by `method` (`lengths`, `document_of`: of each sentence)."""
    if method == "documents":
        return documents(document_of, wanted, seed)
    return random_sentences(len(lengths), wanted, seed) if method == "random" else contiguous(lengths, wanted)


def sizes(total: int, wanted: dict[str, float], unit: str) -> dict[str, int]:
    """Units of each part: fractions rounded, counts as given, 0 = the rest; SplitError if one is empty."""
    out = {name: int(round(total * v)) if v < 1 else int(v) for name, v in wanted.items() if v}
    out[next(name for name, v in wanted.items() if not v)] = total - sum(out.values())
    described = ", ".join(f"split.{k}={wanted[k]:g}" for k in PARTS)
    empty = next((name for name in PARTS if out[name] <= 0), None)
    if empty:
        fix = DOCUMENTS_FIX if unit == "documents" else "; use a larger corpus or other split sizes"
        raise SplitError(f"the {empty} split is empty ({total:,} {unit} with {described}){fix}")
    return {name: out[name] for name in PARTS}


def random_sentences(total: int, wanted: dict[str, float], seed: int,
                     unit: str = "sentences") -> dict[str, np.ndarray]:
    """A seeded permutation of `total` units: valid first, then test, train the rest."""
    n = sizes(total, wanted, unit)
    valid, test, train = np.split(np.random.default_rng(seed).permutation(total),
                                  [n["valid"], n["valid"] + n["test"]])
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def documents(document_of: np.ndarray, wanted: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Whole documents drawn as `random_sentences` draws sentences."""
    ids, inverse = np.unique(document_of, return_inverse=True)
    drawn = random_sentences(len(ids), wanted, seed, "documents")
    return {name: np.flatnonzero(np.isin(inverse, chosen)) for name, chosen in drawn.items()}


def contiguous(lengths: np.ndarray, wanted: dict[str, float]) -> dict[str, np.ndarray]:
    """The parts in text order, sized in words: a sentence is where its first (else the previous) word falls."""
    starts = np.cumsum(lengths) - lengths          # words before each sentence
    n = sizes(int(lengths.sum()), wanted, "words")
    part = np.searchsorted([n["train"], n["train"] + n["valid"]], starts, side="right")
    out = {name: np.flatnonzero(part == i) for i, name in enumerate(PARTS)}
    empty = next((name for name in PARTS if not len(out[name])), None)
    if empty:
        raise SplitError(f"the {empty} split holds no whole sentence (split.{empty}={wanted[empty]:g} words)")
    return out
