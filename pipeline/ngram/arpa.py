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

from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import numpy as np

from pipeline.ngram.counting import NgramCounts
from pipeline.ngram.kneser_ney import NGramLM
from pipeline.text.vocab import SPECIALS


class ArpaError(ValueError):
    """The file is not a readable ARPA model; the message names the file and the line."""


def _digit_table(width: int, leading_zeros: bool) -> np.ndarray:
    """(10**width, width) uint8: the decimal text of 0..10**width-1; without leading zeros those
    bytes are 0 ("no byte"), but the units digit always shows."""
    numbers = np.arange(10**width)
    powers = 10 ** np.arange(width - 1, -1, -1)
    table = (ord("0") + (numbers[:, None] // powers) % 10).astype(np.uint8)
    if not leading_zeros:
        table[(numbers[:, None] < powers) & (powers > 1)] = 0
    return table


_INTEGER, _THREE, _FOUR = _digit_table(3, False), _digit_table(3, True), _digit_table(4, True)


def _number_bytes(values: np.ndarray) -> np.ndarray:
    """Fixed-point text of log10 values with 7 decimals, as a (M, 12) uint8 matrix where 0 means
    "no byte" (dropped later): sign, up to 3 integer digits, '.', 7 decimals by table lookup.
    Formatting millions of floats one by one is what makes ARPA writing slow. -inf and anything
    below -999 is written as -99, the ARPA convention for "never"."""
    values = np.where(np.isfinite(values) & (values > -999.0), values, -99.0)
    scaled = np.rint(np.abs(values) * 1e7).astype(np.int64)
    integer, fraction = np.divmod(scaled, 10**7)
    out = np.empty((len(values), 12), dtype=np.uint8)
    out[:, 0] = np.where((values < 0) & (scaled > 0), ord("-"), 0)
    out[:, 1:4] = _INTEGER[integer]
    out[:, 4] = ord(".")
    out[:, 5:8] = _THREE[fraction // 10000]
    out[:, 8:12] = _FOUR[fraction % 10000]
    return out


def _word_bytes(tokens: tuple[str, ...]) -> np.ndarray:
    """(V, longest) uint8 matrix of UTF-8 words, 0-padded."""
    encoded = [t.encode("utf-8") for t in tokens]
    matrix = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.uint8)
    for i, word in enumerate(encoded):
        matrix[i, : len(word)] = np.frombuffer(word, dtype=np.uint8)
    return matrix


def _column(byte: str, rows: int) -> np.ndarray:
    return np.full((rows, 1), ord(byte), dtype=np.uint8)


def _lines(model: NGramLM, counts: NgramCounts, words: np.ndarray, n: int, start: int,
           stop: int) -> bytes:
    """ARPA lines of the order-n n-grams start..stop, as bytes."""
    ids = counts.words(n, start, stop)
    rows = len(ids)
    prob = model.log10_prob[n - 1][start:stop]
    if n == 1 and start <= 1 < stop:
        prob = prob.copy()
        prob[1 - start] = 0.0  # <s>: context only, written as lmplz does
    parts = [_number_bytes(prob), _column("\t", rows), words[ids[:, 0]]]
    for column in range(1, n):
        parts += [_column(" ", rows), words[ids[:, column]]]
    if n < model.order:
        parts += [_column("\t", rows), _number_bytes(model.log10_backoff[n - 1][start:stop])]
    parts.append(_column("\n", rows))
    lines = np.concatenate(parts, axis=1)
    return lines[lines != 0].tobytes()


def write(model: NGramLM, counts: NgramCounts, tokens: tuple[str, ...], out: BinaryIO,
          chunk: int = 250_000, threads: int = 2) -> None:
    """Write `model` (estimated from `counts`) as ARPA text (UTF-8) to a binary file, in the
    counts' sorted order. Lines are assembled as byte matrices, `chunk` n-grams at a time, their
    0 bytes dropped; numpy releases the GIL, so `threads` chunks are formatted at once."""
    words = _word_bytes(tokens)
    header = "\\data\\\n" + "".join(f"ngram {n}={len(k)}\n" for n, k in enumerate(model.keys, 1))
    out.write(header.encode())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for n in range(1, model.order + 1):
            out.write(f"\n\\{n}-grams:\n".encode())
            size = len(model.keys[n - 1])
            pending = [pool.submit(_lines, model, counts, words, n, start, start + chunk)
                       for start in range(0, size, chunk)]
            for future in pending:
                out.write(future.result())
    out.write(b"\n\\end\\\n")


def _fixed(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The byte spans data[starts:ends] as a (rows, width) uint8 matrix, 0-padded: rows of a
    sliding-window view, so no index matrix is built. `data` must end with `width` zero bytes."""
    matrix = np.lib.stride_tricks.sliding_window_view(data, width)[starts]
    matrix[np.arange(width) >= (ends - starts)[:, None]] = 0
    return matrix


_PADDING = 1024


def _floats(data, starts, ends) -> np.ndarray:
    return _fixed(data, starts, ends, 24).view("S24").ravel().astype(np.float64)


def _hash(matrix: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of a 0-padded byte matrix whose width is a multiple of 8."""
    words = matrix.view(np.uint64)
    value = np.full(len(words), 0xCBF29CE484222325, dtype=np.uint64)
    for column in range(words.shape[1]):
        value ^= words[:, column]
        value *= np.uint64(0x100000001B3)
        value ^= value >> np.uint64(29)
    return value


def _parse(data: np.ndarray, lo: int, hi: int, n: int, path, chunk: int = 1_000_000):
    """Yield (log10 p, word spans (rows, n, 2), log10 backoff) of the lines in data[lo:hi] (one
    section), in chunks, without a Python object per line. Positions index `data`."""
    section = data[lo:hi]
    ends = np.flatnonzero(section == 10) + lo
    starts = np.concatenate([[lo], ends[:-1] + 1])
    nonblank = ends > starts
    starts, ends = starts[nonblank], ends[nonblank]
    tabs = np.flatnonzero(section == 9) + lo
    spaces = np.flatnonzero(section == 32) + lo
    for lo in range(0, len(starts), chunk):
        s, e = starts[lo:lo + chunk], ends[lo:lo + chunk]
        first = np.searchsorted(tabs, s)
        if first.max(initial=0) >= len(tabs) or np.any(tabs[np.minimum(first, len(tabs) - 1)] >= e):
            raise ArpaError(f"{path}: a line of the {n}-grams section has no tab after its probability")
        tab1 = tabs[first]
        nxt = np.minimum(first + 1, len(tabs) - 1)
        has_backoff = (first + 1 < len(tabs)) & (tabs[nxt] < e)
        tab2 = np.where(has_backoff, tabs[nxt], e)
        prob = _floats(data, s, tab1)
        backoff = np.zeros(len(s))
        if has_backoff.any():
            backoff[has_backoff] = _floats(data, tab2[has_backoff] + 1, e[has_backoff])
        lo_space, hi_space = np.searchsorted(spaces, tab1), np.searchsorted(spaces, tab2)
        if np.any(hi_space - lo_space != n - 1):
            raise ArpaError(f"{path}: a line of the {n}-grams section does not have {n} words")
        inner = spaces[lo_space[:, None] + np.arange(n - 1)] if n > 1 else np.zeros((len(s), 0), int)
        word_starts = np.concatenate([tab1[:, None] + 1, inner + 1], axis=1)
        word_ends = np.concatenate([inner, tab2[:, None]], axis=1)
        yield prob, np.stack([word_starts, word_ends], axis=2), backoff


def read(path) -> tuple[NGramLM, tuple[str, ...]]:
    """Load an ARPA file (plain or .gz). Returns the model and its vocabulary. Parsing works on
    the bytes with numpy (floats and words as fixed-width byte strings), so a model of millions
    of n-grams loads without a Python object per n-gram."""
    import gzip
    raw = gzip.open(path).read() if str(path).endswith(".gz") else open(path, "rb").read()
    first = raw.find(b"\n\\1-grams:\n")
    header = raw[:max(first, 0)]
    declared = [int(line.split(b"=")[1]) for line in header.splitlines() if line.startswith(b"ngram ")]
    if b"\\data\\" not in header or not declared:
        raise ArpaError(f"{path}: not an ARPA file (no \\data\\ header with ngram counts)")
    order = len(declared)
    bounds, position = [], len(header) + len(b"\n\\1-grams:\n")
    for n in range(2, order + 2):
        marker = f"\n\\{n}-grams:\n".encode() if n <= order else b"\n\\end\\"
        found = raw.find(marker, position)
        if found < 0:
            raise ArpaError(f"{path}: the header declares {order} orders but {marker.strip().decode()} is missing")
        bounds.append((position, found + 1))
        position = found + len(marker)
    data = np.zeros(len(raw) + _PADDING, dtype=np.uint8)  # zero tail for the sliding windows
    data[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    del raw
    # 1-grams: the vocabulary, specials first
    (prob1, spans1, backoff1), = _parse(data, *bounds[0], 1, path, chunk=2**62)
    unigrams = [data[a:b].tobytes().decode("utf-8") for a, b in spans1[:, 0]]
    if len(unigrams) != declared[0]:
        raise ArpaError(f"{path}: 1-grams section has {len(unigrams)} entries, header says {declared[0]}")
    tokens = tuple(SPECIALS) + tuple(w for w in unigrams if w not in SPECIALS)
    vocab_size = len(tokens)
    width = -(-max(len(t.encode("utf-8")) for t in tokens) // 8) * 8
    if width > _PADDING:
        raise ArpaError(f"{path}: a word is longer than {_PADDING} bytes")

    def hashes(words: list[str]) -> np.ndarray:
        return _hash(np.array([w.encode("utf-8") for w in words], dtype=f"S{width}")
                     .view(np.uint8).reshape(len(words), width))
    vocab_hash = hashes(list(tokens))
    by_hash = np.argsort(vocab_hash)
    sorted_hash = vocab_hash[by_hash]
    if np.any(sorted_hash[1:] == sorted_hash[:-1]):
        raise ArpaError(f"{path}: two vocabulary words share a 64-bit hash; please report this")
    unigram_ids = by_hash[np.searchsorted(sorted_hash, hashes(unigrams))]
    prob = np.full(vocab_size, -100.0)   # a vocabulary word without a 1-gram entry (<unk>): -100
    prob[unigram_ids] = prob1
    prob[1] = -np.inf                    # <s> is context only
    backoff = np.zeros(vocab_size)
    backoff[unigram_ids] = backoff1
    keys, probs, backoffs = [np.arange(vocab_size, dtype=np.int64)], [prob], [backoff]
    for n in range(2, order + 1):
        lo, hi = bounds[n - 1]
        key_parts, prob_parts, backoff_parts = [], [], []
        for prob_n, spans, backoff_n in _parse(data, lo, hi, n, path):
            ids = np.empty(spans.shape[:2], dtype=np.int64)
            for column in range(n):
                word_hash = _hash(_fixed(data, spans[:, column, 0], spans[:, column, 1], width))
                where = np.minimum(np.searchsorted(sorted_hash, word_hash), vocab_size - 1)
                if np.any(sorted_hash[where] != word_hash):
                    raise ArpaError(f"{path}: a {n}-gram uses a word missing from the 1-grams")
                ids[:, column] = by_hash[where]
            prefix = ids[:, 0]
            for m in range(2, n):
                prefix = np.searchsorted(keys[m - 1], prefix * vocab_size + ids[:, m - 1])
            key_parts.append(prefix * vocab_size + ids[:, -1])
            prob_parts.append(prob_n)
            backoff_parts.append(backoff_n)
        key = np.concatenate(key_parts)
        if len(key) != declared[n - 1]:
            raise ArpaError(f"{path}: {n}-grams section has {len(key)} entries, header says {declared[n - 1]}")
        order_of = np.argsort(key, kind="stable")
        keys.append(key[order_of])
        probs.append(np.concatenate(prob_parts)[order_of])
        backoffs.append(np.concatenate(backoff_parts)[order_of])
    return NGramLM(vocab_size, keys, probs, backoffs, [(0.0, 0.0, 0.0)] * order), tokens
