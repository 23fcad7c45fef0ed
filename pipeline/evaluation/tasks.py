"""Tasks beyond perplexity for any LanguageModel (evaluation/models.py). In: token ids, probes.
Out: fill-in-the-blank answers, probe rows, samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.evaluation.models import LanguageModel
from pipeline.neural.batches import sentences_of
from pipeline.text.vocab import BOS_ID, EOS_ID, UNK_ID

BLANK = "___"


@dataclass
class Blank:
    sentence: np.ndarray    # `<s> .. </s>` with the answer in place
    position: int           # index of the blank in sentence
    candidates: np.ndarray  # token ids, shuffled; one is the answer
    answer: int             # index of the answer in candidates


def make_blanks(stream: np.ndarray, frequency: np.ndarray, tokens: tuple[str, ...], count: int,
                seed: int, distractors: int = 4) -> list[Blank]:
    """`count` blanks drawn by `seed`, one per sentence; distractors: nearest the answer in frequency rank."""
    rng = np.random.default_rng(seed)
    words = np.array([i for i, t in enumerate(tokens)   # letters, maybe inner apostrophes
                      if i > EOS_ID and t.replace("'", "").isalpha()], dtype=np.int64)
    if len(words) <= distractors:
        raise ValueError(f"{len(words)} words, too few for {distractors} evaluate.distractors; lower it")
    by_rank = words[np.argsort(-frequency[words], kind="stable")]
    rank_of = np.full(len(tokens), -1)
    rank_of[by_rank] = np.arange(len(by_rank))
    sentences = [s for s in sentences_of(stream) if (rank_of[s] >= 0).any()]
    if not sentences:   # the fill-in-the-blank accuracy would have no units to resample
        raise ValueError("no sentence of test.npy holds a vocabulary word to blank out; "
                         "enlarge split.test or lower vocab.min_count")
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
    logp = model.fill_logprobs([(b.sentence, b.position, b.candidates) for b in blanks])
    return np.array([np.argmax(scores) for scores in logp]) == np.array([b.answer for b in blanks])


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
    """Rows {"text", "logprob" (ln), "oov"} best first: rank's sentences, or the options or `top`
    words (never `<s>`, `</s>`, `<unk>`) with "context_oov"; an option of many tokens: {"skipped"}."""
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
        ids = [list(encode(o)) for o in probe["options"]]
        for option, option_ids in zip(probe["options"], ids, strict=True):
            if len(option_ids) != 1:   # e.g. a word option under corpus.tokenizer chars
                return [{"skipped": f"option {option!r} is {len(option_ids)} tokens; a fill probe "
                                    "fills one token"}]
        candidates = np.array([i[0] for i in ids], dtype=np.int64)
        labels = list(probe["options"])
    else:
        candidates = np.arange(EOS_ID + 1, len(tokens))
        labels = [tokens[i] for i in candidates]
    open_end = bool(probe.get("open")) and model.kind == "causal"
    logp = model.fill_logprobs([(sentence, position, candidates)], open_end=open_end)[0]
    best = np.argsort(-logp, kind="stable")[: int(probe.get("top", len(candidates)))]
    context = oov(probe["text"])
    return [{"text": labels[i], "logprob": float(logp[i]), "oov": oov(labels[i]),
             "context_oov": context} for i in best]


def sample(model: LanguageModel, count: int, temperature: float, max_length: int,
           seed: int) -> list[np.ndarray]:
    """`count` sentences (ids without `<s>`/`</s>`) sampled token by token from a causal p^(1/T)."""
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
