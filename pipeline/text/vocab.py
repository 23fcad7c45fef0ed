"""Vocabulary. In: train sentences. Out: a `Vocab` with fixed specials and token-id streams.

Specials have fixed ids: <unk>=0, <s>=1, </s>=2. A split is stored as one flat stream
`<s> w1 .. wT </s> <s> ...` (int32): `<s>` is context only, every other position is a target.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.text.tokenizers import TOKENIZERS, UNK, as_asked

BOS, EOS = "<s>", "</s>"
SPECIALS = (UNK, BOS, EOS)
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]

    @classmethod
    def build(cls, sentences: list[list[str]], min_count: int, max_size: int) -> Vocab:
        """Train words seen >= min_count times, most frequent first (ties by spelling), at most
        max_size of them (0 = all), after the specials. `<unk>` in the text is the special
        `<unk>` (the closed-vocabulary convention of PTB and WikiText); `<s>` and `</s>` are
        refused (ValueError), as by KenLM."""
        return cls.from_counts(Counter(token for sentence in sentences for token in sentence),
                               min_count, max_size)

    @classmethod
    def from_counts(cls, counts: dict[str, int], min_count: int, max_size: int) -> Vocab:
        """`build` from the train words' counts ({word: count}); the same rules and errors."""
        counts = dict(counts)
        for special in (BOS, EOS):
            if special in counts:
                raise ValueError(f"the corpus contains the reserved token {special!r}; "
                                 "remove or rename it before preparing")
        counts.pop(UNK, None)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(SPECIALS + tuple(kept[:max_size] if max_size else kept))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def encode(self, tokens: list[str]) -> np.ndarray:
        index = self.index
        return np.array([index.get(t, UNK_ID) for t in tokens], dtype=np.int32)

    def unknown(self, tokens: list[str]) -> list[str]:
        """The tokens that are not in the vocabulary (each once, in order), which encode() maps
        to `<unk>`; the marker `<unk>` itself is not listed."""
        index = self.index
        return list(dict.fromkeys(t for t in tokens if t not in index))

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def stream(self, sentences: list[list[str]]) -> np.ndarray:
        """`<s> w.. </s>` for each sentence, concatenated, as int32 ids (hash lookups in C)."""
        import pandas as pd  # lazily: `lmpipe ngram` starts without it
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        ids = pd.Index(self.tokens).get_indexer(list(itertools.chain.from_iterable(sentences)))
        ids[ids < 0] = UNK_ID
        starts = np.cumsum(lengths + 2) - (lengths + 2)     # where each <s> goes
        out = np.empty(int(lengths.sum()) + 2 * len(sentences), dtype=np.int32)
        words = np.ones(len(out), dtype=bool)
        words[starts] = words[starts + lengths + 1] = False
        out[starts], out[starts + lengths + 1] = BOS_ID, EOS_ID
        out[words] = ids
        return out

    def to_json(self) -> dict:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        tokens = tuple(data["tokens"])
        if tokens[:3] != SPECIALS:
            raise ValueError(f"vocab.json must start with {SPECIALS}, got {tokens[:3]}")
        return cls(tokens)


# no tokenizer ever yields these inside a token (pipeline/text/tokenizers.py: they separate tokens)
_SEPARATOR_CHARACTERS = re.compile(r"[ \t\r\n\x00]")


def load_vocab(folder) -> Vocab:
    """The Vocab of `folder`/vocab.json (data/prepared). Raises errors.StateError naming the
    file and the fix when it is missing, damaged, or not a vocabulary: "tokens" must be a list
    of strings beginning with <unk>, <s>, </s>, each token listed once, none empty and none
    holding a space, tab, `\r`, `\n` or NUL (which every tokenizer treats as separators, so no
    prepared vocabulary holds them)."""
    from pipeline import files
    path = f"{folder}/vocab.json"
    tokens = files.read_json(path, folder).get("tokens")
    if (not isinstance(tokens, list) or tuple(tokens[:3]) != SPECIALS
            or not all(isinstance(t, str) for t in tokens)):
        raise files.StateError(f"{path}: not a vocabulary (\"tokens\": a list of strings "
                               f"beginning with {', '.join(SPECIALS)}); {files.restore_hint(folder)}")
    unique = set(tokens)
    why = None
    if len(unique) != len(tokens):
        first = {}
        for i, token in enumerate(tokens):
            if token in first:
                why = f"lists the token {token!r} twice (entries {first[token]} and {i})"
                break
            first[token] = i
    elif "" in unique or _SEPARATOR_CHARACTERS.search("".join(tokens)):   # one search in C
        bad = next(i for i, t in enumerate(tokens) if not t or _SEPARATOR_CHARACTERS.search(t))
        why = (f"entry {bad} is {'an empty token' if not tokens[bad] else repr(tokens[bad])}, "
               "which no tokenizer yields (blank, or holding a space, tab, line break or NUL)")
    if why:
        raise files.StateError(f"{path}: damaged, {why}; {files.restore_hint(folder)}")
    return Vocab(tuple(tokens))


def check_ids(stream: np.ndarray, vocab_size: int, path, folder) -> None:
    """Refuse a token stream (the .npy at `path` of the DVC output `folder`) that does not fit
    the vocabulary of `vocab_size` tokens or is not whole sentences `<s> w.. </s> <s> ..`: not
    whole numbers, an id outside [0, vocab_size), a first token that is not <s>, a last token
    that is not </s> (cut mid-sentence), or <s> and </s> that do not alternate. Raises
    errors.StateError naming the file and the fix. Vectorised: one pass over the stream."""
    from pipeline import files
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
    raise files.StateError(f"{path}: {why}; {files.restore_hint(folder)}")


def sentence_bounds(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (the `<s>` position) and end (the `</s>` position) of every sentence in a stream
    of whole sentences (check_ids refuses any other where a stream is read)."""
    return np.flatnonzero(stream == BOS_ID), np.flatnonzero(stream == EOS_ID)


def split_stats(stream: np.ndarray) -> dict:
    """Tokens predicted (words + one </s> per sentence), types, OOV count and rate."""
    targets = stream[stream != BOS_ID]
    oov = int(np.sum(targets == UNK_ID))
    return {"sentences": int(np.sum(stream == BOS_ID)), "tokens": int(len(targets)),
            "types": int(len(np.unique(targets))), "oov": oov,
            "oov_rate": oov / max(len(targets), 1)}


def encode_text(text: str, tokens: tuple[str, ...] | None = None, tokenizer: str = "whitespace",
                lowercase: bool = False, unk: str = UNK, query: bool = False):
    """Text as `lmpipe ngram build/query` read it, by the rules `prepare` uses for the same
    tokenizer (pipeline/text/tokenizers.py): by default KenLM's — lines end at `\n`, words are
    separated by space, tab and `\r`, a blank line is an empty sentence, a literal `unk` is the
    unknown word. `<s>` and `</s>` in the text are refused (ValueError), as by KenLM. `query`:
    also separate words at `\v` and `\f`, as KenLM's query does when it scores text.
    tokens=None builds the vocabulary: the specials, then every word in order of first use.
    Returns (tokens, stream `<s> w.. </s> ...` int32, oov flag of every target, i.e. of every
    non-`<s>` position: True where the target is `<unk>`)."""
    kind = TOKENIZERS[tokenizer]
    if kind.as_written is not None:    # the whole text at once: splitting and hashing in C
        distinct, codes, per_line = kind.as_written(text.encode("utf-8"), query)
        for special in (BOS, EOS):
            if special in distinct:
                raise ValueError(f"the text contains the reserved token {special!r}; remove or rename it")
        asked = as_asked(distinct, lowercase, unk)
        for special in (BOS, EOS) if lowercase else ():   # '</S>' would end a sentence mid-line
            if special in asked:
                raise ValueError(f"the text contains {distinct[asked.index(special)]!r}, which "
                                 f"lowercasing makes the reserved token {special!r}; remove or rename it")
        distinct = asked
    else:
        distinct, codes, per_line = kind.block(text, lowercase, unk)   # vectorised
    if not kind.blank_lines_are_sentences:
        per_line = per_line[per_line > 0]
    if tokens is None:
        tokens = SPECIALS + tuple(dict.fromkeys(t for t in distinct if t not in SPECIALS))
    index = {t: i for i, t in enumerate(tokens)}
    mapping = np.fromiter((index.get(t, UNK_ID) for t in distinct), np.int32, len(distinct))
    stream = sentence_stream(mapping[codes], per_line)
    return tokens, stream, stream[stream != BOS_ID] == UNK_ID


def sentence_stream(ids: np.ndarray, per_line: np.ndarray) -> np.ndarray:
    """The stream `<s> w.. </s>` (int32, (len(ids) + 2 * len(per_line),)) of word ids `ids`
    cut into sentences of `per_line` words."""
    out = np.empty(len(ids) + 2 * len(per_line), dtype=np.int32)
    heads = np.cumsum(per_line + 2) - (per_line + 2)
    words = np.ones(len(out), dtype=bool)
    words[heads] = words[heads + per_line + 1] = False
    out[heads], out[heads + per_line + 1] = BOS_ID, EOS_ID
    out[words] = ids
    return out
