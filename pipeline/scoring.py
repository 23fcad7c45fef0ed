"""One scoring path. In: any model and a token stream. Out: the natural-log probability of every
non-`<s>` token (words, `<unk>` and each `</s>`) in stream order, and the metrics computed from
those numbers once, for every model:

    perplexity     = exp(-(1/N) Σ_t ln p(target_t))      N = words + one </s> per sentence
    bits per token = -(1/N) Σ_t log2 p(target_t)
For causal models p is conditioned on the left context; for the bidirectional model it is
conditioned on both sides of the blank, so its perplexity is a cloze pseudo-perplexity.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.batches import IGNORE, cloze_targets, eval_columns, pad_sentences, sentences_of
from pipeline.kneser_ney import NGramLM
from pipeline.rnn import RNNLM
from pipeline.vocab import BOS_ID

LN10 = math.log(10.0)


def ngram_logprobs(model: NGramLM, stream: np.ndarray) -> np.ndarray:
    return model.log10_probs(stream) * LN10


@torch.no_grad()
def causal_logprobs(model: RNNLM, stream: np.ndarray, num_columns: int = 16, chunk: int = 128,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """ln p of every target, the hidden state carried along each column (TBPTT-style)."""
    model.eval()
    inputs, targets, positions = eval_columns(stream, num_columns)
    out = np.zeros(len(stream))
    state = None
    for start in range(0, inputs.shape[1], chunk):
        x = inputs[:, start:start + chunk].to(device)
        logits, state = model(x, state)
        y = targets[:, start:start + chunk].to(device)
        logp = -F.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=IGNORE,
                                reduction="none")
        where = positions[:, start:start + chunk]
        keep = where >= 0
        out[where[keep].numpy()] = logp.cpu()[keep].double().numpy()
    return out[np.asarray(stream) != BOS_ID]


@torch.no_grad()
def cloze_logprobs(model: RNNLM, stream: np.ndarray, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """ln p of every target given both sides of it (bidirectional model)."""
    model.eval()
    pieces = []
    sentences = sentences_of(stream)
    for start in range(0, len(sentences), batch_size):
        tokens, lengths = pad_sentences(sentences[start:start + batch_size])
        logits = model.cloze(tokens.to(device), lengths)
        targets = cloze_targets(tokens, lengths).to(device)
        logp = -F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE,
                                reduction="none").cpu()
        keep = targets.cpu() != IGNORE
        pieces.extend(logp[i][keep[i]].double().numpy() for i in range(len(tokens)))
    return np.concatenate(pieces)


def summarize(logprobs: np.ndarray) -> dict:
    """Perplexity and bits per token from natural-log probabilities of every target."""
    tokens = len(logprobs)
    nll = float(-np.sum(logprobs))
    return {"ppl": math.exp(nll / tokens), "bits_per_token": nll / tokens / math.log(2),
            "tokens": tokens}


def mle_summary(probs: np.ndarray) -> dict:
    """MLE n-grams give probability 0 to unseen events: report how often, and the perplexity
    over the tokens that got a nonzero probability (labelled as such). An infinite perplexity
    is None (JSON has no infinity)."""
    nonzero = probs > 0
    summary = {"zero_prob_rate": float(1 - nonzero.mean()), "tokens": int(len(probs)),
               "ppl": summarize(np.log(probs))["ppl"] if nonzero.all() else None}
    summary["ppl_nonzero_tokens"] = summarize(np.log(probs[nonzero]))["ppl"] if nonzero.any() else None
    return summary
