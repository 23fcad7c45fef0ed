import numpy as np
import pytest

from pipeline.batches import (
    IGNORE,
    StreamWindows,
    cloze_targets,
    eval_columns,
    pad_sentences,
    sentences_of,
)
from pipeline.vocab import BOS_ID


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


def test_bucket_batches_cover_every_sentence_once_per_epoch(rng):
    from pipeline.batches import BucketBatches
    lengths = rng.integers(2, 40, size=103)
    sampler = BucketBatches(lengths, batch_size=8, seed=0, pool=3)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 13
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(103))
    assert first != second
    spread = np.mean([np.ptp(lengths[b]) for b in first])
    assert spread < np.ptp(lengths) / 2   # batches hold sentences of similar length
