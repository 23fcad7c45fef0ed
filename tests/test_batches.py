import numpy as np
import pytest
import torch

from pipeline.neural.batches import (
    IGNORE,
    StreamWindows,
    cloze_targets,
    eval_columns,
    pad_sentences,
    sentences_of,
)
from pipeline.text.vocab import BOS_ID


def _stream(rng, sentences=40):
    parts = [np.concatenate([[1], rng.integers(3, 50, size=rng.integers(0, 12)), [2]]) for _ in range(sentences)]
    return np.concatenate(parts).astype(np.int32)


@pytest.mark.parametrize("columns", [1, 3, 7, 100])
def test_eval_columns_give_every_target_once(rng, columns):
    stream = _stream(rng)
    inputs, targets, positions = eval_columns(stream, columns)
    kept = positions[positions >= 0].numpy()
    expected = np.flatnonzero(stream != BOS_ID)
    assert sorted(kept.tolist()) == expected.tolist()
    np.testing.assert_array_equal(targets[positions >= 0].numpy(), stream[kept])
    # each input is the token just before its target
    rows, cols = np.nonzero(positions.numpy() >= 0)
    np.testing.assert_array_equal(inputs.numpy()[rows, cols], stream[positions.numpy()[rows, cols] - 1])


def test_stream_windows_are_contiguous_and_mask_bos(rng):
    stream = _stream(rng)
    windows = StreamWindows(stream, batch_size=4, bptt=5)
    columns = len(stream) // 4
    seen = 0
    for i in range(len(windows)):
        inputs, targets = windows[i]
        assert inputs.shape == targets.shape and inputs.shape[0] == 4
        raw = windows.data[:, i * 5 + 1: i * 5 + 1 + inputs.shape[1]]
        assert ((targets == IGNORE) == (raw == BOS_ID)).all()
        seen += inputs.shape[1]
    assert seen == columns - 1


def test_sentence_padding_and_cloze_targets(rng):
    stream = _stream(rng, 5)
    batch = sentences_of(stream)
    tokens, lengths = pad_sentences(batch)
    targets = cloze_targets(tokens, lengths)
    assert (targets != IGNORE).sum().item() == int(np.sum(stream != BOS_ID))


@pytest.mark.parametrize("rank,world", [(0, 1), (0, 3), (2, 3)])
def test_sentences_read_a_memory_mapped_stream_lazily(rng, tmp_path, rank, world):
    """Sentences holds bounds, not a list of copies: item i is sentences_of's i-th sentence of
    the rank's share, read from the (memory-mapped) stream."""
    from pipeline.neural.batches import Sentences
    stream = _stream(rng, 50)
    np.save(tmp_path / "train.npy", stream)
    mapped = np.load(tmp_path / "train.npy", mmap_mode="r")
    sentences = Sentences(mapped, rank, world)
    expected = sentences_of(stream)[rank::world]
    assert len(sentences) == len(expected)
    assert sentences.lengths.tolist() == [len(s) for s in expected]
    for i, sentence in enumerate(expected):
        assert sentences[i].dtype == np.int64
        np.testing.assert_array_equal(sentences[i], sentence)
    assert not hasattr(sentences, "items")


def test_bucket_batches_cover_every_sentence_once_per_epoch(rng):
    from pipeline.neural.batches import BucketBatches
    lengths = rng.integers(2, 40, size=103)
    sampler = BucketBatches(lengths, batch_size=8, seed=0, pool=3)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 13
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(103))
    assert first != second
    spread = np.mean([np.ptp(lengths[b]) for b in first])
    assert spread < np.ptp(lengths) / 2   # batches hold sentences of similar length


def test_ranks_read_the_columns_of_one_big_batch(rng):
    """Distributed stream batching: rank r's windows are rows r*B..(r+1)*B-1 of the windows
    one process reads with world x B columns; every rank has the same number of windows."""
    from pipeline.neural.batches import StreamWindows
    stream = rng.integers(3, 50, size=1003)
    whole = StreamWindows(stream, batch_size=6, bptt=5)
    ranks = [StreamWindows(stream, batch_size=3, bptt=5, rank=r, world=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)
    for i in range(len(whole)):
        inputs = torch.cat([ranks[0][i][0], ranks[1][i][0]])
        assert torch.equal(inputs, whole[i][0])


def test_bucket_batches_split_evenly_across_ranks(rng):
    from pipeline.neural.batches import BucketBatches
    lengths = rng.integers(3, 30, size=101)
    shards = [list(BucketBatches(lengths, 8, seed=1, rank=r, world=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(BucketBatches(lengths, 8, 1, rank=0, world=3))
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen))   # no sentence twice


def test_cloze_targets_follow_the_tokens_device():
    """Regression: on a GPU the positions were made on the CPU and birnn training crashed. The
    meta device stands in for CUDA here (same device checks, no GPU needed)."""
    tokens = torch.zeros(2, 5, dtype=torch.long, device="meta")
    assert cloze_targets(tokens, torch.tensor([3, 5])).device.type == "meta"
