"""Tasks beyond perplexity for any LanguageModel (evaluation/models.py). In: token ids, probes.
Out: fill-in-the-blank answers, probe rows, samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.evaluation.models import LanguageModel, NgramModel, filled_in
from pipeline.neural.batches import sentences_of
from pipeline.text.vocab import BOS_ID, EOS_ID, UNK_ID

BLANK = "___"


@dataclass
class Blank:
    sentence: np.ndarray    # `<s> .. </s>` with the answer in place
    position: int           # index of the blank in sentence
    candidates: np.ndarray  # token ids, shuffled; one is the answer
    answer: int             # index of the answer in candidates


def make_blanks(stream: np.ndarray, train_stream: np.ndarray, tokens: tuple[str, ...], count: int,
                seed: int, distractors: int = 4) -> list[Blank]:
    """`count` blanks, one per sentence of `stream`, drawn with `seed`; the distractors are the
    words nearest the answer in training-frequency rank (counted a block at a time)."""
    rng = np.random.default_rng(seed)
    words = np.array([i for i, t in enumerate(tokens)   # letters, maybe inner apostrophes
                      if i > EOS_ID and t.replace("'", "").isalpha()], dtype=np.int64)
    if len(words) <= distractors:
        raise ValueError(f"{len(words)} words, too few for {distractors} evaluate.distractors; lower it")
    frequency = np.zeros(len(tokens), dtype=np.int64)
    for start in range(0, len(train_stream), 1 << 24):
        frequency += np.bincount(train_stream[start:start + (1 << 24)], minlength=len(tokens))
    by_rank = words[np.argsort(-frequency[words], kind="stable")]
    rank_of = np.full(len(tokens), -1)
    rank_of[by_rank] = np.arange(len(by_rank))
    sentences = [s for s in sentences_of(stream) if (rank_of[s] >= 0).any()]
    chosen = rng.permutation(len(sentences))[:count]
    blanks = []
    for i in chosen:
        sentence = sentences[i]
        eligible = np.flatnonzero(rank_of[sentence] >= 0)
        position = int(rng.choice(eligible))
        rank = rank_of[sentence[position]]
        near = np.argsort(np.abs(np.arange(len(by_rank)) - rank), kind="stable")
        pool = [by_rank[r] for r in near if r != rank][:distractors]
        candidates = np.array([sentence[position], *pool], dtype=np.int64)
        order = rng.permutation(len(candidates))
        blanks.append(Blank(sentence, position, candidates[order], int(np.argmin(order))))
    return blanks


def blank_correct(model: LanguageModel, blanks: list[Blank]) -> np.ndarray:
    """(len(blanks),) bool: whether the model's best candidate is each blank's answer."""
    if isinstance(model, NgramModel):   # every filled sentence in one batch
        filled = [s for b in blanks for s in filled_in(b.sentence, b.position, b.candidates)]
        chosen = model.sentence_logprobs(filled).reshape(len(blanks), -1).argmax(1)
    else:
        chosen = np.array([int(np.argmax(model.fill_logprobs(b.sentence, b.position, b.candidates)))
                           for b in blanks])
    return chosen == np.array([b.answer for b in blanks])


def encode_probe_text(text: str, encode) -> tuple[np.ndarray, int | None]:
    """`<s> .. </s>` ids of a probe text (`encode`: text -> ids) and its blank's position or None."""
    parts = text.split(BLANK)   # at most one BLANK: the probe schema and the CLI checked it
    left = list(encode(parts[0]))
    if len(parts) == 1:
        return np.array([BOS_ID, *left, EOS_ID], dtype=np.int64), None
    right = list(encode(parts[1]))
    return np.array([BOS_ID, *left, UNK_ID, *right, EOS_ID], dtype=np.int64), 1 + len(left)


def run_probe(model: LanguageModel, probe: dict, encode, tokens: tuple[str, ...],
              unknown=None) -> list[dict]:
    """Rows {"text", "logprob" (ln), "oov"} best first: the rank: sentences, or the options or
    `top` words (never `<s>`, `</s>`, `<unk>`) with "context_oov"; `unknown(text)`: its OOV words."""
    def oov(text: str) -> list[str]:
        return unknown(text.replace(BLANK, " ")) if unknown else []
    if "rank" in probe:
        sentences = [encode_probe_text(t, encode)[0] for t in probe["rank"]]
        logp = model.sentence_logprobs(sentences)
        rows = [{"text": t, "logprob": float(v), "oov": oov(t)}
                for t, v in zip(probe["rank"], logp, strict=True)]
        return sorted(rows, key=lambda r: -r["logprob"])
    sentence, position = encode_probe_text(probe["text"], encode)   # text: exactly one BLANK
    if "options" in probe:
        candidates = np.array([_single_id(o, encode) for o in probe["options"]])
        labels = list(probe["options"])
    else:
        # every word: not the sentence markers, not `<unk>` (it keeps its probability mass)
        candidates = np.arange(EOS_ID + 1, len(tokens))
        labels = [tokens[i] for i in candidates]
    open_end = bool(probe.get("open")) and model.kind == "causal"
    logp = model.fill_logprobs(sentence, position, candidates, open_end=open_end)
    best = np.argsort(-logp, kind="stable")[: int(probe.get("top", len(candidates)))]
    context = oov(probe["text"])
    return [{"text": labels[i], "logprob": float(logp[i]), "oov": oov(labels[i]),
             "context_oov": context} for i in best]


class ProbeNotApplicable(ValueError):
    """A probe the tokenizer cannot pose (a word option under `chars`); evaluate skips it."""


def _single_id(word: str, encode) -> int:
    ids = list(encode(word))
    if len(ids) != 1:
        raise ProbeNotApplicable(f"option {word!r} is {len(ids)} tokens; a fill probe fills one token")
    return int(ids[0])


def sample(model: LanguageModel, count: int, temperature: float, max_length: int,
           seed: int) -> list[np.ndarray]:
    """`count` sentences (ids without `<s>`/`</s>`) sampled token by token from p^(1/T) of a
    causal model; a recurrent one carries its state (n steps for n tokens)."""
    rng = np.random.default_rng(seed)
    prefixes = [[BOS_ID] for _ in range(count)]
    done = np.zeros(count, dtype=bool)
    state = None   # a recurrent model's state (L, count, S): one step per generated token
    for _ in range(max_length):
        live = np.flatnonzero(~done)
        if not len(live):
            break
        rows = torch.as_tensor(live)
        probs, new_state = model.next_distributions([np.array(prefixes[i]) for i in live],
                                                    None if state is None else state[:, rows])
        if new_state is not None:
            state = new_state if state is None else state.index_copy(1, rows, new_state)
        probs[:, BOS_ID] = 0
        with np.errstate(divide="ignore"):
            scaled = np.log(probs) / temperature
        probs = np.exp(scaled - scaled.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        cumulative = probs.cumsum(1)
        draws = rng.random(len(live))[:, None]
        picked = np.minimum((cumulative < draws).sum(1), probs.shape[1] - 1)
        for i, token in zip(live, picked, strict=True):
            prefixes[i].append(int(token))
            done[i] = token == EOS_ID
    return [np.array([t for t in p[1:] if t != EOS_ID]) for p in prefixes]
