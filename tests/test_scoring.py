import math

import numpy as np
import pytest
import torch

from pipeline.evaluation import scoring
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.text.vocab import BOS_ID


def test_summary_of_a_uniform_model():
    logprobs = np.full(50, -math.log(20))
    summary = scoring.summarize(logprobs)
    assert summary["ppl"] == pytest.approx(20)
    assert summary["bits_per_token"] == pytest.approx(math.log2(20))


def test_mle_summary_reports_zero_probabilities():
    summary = scoring.mle_summary(np.array([0.5, 0.0, 0.25, 0.25]))
    assert summary["zero_prob_rate"] == 0.25
    assert summary["ppl"] is None   # infinite: JSON has no infinity
    assert summary["ppl_excluding_zero_prob"] == pytest.approx((0.5 * 0.25 * 0.25) ** (-1 / 3))


def _stream(rng, sentences=30):
    parts = [np.concatenate([[1], rng.integers(3, 30, size=rng.integers(0, 9)), [2]]) for _ in range(sentences)]
    return np.concatenate(parts).astype(np.int32)


@pytest.mark.parametrize("columns", [1, 4])
def test_causal_logprobs_agree_with_a_direct_forward_pass(rng, columns):
    """Column cutting at sentence starts and chunking do not change any token's probability
    (state resets only at a column start, which is a <s>)."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=30, cell="gru", embed_dim=8, hidden_dim=8, dropout=0.0))
    stream = _stream(rng)
    ours = scoring.causal_scores(model, stream, num_columns=columns, chunk=7).logprobs
    assert len(ours) == int(np.sum(stream != BOS_ID))
    if columns == 1:
        logits, _ = model(torch.as_tensor(stream[:-1], dtype=torch.long).unsqueeze(0))
        direct = torch.log_softmax(logits[0], -1).gather(1, torch.as_tensor(stream[1:], dtype=torch.long).unsqueeze(1))[:, 0]
        keep = stream[1:] != BOS_ID
        np.testing.assert_allclose(ours, direct.detach().numpy()[keep], atol=1e-5)


def test_cloze_logprobs_cover_every_target(rng):
    model = RNNLM(ModelConfig(vocab_size=30, bidirectional=True, embed_dim=8, hidden_dim=8, dropout=0.0))
    stream = _stream(rng)
    result = scoring.cloze_scores(model, stream, batch_size=7).logprobs
    assert len(result) == int(np.sum(stream != BOS_ID)) and np.all(result < 0)
    alone = scoring.cloze_scores(model, stream[: int(np.flatnonzero(stream == 2)[0]) + 1]).logprobs
    np.testing.assert_allclose(result[: len(alone)], alone, atol=1e-5)


def _ngram(rng, order=3):
    from pipeline.ngram import counting, kneser_ney
    train = _stream(rng, sentences=300)
    return kneser_ney.estimate(counting.count(train, 30, order), fallback=(0.5, 1.0, 1.5))


@pytest.mark.parametrize("order", [2, 3, 4])
def test_ngram_distributions_are_the_scoring_probabilities_and_sum_to_one(rng, order):
    lm = _ngram(rng, order)
    stream = _stream(rng, sentences=40)
    probs = scoring.ngram_distributions(lm, scoring.ngram_contexts(stream, order))
    targets = stream[stream != BOS_ID]
    picked = np.log(probs[np.arange(len(targets)), targets])
    np.testing.assert_allclose(picked, scoring.ngram_logprobs(lm, stream), rtol=1e-9)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert (probs[:, BOS_ID] == 0).all()


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_ngram_ranks_count_the_words_ahead_of_the_target(rng, order):
    """Ranks without a full distribution equal those counted over one, ties (equal p) included."""
    lm = _ngram(rng, order)
    stream = _stream(rng, sentences=40)
    scores = scoring.ngram_scores(lm, stream, block=7)   # small blocks: the bookkeeping is tested
    probs = scoring.ngram_distributions(lm, scoring.ngram_contexts(stream, order))
    targets = stream[stream != BOS_ID]
    brute = [(row > row[t]).sum() for row, t in zip(probs, targets, strict=True)]
    assert scores.ranks.tolist() == brute
    np.testing.assert_array_equal(scores.logprobs, scoring.ngram_logprobs(lm, stream))   # as one piece
    few, orders = scoring.ngram_ranks(lm, scoring.ngram_contexts(stream, order), targets, most=5)
    assert few.tolist() == brute                  # each level's stored words sorted 5 at a time
    np.testing.assert_array_equal(orders, scores.orders)
    assert 0 < np.mean(scores.ranks < 1) <= np.mean(scores.ranks < 5) <= 1


@pytest.mark.parametrize("order", [1, 3, 5])
def test_ngram_backoff_orders_are_the_longest_stored_ngram_ending_in_each_target(rng, order):
    lm = _ngram(rng, order)
    stream = _stream(rng, sentences=40)
    contexts, targets = scoring.ngram_contexts(stream, order), stream[stream != BOS_ID]
    brute = np.ones(len(targets), dtype=np.int64)
    for n in range(2, order + 1):                 # each n-gram looked up whole, shortest first
        stored = lm.gram_ids(np.column_stack([contexts[:, order - n:], targets])) >= 0
        brute[stored] = n
    orders = scoring.ngram_scores(lm, stream, block=7).orders
    np.testing.assert_array_equal(orders, brute)
    assert order == 1 or len(set(orders.tolist())) > 1   # the toy model backs off somewhere


def test_rnn_ranks_count_the_words_ahead_of_the_target(rng):
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=30, cell="gru", embed_dim=8, hidden_dim=8, dropout=0.0))
    stream = _stream(rng)
    scores = scoring.causal_scores(model, stream, num_columns=1)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(stream[:-1], dtype=torch.long).unsqueeze(0))
    logits = logits[0]
    logits[:, BOS_ID] = -math.inf
    targets = torch.as_tensor(stream[1:], dtype=torch.long)
    keep = targets != BOS_ID
    brute = (logits > logits.gather(1, targets.unsqueeze(1))).sum(1)[keep]
    assert scores.ranks.tolist() == brute.tolist()
