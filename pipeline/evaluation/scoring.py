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
from pipeline.ngram.backoff import NGramLM
from pipeline.ngram.counting import find, packed_argsort, positions_left
from pipeline.text.vocab import BOS_ID

DISAGREE = "scores, stream and units disagree; rerun `dvc repro prepare`"
ROWS = 64   # logits made per product: 33k words x 64 rows x 4 bytes fit a cache (>= 12: the same bits)


@dataclass
class Scores:
    logprobs: np.ndarray  # ln p(target), every non-<s> token in stream order
    ranks: np.ndarray | None = None   # words (but <s>) with a strictly higher probability than the
    # target; None where unknown (an interpolated model's: its ranks need whole distributions)
    orders: np.ndarray | None = None  # n-gram models: the backoff order, the order of the longest
    # stored n-gram ending in the target (1: backed off to the unigram)


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
    lm.release(len(contexts))
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


def _above(ascending: np.ndarray, lo: np.ndarray, hi: np.ndarray, bar: np.ndarray, factors: np.ndarray):
    """(Q,) how many of ascending[lo[q]:hi[q]] times factors[:, q] (in order) exceed bar[q]."""
    lo, hi, end = lo.copy(), hi.copy(), hi
    while np.any(lo < hi):                                       # the first that exceeds
        mid = (lo + hi) // 2
        above = ascending[np.minimum(mid, len(ascending) - 1)]
        for factor in factors:
            above = above * factor
        above = above > bar
        lo, hi = np.where((lo < hi) & ~above, mid + 1, lo), np.where((lo < hi) & above, mid, hi)
    return end - lo


def ngram_ranks(lm: NGramLM, contexts: np.ndarray, targets: np.ndarray,
                most: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """(rank, backoff order) of each target after its context (contexts (Q, order-1), as
    ngram_distributions': ties not above) without a full distribution; the order is that of the
    longest stored n-gram ending in the target, found on the way. A word's p is its p after its
    longest stored context suffix times the backoffs of the longer ones, so the words above the
    target are counted level
    by level: all words by their unigram p, then per context suffix its stored words at their p
    less the same words one level down (_level). Needs every stored n-gram's suffix stored
    (lmplz's models; the ngram stage's)."""
    V, K = lm.vocab_size, lm.order - 1
    ids = [np.zeros(len(targets), dtype=np.int64)] + [lm.gram_ids(contexts[:, K - j:]) for j in range(1, K + 1)]
    factors = np.ones((K, len(targets)))                         # 10^backoff of each stored suffix
    unigram = 10.0 ** lm.log10_prob[0]
    bar = unigram[targets]                                       # the target's p, in the same order
    order = np.ones(len(targets), dtype=np.int64)
    for j in range(1, K + 1):
        has = ids[j] >= 0
        factors[j - 1, has] = 10.0 ** lm.log10_backoff[j - 1][ids[j][has]]
        found, at = find(lm.keys[j], np.where(has, ids[j] * V + targets, -1))
        bar = np.where(found, 10.0 ** lm.log10_prob[j][at], bar * factors[j - 1])
        order[found] = j + 1
    rank = _above(np.sort(unigram), np.zeros(len(targets), dtype=np.int64), np.full(len(targets), V), bar, factors)
    for j in range(1, K + 1):
        has = np.flatnonzero(ids[j] >= 0)
        rank[has] += _level(lm, j, ids[j][has], ids[j - 1][has], bar[has], factors[:, has], most)
    return rank, order


def _level(lm: NGramLM, j: int, suffix: np.ndarray, shorter: np.ndarray, bar: np.ndarray,
           factors: np.ndarray, most: int) -> np.ndarray:
    """(Q,) over the words stored after each query's context suffix of length j (id `suffix`; its
    own suffix `shorter`): how many exceed bar at their p, less how many at their p one level
    down. Each suffix's words are sorted once, `most` words at a time (bounded memory)."""
    V, count = lm.vocab_size, np.zeros(len(bar), dtype=np.int64)
    suffixes, first, inverse = np.unique(suffix, return_index=True, return_inverse=True)
    lo, hi = np.searchsorted(lm.keys[j], suffixes * V), np.searchsorted(lm.keys[j], (suffixes + 1) * V)
    order, ends = np.argsort(inverse, kind="stable"), np.cumsum(hi - lo)
    a = 0
    while a < len(suffixes):                                     # suffixes a..b-1 at a time
        b = max(a + 1, int(np.searchsorted(ends, ends[a] - (hi - lo)[a] + most, side="right")))
        sizes = (hi - lo)[a:b]
        child = np.repeat(lo[a:b] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        segment = np.repeat(np.arange(b - a), sizes)
        words = lm.keys[j][child] - suffixes[a:b][segment] * V
        if j == 1:                                               # the same words one level down
            below = 10.0 ** lm.log10_prob[0][words]
        else:
            below = 10.0 ** lm.log10_prob[j - 1][find(lm.keys[j - 1], shorter[first[a:b]][segment] * V + words)[1]]
        p = 10.0 ** lm.log10_prob[j][child]
        q = order[np.searchsorted(inverse[order], a):np.searchsorted(inverse[order], b)]
        start, end = (np.cumsum(sizes) - sizes)[inverse[q] - a], np.cumsum(sizes)[inverse[q] - a]
        count[q] = (_above(_ascending(p, segment), start, end, bar[q], factors[j:, q])
                    - _above(_ascending(below, segment), start, end, bar[q], factors[j - 1:, q]))
        lm.release()
        a = b
    return count


def _ascending(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """`values` sorted within each run of `segment` (ascending ids): np.lexsort's order in a
    float argsort and one packed integer sort of the segments (~5x faster)."""
    order = np.argsort(values)
    return values[order[packed_argsort(segment[order])[0]]]


def ngram_scores(lm: NGramLM, stream: np.ndarray, block: int = 1 << 18) -> Scores:
    """Scores (with backoff orders) of every non-`<s>` target, whole sentences of about `block`
    targets at a time; after each, the model's memory-mapped pages are released (NGramLM.release)."""
    stream = np.asarray(stream, dtype=np.int64)
    starts = np.flatnonzero(stream == BOS_ID)
    at = np.searchsorted(starts, np.arange(block, len(stream), block))   # the next sentence's start
    logprobs, ranks, orders = [np.zeros(0)], [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for piece in np.split(stream, np.unique(starts[at[at < len(starts)]])):
        logprobs.append(ngram_logprobs(lm, piece))
        rank, order = ngram_ranks(lm, ngram_contexts(piece, lm.order), piece[piece != BOS_ID])
        ranks.append(rank)
        orders.append(order)
        lm.release()
    return Scores(np.concatenate(logprobs), np.concatenate(ranks), np.concatenate(orders))


@torch.no_grad()
def logp_and_rank(model: RNNLM, features: torch.Tensor, targets: torch.Tensor, ranked: bool = True):
    """ln p (softmax over the whole vocabulary, as trained) of each row's target (N,) given its
    features (N, F), and its rank without `<s>` (or None). The logits are made ROWS rows at a time
    into one buffer, so they stay in cache (the last block overlaps the one before: every product
    has ROWS rows)."""
    n = len(features)
    logp, rank = torch.empty(n, device=features.device), torch.empty(n, dtype=torch.long, device=features.device)
    block = features.new_empty((min(n, ROWS), model.config.vocab_size))
    for start in range(0, n, ROWS):
        rows = slice(max(0, min(start, n - ROWS)), start + ROWS)
        block = torch.log_softmax(model.logits(features[rows], out=block), -1, out=block)
        picked = block.gather(-1, targets[rows].unsqueeze(-1))
        logp[rows] = picked.squeeze(-1)
        if ranked:
            block[:, BOS_ID] = -math.inf                 # <s> is never a candidate
            rank[rows] = block.sub_(picked).gt_(0).sum(-1).long()   # x - p > 0 iff x > p (IEEE); a
            # float32 sum of 0s and 1s is exact below 2^24 words, and 3x faster than a bool tensor's
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


def target_units(stream: np.ndarray, unit_of_sentence: np.ndarray) -> np.ndarray:
    """(T,) the resampling unit of each non-`<s>` target; `unit_of_sentence` (S,): units.npz."""
    starts = np.asarray(stream) == BOS_ID
    if int(starts.sum()) != len(unit_of_sentence):
        raise ValueError(DISAGREE)
    return np.asarray(unit_of_sentence, dtype=np.int64)[np.cumsum(starts)[~starts] - 1]


def unit_sums(scores: Scores, stream: np.ndarray, unit_of_sentence: np.ndarray,
              units: int) -> dict[str, np.ndarray]:
    """(U,) sums of "nll" (nats), "tokens", "top1", "top5" (if scores.ranks) per unit;
    `unit_of_sentence` (S,): units.npz."""
    unit = target_units(stream, unit_of_sentence)
    if len(unit) != len(scores.logprobs):
        raise ValueError(DISAGREE)
    sums = {"nll": np.bincount(unit, weights=-scores.logprobs, minlength=units),
            "tokens": np.bincount(unit, minlength=units).astype(np.float64)}
    if scores.ranks is not None:
        sums.update(top1=np.bincount(unit, weights=scores.ranks < 1, minlength=units),
                    top5=np.bincount(unit, weights=scores.ranks < 5, minlength=units))
    return sums


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
