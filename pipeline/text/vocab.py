"""Vocabulary. In: train tokens. Out: a `Vocab` (<unk>=0, <s>=1, </s>=2) and int32 streams
`<s> w1 .. wT </s> <s> ...` (`<s>` is context only, every other position a target)."""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np

from pipeline import files
from pipeline.text.tokenizers import TOKENIZERS, UNK, as_asked

BOS, EOS = "<s>", "</s>"
SPECIALS = (UNK, BOS, EOS)
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]

    @classmethod
    def from_counts(cls, counts: dict[str, int], min_count: int, max_size: int) -> Vocab:
        """The specials, then words counted >= min_count times, most frequent first (ties by
        spelling), at most max_size (0 = all); `counts` holds no `<s>`, `</s>` (prepare: marker_line)."""
        kept = sorted((t for t, c in counts.items() if c >= min_count and t != UNK),
                      key=lambda t: (-counts[t], t))
        return cls(SPECIALS + tuple(kept[:max_size] if max_size else kept))

    def __len__(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def encode(self, tokens) -> np.ndarray:
        """The int32 ids of the iterable `tokens` (`<unk>`'s for a word not in the vocabulary)."""
        return np.fromiter(map(self.index.get, tokens, itertools.repeat(UNK_ID)), np.int32)

    def unknown(self, tokens: list[str]) -> list[str]:
        """The tokens encode() maps to `<unk>`, each once in order (not the marker `<unk>`)."""
        return list(dict.fromkeys(t for t in tokens if t not in self.index))

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def stream(self, sentences: list[list[str]]) -> np.ndarray:
        """`<s> w.. </s>` for each sentence, concatenated, as int32 ids."""
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        return sentence_stream(self.encode(itertools.chain.from_iterable(sentences)), lengths)

    def to_json(self) -> dict:
        return {"tokens": list(self.tokens)}


# no tokenizer ever yields these inside a token (pipeline/text/tokenizers.py: they separate tokens)
_SEPARATOR_CHARACTERS = re.compile(r"[ \t\r\n\x00]")


def load_vocab(folder) -> Vocab:
    """The Vocab of `folder`/vocab.json; StateError when it is not a list of distinct tokens
    after <unk>, <s>, </s>, none empty or holding a separator (space, tab, `\\r`, `\\n`, NUL)."""
    path = f"{folder}/vocab.json"
    tokens = files.read_json(path).get("tokens")
    first: dict[str, int] = {}
    if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)) or tuple(tokens[:3]) != SPECIALS:
        why = f'not a vocabulary ("tokens": strings from {", ".join(SPECIALS)})'
    elif (twice := next((i for i, t in enumerate(tokens) if first.setdefault(t, i) != i), None)) is not None:
        why = f"lists the token {tokens[twice]!r} twice (entries {first[tokens[twice]]} and {twice})"
    elif "" in first or _SEPARATOR_CHARACTERS.search("".join(tokens)):   # one search in C
        bad = next(i for i, t in enumerate(tokens) if not t or _SEPARATOR_CHARACTERS.search(t))
        why = f"entry {bad} is {tokens[bad]!r}, which no tokenizer yields"
    else:
        return Vocab(tuple(tokens))
    raise files.damaged(path, why)


def check_ids(stream: np.ndarray, vocab_size: int, path, folder) -> None:
    """StateError naming `path` (a stream of the output `folder`) unless it is whole sentences
    `<s> w.. </s> ..` of integer ids in [0, vocab_size)."""
    if stream.ndim != 1 or not np.issubdtype(stream.dtype, np.integer):
        why = f"holds a {stream.dtype} array of shape {stream.shape}, not a stream of token ids"
    elif len(stream) and (int(stream.min()) < 0 or int(stream.max()) >= vocab_size):
        why = (f"holds token ids {int(stream.min())}..{int(stream.max())}, outside the "
               f"{vocab_size:,}-token vocabulary of {folder}/vocab.json")
    elif len(stream) and stream[0] != BOS_ID:
        why = "does not start with <s> (edited, or cut)"
    elif len(stream) and stream[-1] != EOS_ID:
        why = "does not end with </s> (cut mid-sentence, or edited)"
    else:
        ends = np.flatnonzero(stream == EOS_ID)
        starts = int(np.count_nonzero(stream == BOS_ID))
        if starts == len(ends) and np.all(stream[ends[:-1] + 1] == BOS_ID):
            return
        why = (f"is not whole sentences: {starts:,} <s> and {len(ends):,} </s> that do not pair "
               "up (cut, or edited)")
    raise files.damaged(path, why)


def sentence_bounds(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of every sentence's `<s>` and `</s>` in a stream of whole sentences."""
    return np.flatnonzero(stream == BOS_ID), np.flatnonzero(stream == EOS_ID)


def encode_text(text: str, tokens: tuple[str, ...] | None = None, tokenizer: str = "whitespace",
                lowercase: bool = False, unk: str = UNK, query: bool = False,
                markers: tuple[str, ...] = (BOS, EOS)):
    """(tokens (None: the specials, then words in order of first use), stream int32, True where a
    target is `<unk>`) of `text` as prepare reads it (`query`: `\\v`, `\\f` separate too); a token
    read as one of `markers` stays in its line as ~id (negative): the caller refuses, skips or scores it."""
    kind = TOKENIZERS[tokenizer]
    if kind.as_written is not None:    # the whole text at once: splitting and hashing in C
        raw, codes, per_line = kind.as_written(text.encode("utf-8"), query)
        distinct = as_asked(raw, lowercase, unk)   # '</S>' lowercased is '</s>'
    else:
        distinct, codes, per_line = kind.block(text, lowercase, unk)
    if not kind.blank_lines_are_sentences:
        per_line = per_line[per_line > 0]
    if tokens is None:
        tokens = SPECIALS + tuple(dict.fromkeys(t for t in distinct if t not in SPECIALS))
    ids = Vocab(tokens).encode(distinct)
    marked = np.fromiter((t in markers for t in distinct), bool, len(distinct))
    ids[marked] = ~ids[marked]
    stream = sentence_stream(ids[codes], per_line)
    return tokens, stream, stream[stream != BOS_ID] == UNK_ID


def marker_line(distinct: list[str], codes: np.ndarray, per_line: np.ndarray) -> tuple[int, str] | None:
    """(line from 0, token) of the first `<s>` or `</s>` in a tokenizer's Block, or None."""
    marked = np.fromiter((t in (BOS, EOS) for t in distinct), bool, len(distinct))
    if not marked.any():
        return None
    first = int(np.argmax(marked[codes]))
    return int(np.searchsorted(np.cumsum(per_line), first, side="right")), distinct[codes[first]]


def sentence_stream(ids: np.ndarray, per_line: np.ndarray) -> np.ndarray:
    """The stream `<s> w.. </s>` (int32) of word ids `ids` cut into sentences of `per_line` words."""
    out = np.empty(len(ids) + 2 * len(per_line), dtype=np.int32)
    heads = np.cumsum(per_line + 2) - (per_line + 2)
    words = np.ones(len(out), dtype=bool)
    words[heads] = words[heads + per_line + 1] = False
    out[heads], out[heads + per_line + 1] = BOS_ID, EOS_ID
    out[words] = ids
    return out
