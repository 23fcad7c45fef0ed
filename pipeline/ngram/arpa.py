"""ARPA files, the backoff-model text KenLM and SRILM read. `write`: an NGramLM as lmplz writes it
(`<s>` with log10 p 0, every vocabulary word a 1-gram). `read`: any such file (ours, KenLM's,
SRILM's) into an NGramLM. Errors: ArpaError (read_arpa.py) naming the file and line; OSError."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ngram import read_arpa
from pipeline.ngram.backoff import NGramLM
from pipeline.ngram.counting import NgramCounts
from pipeline.ngram.read_arpa import ArpaError, line_of
from pipeline.text.vocab import BOS_ID, EOS_ID, SPECIALS, UNK_ID


def _digit_table(width: int, pad: int) -> np.ndarray:
    """(10**width, width) uint8 decimal digits of 0..10**width-1, leading zeros as `pad` (0: kept)."""
    numbers = np.arange(10**width)
    powers = 10 ** np.arange(width - 1, -1, -1)
    table = (ord("0") + (numbers[:, None] // powers) % 10).astype(np.uint8)
    if pad:
        table[(numbers[:, None] < powers) & (powers > 1)] = pad
    return table


def _words4(table: np.ndarray) -> np.ndarray:
    """Rows of 4 bytes as uint32, gathered 4 bytes at a time."""
    return np.ascontiguousarray(table).view(np.uint32).ravel()


_SIGNED = np.concatenate([np.full((2000, 1), ord(" "), np.uint8), np.tile(_digit_table(3, ord(" ")), (2, 1))], axis=1)
for _i in range(1000, 2000):   # 1000 + i: -i, its sign before its first digit
    _SIGNED[_i, 2 - (_i >= 1010) - (_i >= 1100)] = ord("-")
_HEAD, _DOT, _FOUR = (_words4(_SIGNED), _words4(np.insert(_digit_table(3, 0), 0, ord("."), axis=1)),
                      _words4(_digit_table(4, 0)))
_END = {end: _words4(np.array([[ord(end), 32, 32, 32]], np.uint8))[0] for end in "\t\n"}


def _numbers(values: np.ndarray, end: str) -> pa.StringArray:
    """log10 values as text, 7 decimals, then `end` (tab or newline); -inf and below -999 as -99:
    rows of 4-byte pieces ("  -5", ".098", "8379", "\\n   ") from tables, spaces trimmed by Arrow."""
    values = np.where(np.isfinite(values) & (values > -999.0), values, -99.0)
    scaled = np.rint(np.abs(values) * 1e7).astype(np.int64)
    integer, fraction = np.divmod(scaled, 10**7)
    out = np.empty((len(values), 4), dtype=np.uint32)
    out[:, 0] = _HEAD[integer + 1000 * ((values < 0) & (scaled > 0))]
    out[:, 1] = _DOT[fraction // 10000]
    out[:, 2] = _FOUR[fraction % 10000]
    out[:, 3] = _END[end]
    offsets = np.arange(0, (len(values) + 1) * 16, 16, dtype=np.int32)
    padded = pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(out))
    return pc.utf8_trim(padded, characters=" ")


def _lines(model: NGramLM, counts: NgramCounts, words: dict, n: int, start: int, stop: int):
    """ARPA lines of the order-n n-grams start..stop, as a buffer: one Arrow join of the pieces,
    each ending in its separator (`words[end]`: the words, each followed by `end`)."""
    ids = counts.words(n, start, stop)
    prob = model.log10_prob[n - 1][start:stop]
    if n == 1 and start <= 1 < stop:
        prob = prob.copy()
        prob[1 - start] = 0.0  # <s>: context only, written as lmplz does
    top = n == model.order     # its lines end at the last word, the others' at their backoff
    ends = [" "] * (n - 1) + ["\n" if top else "\t"]
    parts = [_numbers(prob, "\t"), *(words[end].take(pa.Array.from_buffers(   # numpy ids: pandas
        pa.int64(), len(ids), [None, pa.py_buffer(np.ascontiguousarray(ids[:, j]))])) for j, end in enumerate(ends))]
    if not top:
        parts.append(_numbers(model.log10_backoff[n - 1][start:stop], "\n"))
    lines = pc.binary_join_element_wise(*parts, words[""][0])
    offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
    return memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]]


def _strings(encoded: list[bytes]) -> pa.StringArray:
    """UTF-8 byte strings as an Arrow array, from its buffers (pa.array, pa.scalar import pandas: 0.2 s)."""
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded])]).astype(np.int32)
    return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))


def write(model: NGramLM, counts: NgramCounts, tokens: tuple[str, ...], out: BinaryIO,
          chunk: int = 250_000, threads: int = 2) -> None:
    """`model` (of `counts`, in memory or on disk) as ARPA text into the binary file `out`."""
    words = {end: _strings([t.encode("utf-8") + end.encode() for t in tokens]) for end in " \t\n"}
    words[""] = _strings([b""])   # the join's separator, as an Arrow scalar
    header = "\\data\\\n" + "".join(f"ngram {n}={len(k)}\n" for n, k in enumerate(model.keys, 1))
    out.write(header.encode())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for n in range(1, model.order + 1):
            out.write(f"\n\\{n}-grams:\n".encode())
            size = len(model.keys[n - 1])
            pending = deque()
            for start in range(0, size, chunk):
                if len(pending) >= 2 * threads:
                    out.write(pending.popleft().result())
                pending.append(pool.submit(_lines, model, counts, words, n, start, start + chunk))
            while pending:
                out.write(pending.popleft().result())
    out.write(b"\n\\end\\\n")


def _fill_blank_probabilities(lower: NGramLM, ids: np.ndarray, prob: np.ndarray) -> None:
    """Fill the NaN log10 p of added contexts w1..wk as SRILM backs off: log10 γ(w1..wk-1) plus
    log10 p(wk | w2..wk-1) from `lower` (orders 1..k-1)."""
    rows = np.flatnonzero(np.isnan(prob))
    if not len(rows):
        return
    k = ids.shape[1]
    tails = ids[rows, 1:]                       # w2..wk (then </s>), after a fresh <s>, by orders < k
    inner = (tails == BOS_ID).any(axis=1)       # <s> inside a context: nothing to back off to
    stream = np.concatenate([np.full((len(rows), 1), BOS_ID), np.where(tails == BOS_ID, UNK_ID, tails),
                             np.full((len(rows), 1), EOS_ID)], axis=1).ravel()
    last = lower.log10_probs(stream).reshape(len(rows), k)[:, k - 2]
    back = lower.log10_backoff[k - 2][lower.gram_ids(ids[rows, :-1])]
    prob[rows] = np.where(inner, -99.0, last + back)


def read(path, notes: list[str] | None = None,
         orphans: str = "refuse") -> tuple[NGramLM, tuple[str, ...]]:
    """(model, vocabulary with `<unk>`, `<s>`, `</s>` first) of any toolkit's ARPA file, read as
    KenLM's lm/read_arpa.cc: ArpaError where KenLM refuses, `notes` where it warns.
    `orphans="keep"`: an n-gram without its context is kept, the context added as SRILM does."""
    raw = read_arpa.load(path)
    declared, position = read_arpa.header(raw, path)
    order = len(declared)
    bounds = read_arpa.sections(raw, position, order, path)
    try:   # notes are added once every entry is read
        return _read(raw, declared, bounds, path, notes, orphans)
    except read_arpa.SpacingError:   # spacing other than the usual: make it canonical, read once more
        pass
    pieces, cursor = [], 0
    for n, (lo, hi) in enumerate(bounds, start=1):       # same line numbers, same sections
        pieces += [raw[cursor:lo], read_arpa.canonical(raw[lo:hi], n)]
        cursor = hi
    raw = b"".join(pieces) + raw[cursor:]
    return _read(raw, declared, read_arpa.sections(raw, position, order, path), path, notes, orphans)


def _read(raw: bytes, declared: list[int], bounds: list[tuple[int, int]], path, notes, orphans):
    """`read` after the header and section checks: the entries, the vocabulary, the keys."""
    order = len(declared)
    data = np.zeros(len(raw) + read_arpa.PADDING, dtype=np.uint8)  # zero tail for the sliding windows
    data[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    del raw

    def entries(n):
        parts = list(read_arpa.entries(data, *bounds[n - 1], n, order, path,
                                       **({"chunk": 2**62} if n == 1 else {})))
        found = sum(len(p[0]) for p in parts)
        if found != declared[n - 1]:
            raise ArpaError(f"{path}: line {line_of(data, bounds[n - 1][0])}: the {n}-grams section has "
                            f"{found} entries, not ngram {n}={declared[n - 1]}")
        return parts

    def chunks(n):
        """(word ids (R, n), log10 p, log10 backoff, line starts) of the order-n entries."""
        for prob_n, spans, backoff_n, line_starts in entries(n):
            yield words.ids(data, spans, line_starts, n), prob_n, backoff_n, line_starts

    prob1, spans1, backoff1, lines1 = entries(1)[0]
    tokens, unigrams = _unigrams(data, spans1, lines1, path)
    words = _Words(tokens, path)
    unigram_ids = words.of([t.encode("utf-8", "surrogateescape") for t in unigrams])
    prob = np.full(len(tokens), -100.0)   # a vocabulary word without a 1-gram entry (<unk>): -100
    prob[unigram_ids] = prob1
    prob[1] = -np.inf                     # <s> is context only
    backoff = np.zeros(len(tokens))
    backoff[unigram_ids] = backoff1
    model = NGramLM(len(tokens), [np.arange(len(tokens), dtype=np.int64)], [prob], [backoff],
                    [(0.0, 0.0, 0.0)] * order)
    grams = {n: chunks(n) for n in range(2, order + 1)}
    if orphans == "keep":      # all n-grams at once: blank contexts are inserted before keys exist
        grams = _kept(grams, order, path, notes)
    for n in range(2, order + 1):
        _add_order(model, grams[n], n, tokens, data, path, orphans == "keep")
    if "<unk>" not in unigrams and notes is not None:
        notes.append(f"{path}: the ARPA file has no <unk>; unknown words get log10 p = -100, as in KenLM")
    return model, tokens


def _unigrams(data: np.ndarray, spans1, lines1, path) -> tuple[tuple[str, ...], list[str]]:
    """(vocabulary: SPECIALS then the other 1-grams in file order, the 1-grams' words); refuses
    a word listed twice and a missing <s> or </s>."""
    raw_words = [data[a:b].tobytes() for a, b in spans1[:, 0]]
    unigrams = [(b"<unk>" if w in read_arpa.UNK_SPELLINGS else w).decode("utf-8", "surrogateescape")
                for w in raw_words]   # words are bytes, as in KenLM: a Latin-1 file's round-trip
    seen: dict[str, int] = {}
    for i, word in enumerate(unigrams):
        if word in seen:
            raise ArpaError(f"{path}: line {line_of(data, int(lines1[i]))}: the 1-gram {word!r} is listed "
                            f"twice (also line {line_of(data, int(lines1[seen[word]]))})")
        seen[word] = i
    for marker in ("<s>", "</s>"):
        if marker not in seen:
            raise ArpaError(f"{path}: the ARPA file is missing {marker}; rebuild it with <s> and </s>")
    tokens = tuple(SPECIALS) + tuple(w for w in unigrams if w not in SPECIALS)
    return tokens, unigrams


class _Words:
    """Word ids by the words' bytes (a binary search in the sorted vocabulary)."""

    def __init__(self, tokens: tuple[str, ...], path):
        self.path, self.size = path, len(tokens)
        encoded = [t.encode("utf-8", "surrogateescape") for t in tokens]
        self.width = max(map(len, encoded))
        if self.width >= read_arpa.PADDING:
            raise ArpaError(f"{path}: a word is longer than {read_arpa.PADDING - 1} bytes")
        vocab = np.array(encoded, dtype=f"S{self.width}")
        self.by_word = np.argsort(vocab)
        self.sorted = vocab[self.by_word]

    def of(self, words: list[bytes]) -> np.ndarray:
        return self.by_word[np.searchsorted(self.sorted, np.array(words, dtype=f"S{self.width}"))]

    def ids(self, data: np.ndarray, spans: np.ndarray, line_starts: np.ndarray, n: int) -> np.ndarray:
        """(rows, n) ids of the words at byte spans (rows, n, 2); ArpaError: a word not a 1-gram."""
        ids = np.empty(spans.shape[:2], dtype=np.int64)
        missing = np.zeros(spans.shape[:2], dtype=bool)
        for column in range(n):
            starts, ends = spans[:, column, 0], spans[:, column, 1]
            word = read_arpa.fixed(data, starts, ends, self.width + 1).view(f"S{self.width + 1}").ravel()
            word[word == b"<UNK>"] = b"<unk>"   # KenLM's lm/vocab.cc reads both as the unknown word
            where = np.minimum(np.searchsorted(self.sorted, word), self.size - 1)
            missing[:, column] = self.sorted[where] != word
            ids[:, column] = self.by_word[where]
        if missing.any():   # the first in the file, as KenLM reads it
            row, column = np.argwhere(missing)[0]
            word = data[slice(*spans[row, column])].tobytes().decode("utf-8", "replace")
            raise ArpaError(f"{self.path}: line {line_of(data, int(line_starts[row]))}: {word!r} is not among the 1-grams")
        return ids


def _kept(grams: dict, order: int, path, notes) -> dict:
    """`orphans="keep"`: each order's chunks of (ids (R, n), log10 p, log10 backoff, line starts) as
    one, each missing context added, highest order first, backoff 0 and log10 p NaN (SRILM)."""
    grams = {n: [np.concatenate(columns) for columns in zip(*chunks, strict=True)]
             for n, chunks in grams.items()}
    added = 0
    for n in range(order, 2, -1):
        contexts = np.ascontiguousarray(np.unique(grams[n][0][:, :n - 1], axis=0))
        row = np.dtype((np.void, 8 * (n - 1)))     # a context's int64 ids as one value
        missing = contexts[~np.isin(contexts.view(row).ravel(),
                                    np.ascontiguousarray(grams[n - 1][0]).view(row).ravel())]
        added += len(missing)
        blank = (missing, np.full(len(missing), np.nan), np.zeros(len(missing)), np.full(len(missing), -1))
        grams[n - 1] = [np.concatenate(pair) for pair in zip(grams[n - 1], blank, strict=True)]
    if added and notes is not None:
        notes.append(f"{path}: {added} context(s) of n-grams were missing; kept as SRILM does "
                     "(each n-gram with its own context, backoff 1)")
    return {n: [columns] for n, columns in grams.items()}


def _add_order(model: NGramLM, chunks, n: int, tokens: tuple[str, ...], data: np.ndarray, path,
               fill: bool) -> None:
    """Append order n to `model` (orders 1..n-1) in key order; ArpaError: an orphan n-gram or a repeat."""
    lower = NGramLM(model.vocab_size, model.keys[:], model.log10_prob[:], model.log10_backoff[:], [])
    parts = []
    for ids, prob_n, backoff_n, line_starts in chunks:
        context = lower.gram_ids(ids[:, :-1])
        if np.any(context < 0):
            row = int(np.flatnonzero(context < 0)[0])
            words = " ".join(tokens[i] for i in ids[row])
            raise ArpaError(f"{path}: line {line_of(data, int(line_starts[row]))}: the {n}-gram {words!r} has no "
                            f"context {words.rsplit(' ', 1)[0]!r}; re-prune keeping contexts, or --orphans keep")
        parts.append((context * model.vocab_size + ids[:, -1], prob_n, backoff_n, line_starts, ids))
    key, prob, backoff, line_starts, ids = (np.concatenate(column) for column in zip(*parts, strict=True))
    order_of = np.argsort(key, kind="stable")
    key, line_starts = key[order_of], line_starts[order_of]
    twice = np.flatnonzero(key[1:] == key[:-1])
    if len(twice):
        first, second = sorted(int(line_starts[twice[0] + k]) for k in (0, 1))
        raise ArpaError(f"{path}: line {line_of(data, second)}: an {n}-gram listed twice (also line {line_of(data, first)})")
    model.keys.append(key)
    model.log10_prob.append(prob[order_of])
    model.log10_backoff.append(backoff[order_of])
    if fill:
        _fill_blank_probabilities(lower, ids[order_of], model.log10_prob[n - 1])
