"""Tokens (docs/internals.md). In: decoded text of whole lines (ended only at `\\n`, KenLM's rule).
Out: each line's tokens by TOKENIZERS[corpus.tokenizer] (whitespace: as written between lmplz's
delimiters; a blank line is a sentence). `corpus.unk` is the vocabulary's `<unk>`, never split."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SEPARATORS = re.compile(r"[ \t\r]+")   # lmplz's delimiters; NUL is refused when decoding
SPACE = "▁"
UNK = "<unk>"     # the vocabulary's unknown word (id 0, pipeline/text/vocab.py)


# (distinct tokens by first use, each token's index in them (int32), tokens per line (int64))
Block = tuple[list[str], np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Tokenizer:
    """One `corpus.tokenizer`: `block(text, lowercase, unk)` -> the `Block` of whole lines (`unk` as
    `<unk>`); `line` (else by `block`); `as_written(utf8, query)`: a `Block` before `unk`, lowercasing."""
    block: Callable[[str, bool, str], Block]
    line: Callable[[str, bool, str], list[str]] | None = None
    blank_lines_are_sentences: bool = False
    tokens_are_words: bool = True
    as_written: Callable[[bytes, bool], Block] | None = None


def tokenize(line: str, tokenizer: str = "words", lowercase: bool = True,
             unk: str = UNK) -> list[str]:
    """Tokens of one line by TOKENIZERS[tokenizer] (no `<s>`/`</s>`; a `\\n` in it: a space)."""
    kind = TOKENIZERS[tokenizer]
    if kind.line is not None:
        return kind.line(line, lowercase, unk)
    distinct, codes, _ = kind.block(line.replace("\n", " ") + "\n", lowercase, unk)
    return [distinct[i] for i in codes]


def as_asked(tokens: list[str], lowercase: bool, unk: str) -> list[str]:
    """`tokens` with the marker `unk` as `<unk>`, lowercased (but `<unk>`) when asked."""
    return [UNK if t in (unk, UNK) else t.lower() if lowercase else t for t in tokens]


def _whitespace_line(line: str, lowercase: bool, unk: str) -> list[str]:   # `\n` inside: no separator
    return as_asked([t for t in SEPARATORS.split(line) if t], lowercase, unk)


def _whitespace_block(text: str, lowercase: bool, unk: str) -> Block:
    distinct, codes, per_line = whitespace_words(text.encode("utf-8"))
    return as_asked(distinct, lowercase, unk), codes, per_line


def _code_points(text: str, lowercase: bool, marker: str = "") -> tuple[str, np.ndarray, np.ndarray]:
    """(`text` ended by `\\n`, NFKC, a whole-word `marker` as NUL, lowercased when asked; its code
    points (uint32); their classes)."""
    if not text.endswith("\n"):   # a last line without its line end
        text += "\n"
    text = unicodedata.normalize("NFKC", text)
    if marker and marker in text:
        text = re.sub(r"(?<!\S)" + re.escape(marker) + r"(?!\S)", "\x00", text)
    if lowercase:
        text = text.lower()
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return text, points, code_point_classes()[points]


def per_line(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The sum of `values` (one per code point or byte `points` of whole lines) over each line."""
    return np.diff(np.cumsum(values, dtype=np.int64)[points == 10], prepend=0)


def utf8_widths(points: np.ndarray) -> np.ndarray:
    """The UTF-8 bytes of each code point (int8)."""
    return 1 + (points >= 0x80).astype(np.int8) + (points >= 0x800) + (points >= 0x10000)


def _chars_block(text: str, lowercase: bool, unk: str) -> Block:
    """Every non-space character; a run of spaces inside a line: one SPACE."""
    text, points, kind = _code_points(text, lowercase)
    solid = kind != SPACE_CLASS
    edges = np.diff((~solid & (points != 10)).view(np.int8), prepend=0, append=0)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)   # of each space run
    keep = np.zeros(len(points), dtype=bool)   # a run between two solid characters (points[-1]: \n)
    keep[starts[solid[starts - 1] & solid[ends]]] = True
    token = solid | keep
    import pyarrow as pa
    import pyarrow.compute as pc
    encoded = pc.dictionary_encode(pa.array(np.where(keep, ord(SPACE), points)[token]))
    return [chr(v) for v in encoded.dictionary.to_pylist()], _buffer(encoded.indices), \
        per_line(token, points)


def _words_block(text: str, lowercase: bool, unk: str) -> Block:
    r"""re's `[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_` tokens, the marker `unk` (as NUL) as `<unk>`."""
    text, points, kind = _code_points(text, lowercase, unk)
    word = kind == WORD_CLASS
    inner = points == 39          # an apostrophe between two word characters
    inner[0] = inner[-1] = False
    inner[1:-1] &= word[:-2] & word[2:]
    word |= inner
    other = (kind == OTHER_CLASS) & ~inner
    head = word.copy()
    head[1:] &= ~word[:-1]
    first = head | other
    token = word | other
    utf8 = utf8_widths(points)
    kept = np.cumsum(np.where(token, utf8, 0))   # UTF-8 bytes kept up to each code point
    offsets = np.concatenate([[0], kept])[np.append(np.flatnonzero(first), len(points))]
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    distinct, codes = _dictionary(offsets, data[np.repeat(token, utf8)])
    if "\x00" in distinct:
        distinct[distinct.index("\x00")] = UNK
    return distinct, codes, per_line(first, points)


WORD_CLASS, SPACE_CLASS, OTHER_CLASS = 0, 1, 2   # code_point_classes()


@functools.cache
def code_point_classes() -> np.ndarray:
    r"""Each code point's class (uint8, (0x110000,)): WORD_CLASS `[^\W_]`, SPACE_CLASS `\s`, else OTHER_CLASS."""
    points = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    kind = np.full(0x110000, OTHER_CLASS, dtype=np.uint8)
    for pattern, value in ((r"[^\W_]", WORD_CLASS), (r"\s", SPACE_CLASS)):   # each match becomes NUL
        marked = re.sub(pattern, "\0", points).encode("utf-32-le", "surrogatepass")
        kind[np.frombuffer(marked, dtype=np.uint32) == 0] = value
    kind[0] = OTHER_CLASS     # NUL itself: `[^\w\s]`
    return kind


def _dictionary(offsets: np.ndarray, data: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(distinct strings by first use, int32 index of each) of the UTF-8 data[offsets[i]:offsets[i + 1]]."""
    import pyarrow as pa
    import pyarrow.compute as pc
    strings = pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1,
                                    [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    encoded = pc.dictionary_encode(strings)
    return encoded.dictionary.cast(pa.large_string()).to_pylist(), _buffer(encoded.indices)


def _buffer(indices) -> np.ndarray:
    """A pyarrow int32 array as numpy (its buffer: to_numpy() would import pandas)."""
    return np.frombuffer(indices.buffers()[1], dtype=np.int32, count=len(indices),
                         offset=indices.offset * 4).copy()


def whitespace_words(data: bytes, query: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The whitespace tokenizer's `Block` of valid UTF-8 bytes: words separated by space, tab
    and `\\r` (lmplz's kDelimiterSet), also `\\v` and `\\f` when `query` (KenLM's query)."""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    raw = np.frombuffer(data, dtype=np.uint8)
    separator = np.isin(raw, (32, 9, 13, 10, 11, 12) if query else (32, 9, 13, 10))
    edges = np.flatnonzero(np.diff(separator, prepend=True))   # a word's first byte, its end, ..
    starts, lengths = edges[0::2], edges[1::2] - edges[0::2]   # (data ends with a separator)
    offsets = np.concatenate([[0], np.cumsum(lengths)])         # memory per word, not per byte
    words_per_line = np.diff(np.searchsorted(starts, np.flatnonzero(raw == 10)), prepend=0)
    return *_dictionary(offsets, raw[~separator]), words_per_line


TOKENIZERS = {
    "words": Tokenizer(_words_block),
    "whitespace": Tokenizer(_whitespace_block, _whitespace_line, blank_lines_are_sentences=True,
                            as_written=whitespace_words),
    "chars": Tokenizer(_chars_block, tokens_are_words=False),
}
