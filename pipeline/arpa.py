"""ARPA writing. In: an `NGramLM` and its vocabulary. Out: the standard backoff-model text format
that KenLM and SRILM read:

    \\data\\
    ngram 1=<count>
    ...
    \\1-grams:
    <log10 p>\t<w1>\t<log10 backoff>      (backoff omitted at the highest order)
    ...
    \\end\\

`read` loads any such file (ours, KenLM's, SRILM's) back into an `NGramLM` for scoring, the
vocabulary reordered so that `<unk>`, `<s>`, `</s>` take ids 0, 1, 2.

Like lmplz, `<s>` is written with log10 p = 0 (it is never predicted) and words absent from the
training text (e.g. `<unk>`) are written with their interpolated probability. Order-1 entries
are written for every vocabulary word.
"""

from __future__ import annotations

import io
from typing import TextIO

import numpy as np
import pandas as pd

from pipeline.kneser_ney import NGramLM
from pipeline.ngrams import NgramCounts
from pipeline.vocab import SPECIALS


class ArpaError(ValueError):
    """The file is not a readable ARPA model; the message names the file and the line."""


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


def read(path) -> tuple[NGramLM, tuple[str, ...]]:
    """Load an ARPA file (plain or .gz). Returns the model and its vocabulary."""
    import gzip
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    header, _, body = text.partition("\n\\1-grams:\n")
    declared = [int(line.split("=")[1]) for line in header.splitlines() if line.startswith("ngram ")]
    if "\\data\\" not in header or not declared or not body:
        raise ArpaError(f"{path}: not an ARPA file (no \\data\\ header with ngram counts)")
    order = len(declared)
    sections = [body]
    for n in range(2, order + 1):
        sections[-1], marker, rest = sections[-1].partition(f"\n\\{n}-grams:\n")
        if not marker:
            raise ArpaError(f"{path}: the header declares {order} orders but there is no \\{n}-grams: section")
        sections.append(rest)
    sections[-1] = sections[-1].partition("\n\\end\\")[0]
    tables = []
    for n, section in enumerate(sections, start=1):
        table = pd.read_csv(io.StringIO(section), sep="\t", header=None, quoting=3, na_filter=False,
                            names=["prob", "words", "backoff"], dtype={"words": str})
        if len(table) != declared[n - 1]:
            raise ArpaError(f"{path}: {n}-grams section has {len(table)} entries, header says {declared[n - 1]}")
        tables.append(table)
    unigrams = tables[0]["words"].tolist()
    tokens = tuple(SPECIALS) + tuple(w for w in unigrams if w not in SPECIALS)
    index = pd.Index(tokens)
    vocab_size = len(tokens)
    keys, probs, backoffs = [], [], []
    for n, table in enumerate(tables, start=1):
        words = table["words"].str.split(" ", n=n - 1, expand=True) if n > 1 else table[["words"]]
        ids = np.stack([index.get_indexer(words[c]) for c in words.columns], axis=1)
        if (ids < 0).any():
            raise ArpaError(f"{path}: a {n}-gram uses a word missing from the 1-grams")
        if n == 1:
            key = ids[:, 0].astype(np.int64)
        else:
            prefix = ids[:, 0].astype(np.int64)
            for m in range(2, n):
                prefix = np.searchsorted(keys[m - 1], prefix * vocab_size + ids[:, m - 1])
            key = prefix * vocab_size + ids[:, -1]
        order_of = np.argsort(key, kind="stable")
        prob = table["prob"].to_numpy(np.float64)[order_of]
        backoff = pd.to_numeric(table["backoff"], errors="coerce").fillna(0.0).to_numpy(np.float64)[order_of]
        if n == 1:  # every vocabulary id gets a row; <s> is context only; a missing <unk> gets -100
            full_prob, full_backoff = np.full(vocab_size, -100.0), np.zeros(vocab_size)
            full_prob[key[order_of]], full_backoff[key[order_of]] = prob, backoff
            full_prob[1] = -np.inf
            keys.append(np.arange(vocab_size, dtype=np.int64))
            probs.append(full_prob)
            backoffs.append(full_backoff)
        else:
            keys.append(key[order_of])
            probs.append(prob)
            backoffs.append(backoff)
    return NGramLM(vocab_size, keys, probs, backoffs, [(0.0, 0.0, 0.0)] * order), tokens
