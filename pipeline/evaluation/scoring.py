"""One scoring path (definitions: docs/internals.md). In: an NGramLM or RNNLM and a token stream.
Out: Scores, ln p (nats) and rank of every non-`<s>` target in stream order; sums per unit;
perplexity (cloze: pseudo-perplexity). Errors: ValueError when scores, stream and units disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.evaluation.bootstrap import bits
from pipeline.neural.batches import IGNORE, cloze_targets, eval_columns, pad_sentences, sentences_of
from pipeline.neural.rnn import RNNLM
from pipeline.ngram.counting import positions_left
from pipeline.ngram.kneser_ney import NGramLM
from pipeline.text.vocab import BOS_ID

ROWS = 64   # logits made per product: 33k words x 64 rows x 4 bytes fit a cache (>= 12: the same bits)


@dataclass
class Scores:
    logprobs: np.ndarray  # ln p(target), every non-<s> token in stream order
    ranks: np.ndarray     # words (but <s>) with a strictly higher probability than the target


def ngram_logprobs(model: NGramLM, stream: np.ndarray) -> np.ndarray:
    return model.log10_probs(stream) * math.log(10.0)


def ngram_distributions(lm: NGramLM, contexts: np.ndarray) -> np.ndarray:
    """(B, V) p(w | context) by backoff, p(<s>) = 0; contexts (B, order-1), -1 before the sentence."""
    contexts = np.asarray(contexts, dtype=np.int64).reshape(len(contexts), lm.order - 1)
    V = lm.vocab_size
    probs = np.tile(10.0 ** lm.log10_prob[0], (len(contexts), 1))
    for k in range(1, lm.order):             # contexts of length k, shortest first
        ids = lm.gram_ids(contexts[:, lm.order - 1 - k:])
        rows = np.flatnonzero(ids >= 0)
        ids = ids[rows]
        probs[rows] *= 10.0 ** lm.log10_backoff[k - 1][ids][:, None]
        keys = lm.keys[k]                    # stored (k+1)-grams: prefix id * V + word
        lo, hi = np.searchsorted(keys, ids * V), np.searchsorted(keys, (ids + 1) * V)
        sizes = hi - lo
        child = np.repeat(lo - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        parent = np.repeat(ids, sizes)
        probs[np.repeat(rows, sizes), keys[child] - parent * V] = 10.0 ** lm.log10_prob[k][child]
    return probs


def ngram_contexts(stream: np.ndarray, order: int) -> np.ndarray:
    """(targets, order-1): the tokens before each non-`<s>` position, -1 before its `<s>`."""
    stream = np.asarray(stream, dtype=np.int64)
    _, offset = positions_left(stream)
    targets = np.flatnonzero(stream != BOS_ID)
    contexts = np.full((len(targets), order - 1), -1, dtype=np.int64)
    for j in range(1, order):                # column order-1-j holds the token j steps back
        ok = offset[targets] >= j
        contexts[ok, order - 1 - j] = stream[targets[ok] - j]
    return contexts


def _stored_words(lm: NGramLM, contexts: np.ndarray):
    """(factors (order-1, B): 10^backoff of each stored context length, 1 where not stored; the
    last word's unigram id or -1; the words stored after a context of 2+ words (row, word) with p
    as ngram_distributions makes it)."""
    V, B = lm.vocab_size, len(contexts)
    factors, last, rows, words, levels, values = np.ones((lm.order - 1, B)), np.full(B, -1), [], [], [], []
    for k in range(1, lm.order):             # contexts of length k, shortest first
        ids = lm.gram_ids(contexts[:, lm.order - 1 - k:])
        row = np.flatnonzero(ids >= 0)
        ids = ids[row]
        factors[k - 1, row] = 10.0 ** lm.log10_backoff[k - 1][ids]
        if k == 1:
            last[row] = ids
            continue
        keys = lm.keys[k]                    # stored (k+1)-grams: prefix id * V + word
        lo, hi = np.searchsorted(keys, ids * V), np.searchsorted(keys, (ids + 1) * V)
        sizes = hi - lo
        child = np.repeat(lo - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        rows.append(np.repeat(row, sizes))
        words.append(keys[child] - np.repeat(ids, sizes) * V)
        levels.append(np.full(len(child), k))
        values.append(10.0 ** lm.log10_prob[k][child])
    row, word, level, value = (np.concatenate([np.zeros(0, dtype=t), *a]) for t, a in (
        (np.int64, rows), (np.int64, words), (np.int64, levels), (np.float64, values)))
    key = (row * V + word) * lm.order + level
    order = np.argsort(key)
    keep = order[np.diff(key[order] // lm.order, append=-1) != 0]   # per (row, word) its longest context
    row, word, level, value = row[keep], word[keep], level[keep], value[keep]
    for k in range(1, lm.order):             # then the backoffs of the longer contexts, in order
        value = value * np.where(level < k, factors[k - 1, row], 1.0)
    return factors, last, row, word, value


def _backed_off(u: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """p of words stored after no context: unigram p times each backoff, in ngram_distributions' order."""
    for factor in factors:
        u = u * factor
    return u


def _above(ascending: np.ndarray, lo: np.ndarray, hi: np.ndarray, bar: np.ndarray, factors: np.ndarray):
    """(Q,) how many of ascending[lo[q]:hi[q]] times factors[:, q] (in order) exceed bar[q]."""
    lo, hi, end = lo.copy(), hi.copy(), hi
    while np.any(lo < hi):                                       # the first that exceeds
        mid = (lo + hi) // 2
        above = _backed_off(ascending[np.minimum(mid, len(ascending) - 1)], factors) > bar
        lo, hi = np.where((lo < hi) & ~above, mid + 1, lo), np.where((lo < hi) & above, mid, hi)
    return end - lo


def _greater(rows: np.ndarray, values: np.ndarray, at: np.ndarray, bars: np.ndarray, count: int):
    """(Q,) how many of `values` in row at[q] exceed bars[q]; rows sorted, rows and at in 0..count-1."""
    per_row = np.bincount(rows, minlength=count)
    sizes = per_row[at]                                          # each query against its row's values
    query = np.repeat(np.arange(len(at)), sizes)
    entry = np.repeat((np.cumsum(per_row) - per_row)[at] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
    return np.bincount(query, values[entry] > bars[query], minlength=len(at)).astype(np.int64)


def _tables(lm: NGramLM):
    """(unigram p, the same sorted, and per word w: where w's bigram children start, their p
    sorted and their unigram p sorted, a segment per w) for ngram_ranks."""
    V, unigram = lm.vocab_size, 10.0 ** lm.log10_prob[0]
    keys = lm.keys[1] if lm.order > 1 else np.zeros(0, dtype=np.int64)
    prefix, p = keys // V, 10.0 ** lm.log10_prob[1] if lm.order > 1 else np.zeros(0)
    u = unigram[keys - prefix * V]
    return (unigram, np.sort(unigram), np.searchsorted(keys, np.arange(V + 1) * V),
            p[np.lexsort((p, prefix))], u[np.lexsort((u, prefix))])


def ngram_ranks(lm: NGramLM, tables, contexts: np.ndarray, at: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of each target after contexts[at] (as ngram_distributions', ties not above) without a
    full distribution: binary searches of the unigrams and the last word's bigrams, then the few
    words stored after longer contexts."""
    unigram, ascending, starts, bigram_p, bigram_u = tables
    factors, last, row, word, value = _stored_words(lm, contexts)
    V, K = lm.vocab_size, lm.order - 1
    p1 = 10.0 ** lm.log10_prob[1] if K else np.zeros(1)

    def bigram(rows, words):                 # p of the bigram (last word, word) backed off, or -1
        keys = lm.keys[1] if K else np.zeros(1, dtype=np.int64)
        wanted = np.where(last[rows] >= 0, last[rows] * V + words, -1)
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        return np.where(keys[found] == wanted, _backed_off(p1[found], factors[1:, rows]), -1.0)

    key, wanted = row * V + word, at * V + targets              # key: sorted
    found = np.minimum(np.searchsorted(key, wanted), max(len(key) - 1, 0))
    stored = key[found] == wanted if len(key) else np.zeros(len(at), bool)
    via = bigram(at, targets)
    bar = np.where(stored, value[found] if len(key) else 0.0,
                   np.where(via >= 0, via, _backed_off(unigram[targets], factors[:, at])))
    segment = np.maximum(last[at], 0)
    lo, hi = starts[segment], np.where(last[at] >= 0, starts[segment + 1], starts[segment])
    counted = bigram(row, word)              # how the searches counted the stored words
    counted = np.where(counted >= 0, counted, _backed_off(unigram[word], factors[:, row]))
    return (_above(ascending, np.zeros(len(at), dtype=np.int64), np.full(len(at), V), bar, factors[:, at])
            - _above(bigram_u, lo, hi, bar, factors[:, at]) + _above(bigram_p, lo, hi, bar, factors[1:, at])
            - _greater(row, counted, at, bar, len(contexts)) + _greater(row, value, at, bar, len(contexts)))


def ngram_scores(lm: NGramLM, stream: np.ndarray, block: int = 1024) -> Scores:
    """Scores of every non-`<s>` target; ranks `block` distinct contexts at a time."""
    stream = np.asarray(stream, dtype=np.int64)
    logprobs = ngram_logprobs(lm, stream)
    targets = stream[stream != BOS_ID]
    unique, inverse = np.unique(ngram_contexts(stream, lm.order), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(0, len(unique) + block, block))
    ranks, tables = np.zeros(len(targets), dtype=np.int64), _tables(lm)
    for b in range(len(bounds) - 1):
        where = order[bounds[b]:bounds[b + 1]]             # positions whose context is in block b
        ranks[where] = ngram_ranks(lm, tables, unique[b * block:(b + 1) * block], inverse[where] - b * block,
                                   targets[where])
    return Scores(logprobs, ranks)


def logp_and_rank(model: RNNLM, features: torch.Tensor, targets: torch.Tensor, ranked: bool = True):
    """ln p (softmax over the whole vocabulary, as trained) of each row's target (N,) given its
    features (N, F), and its rank without `<s>` (or None). The logits are made ROWS rows at a time,
    so they stay in cache (the last block overlaps the one before: every product has ROWS rows)."""
    n = len(features)
    logp, rank = torch.empty(n, device=features.device), torch.empty(n, dtype=torch.long, device=features.device)
    for start in range(0, n, ROWS):
        rows = slice(max(0, min(start, n - ROWS)), start + ROWS)
        block = torch.log_softmax(model.logits(features[rows]).float(), dim=-1)
        picked = block.gather(-1, targets[rows].unsqueeze(-1))
        logp[rows] = picked.squeeze(-1)
        if ranked:
            block[:, BOS_ID] = -math.inf                 # <s> is never a candidate
            rank[rows] = (block > picked).sum(-1)
    return logp, rank if ranked else None


@torch.no_grad()
def causal_scores(model: RNNLM, stream: np.ndarray, num_columns: int = 16, chunk: int = 128,
                  device: str | torch.device = "cpu") -> Scores:
    """Every target scored from its left context, the hidden state carried along each column."""
    model.eval()
    inputs, targets, positions = eval_columns(stream, num_columns)
    logprobs, ranks = np.zeros(len(stream)), np.zeros(len(stream), dtype=np.int64)
    state = None
    for start in range(0, inputs.shape[1], chunk):
        features, _, state = model.features_and_activations(inputs[:, start:start + chunk].to(device), state)
        where = positions[:, start:start + chunk]
        keep = where >= 0                                # no output at padding
        logp, rank = logp_and_rank(model, features[keep.to(device)],
                                   targets[:, start:start + chunk][keep].to(device))
        logprobs[where[keep].numpy()] = logp.cpu().double().numpy()
        ranks[where[keep].numpy()] = rank.cpu().numpy()
    wanted = np.asarray(stream) != BOS_ID
    return Scores(logprobs[wanted], ranks[wanted])


@torch.no_grad()
def cloze_scores(model: RNNLM, stream: np.ndarray, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> Scores:
    """Every target scored given both sides of it (bidirectional model); sentences batched by
    length (little padding), the scores put back in stream order."""
    model.eval()
    sentences = sentences_of(stream)
    sizes = np.array([len(s) - 1 for s in sentences])   # targets of each
    first = np.cumsum(sizes) - sizes                      # where its scores go
    logprobs, ranks = np.zeros(sizes.sum()), np.zeros(sizes.sum(), dtype=np.int64)
    # whole batches by length; the rest as the last batch in stream order: every sentence is in a
    # product of as many rows as before (a BLAS of few rows rounds otherwise), so the same bits
    full = len(sentences) - len(sentences) % batch_size
    by_length = np.concatenate([np.argsort(sizes[:full], kind="stable"), np.arange(full, len(sentences))])
    for start in range(0, len(sentences), batch_size):
        chosen = by_length[start:start + batch_size]
        tokens, lengths = pad_sentences([sentences[i] for i in chosen])
        features = model.cloze_features_and_activations(tokens.to(device), lengths)[0]
        targets = cloze_targets(tokens, lengths)
        keep = targets != IGNORE
        logp, rank = logp_and_rank(model, features[keep.to(device)], targets[keep].to(device))
        where = np.concatenate([first[i] + np.arange(sizes[i]) for i in chosen])
        logprobs[where], ranks[where] = logp.cpu().double().numpy(), rank.cpu().numpy()
    return Scores(logprobs, ranks)


def unit_sums(scores: Scores, stream: np.ndarray, unit_of_sentence: np.ndarray,
              units: int) -> dict[str, np.ndarray]:
    """(U,) sums of "nll" (nats), "tokens", "top1", "top5" per unit; `unit_of_sentence` (S,): units.npz."""
    stream = np.asarray(stream)
    starts = stream == BOS_ID
    sentence = np.cumsum(starts)[~starts] - 1            # the sentence of each target
    if len(sentence) != len(scores.logprobs) or int(starts.sum()) != len(unit_of_sentence):
        raise ValueError("scores, stream and units disagree; rerun `dvc repro prepare`")
    unit = np.asarray(unit_of_sentence, dtype=np.int64)[sentence]
    return {"nll": np.bincount(unit, weights=-scores.logprobs, minlength=units),
            "tokens": np.bincount(unit, minlength=units).astype(np.float64),
            "top1": np.bincount(unit, weights=scores.ranks < 1, minlength=units),
            "top5": np.bincount(unit, weights=scores.ranks < 5, minlength=units)}


def summarize(logprobs: np.ndarray) -> dict:
    """Perplexity, bits per token and "tokens" of the ln p (nats) of every target."""
    nll, tokens = float(-np.sum(logprobs)), len(logprobs)
    return {"ppl": math.exp(nll / tokens), "bits_per_token": bits(nll / tokens), "tokens": tokens}


def mle_summary(probs: np.ndarray) -> dict:
    """Share of MLE p = 0, perplexity (None if infinite), and over p > 0 (KenLM's "excluding OOVs")."""
    nonzero = probs > 0
    return {"zero_prob_rate": float(1 - nonzero.mean()), "tokens": int(len(probs)),
            "ppl": summarize(np.log(probs))["ppl"] if nonzero.all() else None,
            "ppl_excluding_zero_prob": summarize(np.log(probs[nonzero]))["ppl"] if nonzero.any() else None}
