"""Vocabulary. In: train sentences. Out: a `Vocab` with fixed specials and token-id streams.

Specials have fixed ids: <unk>=0, <s>=1, </s>=2. A split is stored as one flat stream
`<s> w1 .. wT </s> <s> ...` (int32): `<s>` is context only, every other position is a target.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SPECIALS = (UNK, BOS, EOS)
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]

    @classmethod
    def build(cls, sentences: list[list[str]], min_count: int, max_size: int) -> Vocab:
        """Train words seen >= min_count times, most frequent first (ties by spelling), at most
        max_size of them, after the specials."""
        counts = Counter(token for sentence in sentences for token in sentence)
        for special in SPECIALS:
            if special in counts:
                raise ValueError(f"the corpus contains the reserved token {special!r}; "
                                 "remove or rename it before preparing")
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(SPECIALS + tuple(kept[:max_size]))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def encode(self, tokens: list[str]) -> np.ndarray:
        index = self.index
        return np.array([index.get(t, UNK_ID) for t in tokens], dtype=np.int32)

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def stream(self, sentences: list[list[str]]) -> np.ndarray:
        """`<s> w.. </s>` for each sentence, concatenated, as int32 ids."""
        index = self.index
        flat = []
        for sentence in sentences:
            flat.append(BOS_ID)
            flat.extend(index.get(t, UNK_ID) for t in sentence)
            flat.append(EOS_ID)
        return np.array(flat, dtype=np.int32)

    def to_json(self) -> dict:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        tokens = tuple(data["tokens"])
        if tokens[:3] != SPECIALS:
            raise ValueError(f"vocab.json must start with {SPECIALS}, got {tokens[:3]}")
        return cls(tokens)


def sentence_bounds(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (the `<s>` position) and end (the `</s>` position) of every sentence in a stream."""
    starts = np.flatnonzero(stream == BOS_ID)
    ends = np.flatnonzero(stream == EOS_ID)
    if len(starts) != len(ends) or np.any(ends <= starts):
        raise ValueError("malformed token stream: <s> and </s> do not pair up")
    return starts, ends


def split_stats(stream: np.ndarray) -> dict:
    """Tokens predicted (words + one </s> per sentence), types, OOV count and rate."""
    targets = stream[stream != BOS_ID]
    oov = int(np.sum(targets == UNK_ID))
    return {"sentences": int(np.sum(stream == BOS_ID)), "tokens": int(len(targets)),
            "types": int(len(np.unique(targets))), "oov": oov,
            "oov_rate": oov / max(len(targets), 1)}
