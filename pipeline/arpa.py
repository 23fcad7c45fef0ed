"""ARPA writing. In: an `NGramLM` and its vocabulary. Out: the standard backoff-model text format
that KenLM and SRILM read:

    \\data\\
    ngram 1=<count>
    ...
    \\1-grams:
    <log10 p>\t<w1>\t<log10 backoff>      (backoff omitted at the highest order)
    ...
    \\end\\

Like lmplz, `<s>` is written with log10 p = 0 (it is never predicted) and words absent from the
training text (e.g. `<unk>`) are written with their interpolated probability. Order-1 entries
are written for every vocabulary word.
"""

from __future__ import annotations

from typing import TextIO

import numpy as np

from pipeline.kneser_ney import NGramLM
from pipeline.ngrams import NgramCounts


def _format(values: np.ndarray) -> np.ndarray:
    return np.char.mod("%.7g", values)


def write(model: NGramLM, counts: NgramCounts, tokens: tuple[str, ...], out: TextIO) -> None:
    """Write `model` (estimated from `counts`) as ARPA text, in the counts' sorted order."""
    words = np.array(tokens, dtype=object)
    out.write("\\data\\\n")
    for n in range(1, model.order + 1):
        out.write(f"ngram {n}={len(model.keys[n - 1])}\n")
    for n in range(1, model.order + 1):
        out.write(f"\n\\{n}-grams:\n")
        grams = words[counts.words(n)]
        text = grams[:, 0]
        for column in range(1, n):
            text = text + " " + grams[:, column]
        prob = model.log10_prob[n - 1].copy()
        if n == 1:
            prob[1] = 0.0  # <s>: context only, written as lmplz does
        columns = [_format(prob), text.astype(str)]
        if n < model.order:
            columns.append(_format(model.log10_backoff[n - 1]))
        out.write("\n".join("\t".join(row) for row in zip(*columns, strict=True)))
        out.write("\n")
    out.write("\n\\end\\\n")
