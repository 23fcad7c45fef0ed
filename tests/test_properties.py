"""Property-based tests (hypothesis): vocabulary round trip, n-gram counts against a brute-force
count, Kneser-Ney distributions that sum to one, and batchings that predict every target once.
Derandomized and without an example database, so every run checks the same cases."""
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import TrainParams
from pipeline.evaluation import scoring
from pipeline.neural.batches import (
    IGNORE,
    BucketBatches,
    StreamWindows,
    check_data,
    cloze_targets,
    eval_columns,
)
from pipeline.ngram import builder, counting, kneser_ney
from pipeline.text.vocab import BOS, BOS_ID, EOS, EOS_ID, UNK, UNK_ID, Vocab

from .oracle_prepare import vocab_of


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None)


WORDS = st.sampled_from(("a", "b", "c", "d", "e", "f", "g", "h"))   # few words: some are rare
UNSEEN = st.sampled_from(("a", "b", "c", "d", "e", "f", "g", "h", "x", "yy", "zebra"))
corpora = st.lists(st.lists(WORDS, max_size=7), min_size=1, max_size=10)
# sentence lengths (words only) of a stream whose words are all distinct
shapes = st.lists(st.integers(0, 6), min_size=1, max_size=25)


def _sentences(vocab: Vocab, corpus: list[list[str]]) -> list[list[int]]:
    """`<s> w.. </s>` of each sentence as ids, one word at a time."""
    index = vocab.index
    return [[BOS_ID, *(index.get(w, UNK_ID) for w in s), EOS_ID] for s in corpus]


def _distinct_stream(lengths: list[int]) -> np.ndarray:
    """`<s> w.. </s>` per length, every word a new id (>= 3)."""
    out, word = [], 3
    for n in lengths:
        out += [BOS_ID, *range(word, word + n), EOS_ID]
        word += n
    return np.array(out, dtype=np.int64)


# ---- vocabulary ---------------------------------------------------------------------------
@examples(200)
@given(corpus=corpora, probes=st.lists(st.lists(UNSEEN, max_size=6), max_size=4),
       min_count=st.integers(1, 4), max_size=st.integers(0, 9))
def test_vocab_round_trip_keeps_known_words_and_unks_the_rest(corpus, probes, min_count, max_size):
    """decode(encode(s)) is s with every out-of-vocabulary word replaced by <unk>; the vocabulary
    is the specials then the most frequent words seen >= min_count times (max_size 0: all), unique."""
    vocab = vocab_of(corpus, min_count=min_count, max_size=max_size)
    assert vocab.tokens[:3] == (UNK, BOS, EOS) == tuple(vocab.tokens[i] for i in (UNK_ID, BOS_ID, EOS_ID))
    assert len(set(vocab.tokens)) == len(vocab)
    freq = Counter(w for s in corpus for w in s)
    words = vocab.tokens[3:]
    eligible = {w for w, c in freq.items() if c >= min_count}
    assert set(words) <= eligible and len(words) == (min(max_size, len(eligible)) if max_size else len(eligible))
    ranks = [(-freq[w], w) for w in words]
    assert ranks == sorted(ranks)                       # most frequent first, ties by spelling
    assert all((-freq[w], w) > max(ranks, default=(-np.inf,)) for w in eligible - set(words))
    known = set(words)
    for sentence in corpus + probes:
        ids = vocab.encode(sentence)
        assert ids.dtype == np.int32 and ids.shape == (len(sentence),)
        assert vocab.decode(ids) == [w if w in known else UNK for w in sentence]
    flat = [t for s in corpus for t in (BOS, *(w if w in known else UNK for w in s), EOS)]
    stream = vocab.stream(corpus)
    assert stream.dtype == np.int32 and vocab.decode(stream) == flat


# ---- n-gram counts ------------------------------------------------------------------------
@examples(150)
@given(corpus=corpora, order=st.integers(1, 5), min_count=st.integers(1, 3), max_size=st.integers(0, 8))
def test_ngram_counts_match_a_brute_force_count(corpus, order, min_count, max_size):
    """An n-gram position is a start i with tokens i..i+n-1 all inside one sentence
    `<s> w1..wT </s>` (one `<s>`, no extra padding, never across sentences), so a sentence of T
    words holds max(T + 3 - n, 0) of them. Counts, adjusted counts (distinct left neighbours;
    raw at the highest order and for n-grams starting with `<s>`) and suffix ids agree with a
    Python Counter over that definition; an order no sentence reaches is an error."""
    vocab = vocab_of(corpus, min_count=min_count, max_size=max_size)
    sentences = _sentences(vocab, corpus)
    stream = vocab.stream(corpus)
    assert stream.tolist() == [t for s in sentences for t in s]
    if max(map(len, sentences)) < order:   # refused where the order enters, before counting
        with pytest.raises(ValueError):
            builder.check_order(order, max(map(len, sentences)), "ngram.order={}", "the train split")
        return
    counts = counting.count(stream, len(vocab), order)
    grams = [Counter(tuple(s[i:i + n]) for s in sentences for i in range(len(s) - n + 1))
             for n in range(1, order + 2)]
    assert counts.order == order
    for n in range(1, order + 1):
        positions = sum(max(len(s) - n + 1, 0) for s in sentences)
        assert int(counts.counts[n - 1].sum()) == positions
        keys = counts.keys[n - 1]
        assert np.all(np.diff(keys) > 0)
        rows = [tuple(r) for r in counts.words(n).tolist()]
        raw = counts.counts[n - 1].tolist()
        if n == 1:
            assert rows == [(w,) for w in range(len(vocab))]
        else:
            assert min(raw) > 0
        assert {g: c for g, c in zip(rows, raw, strict=True) if c} == grams[n - 1]
        left = Counter(g[1:] for g in grams[n])
        expected = [grams[n - 1][g] if n == order or g[0] == BOS_ID else left[g] for g in rows]
        assert counts.adjusted[n - 1].tolist() == expected
        if n > 1:
            shorter = [tuple(r) for r in counts.words(n - 1).tolist()]
            assert [shorter[i] for i in counts.suffix[n - 1].tolist()] == [g[1:] for g in rows]


# ---- Kneser-Ney ---------------------------------------------------------------------------
def _history_key(history: list[int], order: int) -> tuple[int, ...]:
    """The last order-1 tokens of a history that starts with `<s>`, -1 before the `<s>`."""
    tail = history[max(len(history) - (order - 1), 0):]
    return (-1,) * (order - 1 - len(tail)) + tuple(tail)


@examples(60)
@given(corpus=corpora, held_out=st.lists(st.lists(UNSEEN, max_size=5), max_size=3),
       order=st.integers(1, 4), min_count=st.integers(1, 2),
       random_contexts=st.lists(st.lists(st.integers(0, 40), max_size=4), max_size=4))
def test_kneser_ney_distributions_sum_to_one(corpus, held_out, order, min_count, random_contexts):
    """Interpolated modified KN (lmplz's fallback discounts when the tiny corpus gives none):
    for every context of the training data, of held-out text and random word sequences,
    P(. | context) over the whole vocabulary but `<s>` (words, `<unk>`, `</s>`; `<s>` gets 0)
    sums to 1 and is positive, both as scored token by token (log10_probs) and as the dense rows
    of ngram_distributions."""
    vocab = vocab_of(corpus + held_out, min_count=min_count, max_size=100)
    V = len(vocab)
    train = _sentences(vocab, corpus)
    order = min(order, max(map(len, train)))
    lm = kneser_ney.estimate(counting.count(vocab.stream(corpus), V, order),
                             fallback=kneser_ney.LMPLZ_FALLBACK)
    histories = [s[:t] for s in train + _sentences(vocab, held_out) for t in range(1, len(s))]
    for words in random_contexts:
        histories.append([BOS_ID, *(w % V if w % V not in (BOS_ID, EOS_ID) else UNK_ID for w in words)])
    keys = sorted({_history_key(h, order) for h in histories})
    candidates = [w for w in range(V) if w != BOS_ID]
    probe, picked = [], []
    for key in keys:
        prefix = [t for t in key if t >= 0]
        prefix = prefix if prefix and prefix[0] == BOS_ID else [BOS_ID, *prefix]
        for w in candidates:
            sentence = [*prefix, w] + ([] if w == EOS_ID else [EOS_ID])
            probe += sentence
            picked += [False] * len(prefix) + [True] + [False] * (len(sentence) - len(prefix) - 1)
    probe = np.array(probe, dtype=np.int64)
    chosen = np.array(picked)[probe != BOS_ID]
    p = 10.0 ** lm.log10_probs(probe)[chosen].reshape(len(keys), len(candidates))
    assert np.all(p > 0)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=0, atol=1e-9)
    dense = scoring.ngram_distributions(lm, np.array(keys, dtype=np.int64).reshape(len(keys), order - 1))
    assert dense.shape == (len(keys), V) and np.all(dense[:, BOS_ID] == 0)
    np.testing.assert_allclose(dense.sum(1), 1.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(dense[:, candidates], p, rtol=1e-9)


# ---- batching -----------------------------------------------------------------------------
@examples(150)
@given(lengths=shapes, batch_size=st.integers(1, 6), bptt=st.integers(1, 8), world=st.integers(1, 3))
def test_stream_windows_predict_every_used_position_once(lengths, batch_size, bptt, world):
    """The stream is cut into C = len // (world x batch_size) columns of C tokens; the last
    len mod (world x batch_size) tokens are dropped, and the first token of each column is only
    ever an input. Every other position is a target exactly once over all ranks and windows,
    its input the token before it, `<s>` targets IGNOREd; each rank walks its columns in order
    and all ranks have the same number of windows. Fewer than 2 columns: check_data refuses."""
    stream = _distinct_stream(lengths)
    total = batch_size * world
    columns = len(stream) // total
    if columns < 2:
        valid = np.tile(np.array([BOS_ID, 5, EOS_ID]), world)
        with pytest.raises(ValueError, match="train.batch_size"):
            check_data(False, stream, valid, TrainParams(batch_size=batch_size, bptt=bptt), world)
        return
    where = np.arange(len(stream), dtype=np.int64) + 3   # a token's value names its position
    targets_seen, sizes = [], set()
    for rank in range(world):
        by_position = StreamWindows(where, batch_size, bptt, rank, world)
        real = StreamWindows(stream, batch_size, bptt, rank, world)
        assert len(real) == len(by_position)
        sizes.add(len(real))
        rows = []
        for i in range(len(real)):
            (inputs, targets), (real_inputs, real_targets) = by_position[i], real[i]
            assert inputs.shape == targets.shape == real_targets.shape
            assert inputs.shape[0] == batch_size and 1 <= inputs.shape[1] <= bptt
            at = targets.numpy() - 3
            assert np.array_equal(inputs.numpy() - 3, at - 1)
            assert np.array_equal(real_inputs.numpy(), stream[at - 1])
            assert np.array_equal(real_targets.numpy(),
                                  np.where(stream[at] == BOS_ID, IGNORE, stream[at]))
            rows.append(at)
        rows = np.concatenate(rows, axis=1)
        for b in range(batch_size):
            column = rank * batch_size + b
            assert rows[b].tolist() == list(range(column * columns + 1, (column + 1) * columns))
        targets_seen += rows.ravel().tolist()
    assert len(sizes) == 1
    assert sorted(targets_seen) == [p for p in range(columns * total) if p % columns]


@examples(150)
@given(lengths=st.lists(st.integers(2, 30), min_size=1, max_size=60), batch_size=st.integers(1, 8),
       pool=st.integers(1, 4), seed=st.integers(0, 2**31), epoch=st.integers(0, 5),
       world=st.integers(1, 3), skip=st.integers(0, 4))
def test_bucket_batches_cover_every_sentence_once_per_epoch(lengths, batch_size, pool, seed, epoch,
                                                           world, skip):
    """One process: every sentence exactly once per epoch, in ceil(n / batch_size) batches.
    world ranks: rank r takes batches r, r+world, .. of that same epoch's order, truncated to
    ceil(n / batch_size) // world each, so the ranks together miss exactly the last
    ceil(n / batch_size) mod world batches of the order and never repeat a sentence. `skip`
    drops the first batches of the next epoch only; each iteration is the next epoch."""
    n = len(lengths)
    lengths = np.array(lengths)
    per_rank = -(-n // batch_size) // world

    def epoch_of(e, rank=0, world=1):
        return list(BucketBatches(lengths, batch_size, seed, pool, epoch=e, rank=rank, world=world))

    whole = epoch_of(epoch)
    assert sorted(i for batch in whole for i in batch) == list(range(n))
    assert len(whole) == -(-n // batch_size) and all(1 <= len(b) <= batch_size for b in whole)
    shards = [BucketBatches(lengths, batch_size, seed, pool, skip=skip, epoch=epoch, rank=r, world=world)
              for r in range(world)]
    assert {len(s) for s in shards} == {per_rank}
    for e, cut in ((epoch, skip), (epoch + 1, 0)):
        single = whole if e == epoch else epoch_of(e)
        got = [list(s) for s in shards]
        for r in range(world):
            assert got[r] == single[r::world][:per_rank][cut:]
        seen = [i for shard in got for batch in shard for i in batch]
        assert len(seen) == len(set(seen))
        if cut == 0:
            kept = sorted(i for batch in single[:per_rank * world] for i in batch)
            assert sorted(seen) == kept
            if world == 1:
                assert sorted(seen) == list(range(n))


def test_bucket_batches_go_on_to_the_next_epoch_after_set_epoch():
    lengths = np.arange(2, 52)
    sampler = BucketBatches(lengths, 3, seed=0)
    sampler.set_epoch(3)
    list(sampler)
    assert list(sampler) == list(BucketBatches(lengths, 3, seed=0, epoch=4))


@examples(150)
@given(lengths=shapes, num_columns=st.integers(1, 12))
def test_eval_columns_score_every_target_once(lengths, num_columns):
    """Every non-`<s>` position is a target exactly once, its input the token before it; each
    column starts at a `<s>` (the carried state resets only there) and walks the stream in
    order; padding and `<s>` targets are IGNORE with position -1."""
    stream = _distinct_stream(lengths)
    inputs, targets, positions = (t.numpy() for t in eval_columns(stream, num_columns))
    assert inputs.shape == targets.shape == positions.shape
    assert 1 <= len(inputs) <= min(num_columns, len(lengths))
    kept = positions >= 0
    at = positions[kept]
    assert sorted(at.tolist()) == np.flatnonzero(stream != BOS_ID).tolist()
    assert np.array_equal(targets[kept], stream[at]) and np.array_equal(inputs[kept], stream[at - 1])
    assert np.all(targets[~kept] == IGNORE) and np.all(inputs[:, 0] == BOS_ID)
    for row, places in zip(inputs, positions, strict=True):
        first = int(places[places >= 0][0]) - 1
        filled = int(np.flatnonzero(places >= 0)[-1]) + 1
        assert np.array_equal(row[:filled], stream[first:first + filled])


@examples(60)
@given(lengths=shapes, eval_batch_size=st.integers(1, 6), bptt=st.integers(1, 8),
       world=st.integers(1, 3), cloze=st.booleans())
def test_valid_loader_scores_every_target_once_across_ranks(lengths, eval_batch_size, bptt, world,
                                                            cloze):
    """batches.valid_loader, causal or cloze, sharded over world ranks: together the ranks predict
    every non-`<s>` token exactly once (as the pair (token before it, token); all words are
    distinct) and read every sentence once; a causal rank's windows continue its rows, each
    row starting at a `<s>`."""
    from pipeline.neural.batches import valid_loader
    stream = _distinct_stream(lengths)
    params = TrainParams(eval_batch_size=eval_batch_size, bptt=bptt)
    expected = Counter((int(stream[p - 1]), int(stream[p])) for p in np.flatnonzero(stream != BOS_ID))
    got, sentences = Counter(), []
    for rank in range(world):
        batches = list(valid_loader(cloze, stream, params, rank=rank, world=world))
        if cloze:
            for tokens, sizes in batches:
                targets = cloze_targets(tokens, sizes)
                for row, target, size in zip(tokens, targets, sizes.tolist(), strict=True):
                    sentences.append(row[:size].tolist())
                    assert (target != IGNORE).sum() == size - 1
                    got.update(zip(row[:size - 1].tolist(), target[:size - 1].tolist(), strict=True))
        elif batches:
            inputs = torch.cat([b[0] for b in batches], 1)
            targets = torch.cat([b[1] for b in batches], 1)
            assert torch.all(inputs[:, 0] == BOS_ID)
            carried = targets[:, :-1] != IGNORE
            assert torch.equal(inputs[:, 1:][carried], targets[:, :-1][carried])
            keep = targets != IGNORE
            got.update(zip(inputs[keep].tolist(), targets[keep].tolist(), strict=True))
    assert got == expected
    if cloze:
        starts = np.flatnonzero(stream == BOS_ID).tolist() + [len(stream)]
        whole = [stream[a:b].tolist() for a, b in zip(starts, starts[1:], strict=False)]
        assert sorted(sentences) == sorted(whole)
