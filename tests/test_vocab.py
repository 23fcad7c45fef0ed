import json

import numpy as np

from pipeline.text.vocab import BOS_ID, EOS_ID, UNK_ID, Vocab, load_vocab, sentence_bounds

from .conftest import TOY
from .oracle_prepare import split_stats, vocab_of


def test_specials_fixed_and_frequency_order(toy_vocab):
    assert toy_vocab.tokens[:3] == ("<unk>", "<s>", "</s>")
    assert toy_vocab.tokens[3] == "the"          # most frequent word first


def test_min_count_and_max_size():
    vocab = vocab_of(TOY, min_count=2, max_size=3)
    assert vocab.tokens[3:] == ("the", "dog", "sat")
    assert vocab.encode(["mat"]).tolist() == [UNK_ID]


def test_round_trip_and_stream(toy_vocab):
    ids = toy_vocab.encode(TOY[0])
    assert toy_vocab.decode(ids) == TOY[0]
    stream = toy_vocab.stream(TOY[:2])
    assert stream[0] == BOS_ID and stream[len(TOY[0]) + 1] == EOS_ID
    starts, ends = sentence_bounds(stream)
    assert starts.tolist() == [0, len(TOY[0]) + 2]
    assert ends.tolist() == [len(TOY[0]) + 1, len(stream) - 1]


def test_stats_count_targets_and_oov():
    vocab = vocab_of(TOY, min_count=2, max_size=100)
    stream = vocab.stream([["the", "mat"]])
    stats = split_stats(stream)
    assert stats == {"sentences": 1, "tokens": 3, "types": 3, "oov": 1, "oov_rate": 1 / 3}


def test_json_round_trip(toy_vocab, tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(toy_vocab.to_json()))
    assert load_vocab(tmp_path) == toy_vocab
    assert np.array_equal(toy_vocab.stream(TOY), load_vocab(tmp_path).stream(TOY))


def test_encode_text_matches_stream():
    """KenLM's rules: a blank line is an empty sentence; a literal <unk> is the unknown word."""
    from pipeline.text.vocab import encode_text
    text = "the cat sat\n\n  the dog  \nzebra\n"
    tokens, stream, oov = encode_text(text)
    assert tokens[:3] == ("<unk>", "<s>", "</s>") and set(tokens[3:]) == {"the", "cat", "sat", "dog", "zebra"}
    vocab = Vocab(tokens)
    sentences = [line.split() for line in text.splitlines()]
    np.testing.assert_array_equal(stream, vocab.stream(sentences))
    assert not oov.any()
    known = vocab_of([["the", "cat"]], 1, 10)
    _, stream, oov = encode_text("the zebra\ncat <unk>", known.tokens)
    assert stream.tolist() == [1, known.index["the"], 0, 2, 1, known.index["cat"], 0, 2]
    assert oov.tolist() == [False, True, False, False, True, False]
    assert encode_text("")[1].tolist() == []
    assert encode_text("\n")[1].tolist() == [1, 2]
