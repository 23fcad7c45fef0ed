"""`<s>`, `</s>` written in text (kpu/kenlm#204): `ngram build` refuses them naming the line, or
reads them as spaces with --skip-symbols (lmplz's --skip_symbols); `ngram query` scores them as
KenLM's query does; prepare refuses them naming the file and the line."""
import json
import random
import re

import numpy as np
import pytest

from pipeline import config
from pipeline.cli.main import main
from pipeline.text import chunked, corpus
from pipeline.text.vocab import encode_text

MARKED = ["a <s> b c", "<s> b a", "c a </s>", "</s> c b a c", "<s>", "b <unk> a", "a </s> <s> b",
          "c b </s> a <s> b a", ""]


def _text(lines: int, seed: int, marked: list[str] = ()) -> str:
    rng = random.Random(seed)
    body = [" ".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 9))) for _ in range(lines)]
    return "\n".join(body + list(marked)) + "\n"


def _build(tmp_path, text: str, *extra: str) -> bytes:
    (tmp_path / "t.txt").write_text(text)
    main(["ngram", "build", str(tmp_path / "t.txt"), "--order", "3", "--arpa", str(tmp_path / "m.arpa"),
          "--discount-fallback", *extra])
    return (tmp_path / "m.arpa").read_bytes()


def _refusal(capsys, run) -> str:
    with pytest.raises(SystemExit) as raised:
        run()
    assert raised.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_build_names_the_line_and_the_flag(tmp_path, capsys):
    """The line counts across blocks of the text (-S 1M reads it 64 KiB at a time)."""
    text = _text(30_000, 1) + "x y </S> z\n"
    line = _refusal(capsys, lambda: _build(tmp_path, text, "-S", "1M", "--lowercase"))
    for thing in ("t.txt", "line 30,001", "'</s>'", "lowercased", "--skip-symbols"):
        assert thing in line, (thing, line)
    _build(tmp_path, text, "-S", "1M")   # not lowercased: an ordinary word


def test_skip_symbols_reads_markers_as_spaces(tmp_path):
    """lmplz's --skip_symbols (corpus_count.cc): <s>, </s> and <unk> are skipped, not counted."""
    text = _text(200, 2, MARKED)
    spaced = re.sub(r"(?<!\S)(<s>|</s>|<unk>)(?!\S)", " ", text)
    assert _build(tmp_path, text, "--skip-symbols") == _build(tmp_path, spaced)
    assert _build(tmp_path, text.replace("</s>", "</S>"), "--skip-symbols", "--lowercase") == \
        _build(tmp_path, spaced, "--lowercase")


def test_query_scores_markers_as_kenlm(tmp_path, capsys):
    """KenLM's query: a `<s>` or `</s>` in a line is a word (a token, not an OOV): p(<s>) is its
    backoffs plus the ARPA's 0; after `<s>` the state is <s>'s, after `</s>` the null context."""
    kenlm = pytest.importorskip("kenlm", reason="the kenlm module (dev extra) is not installed")
    _build(tmp_path, _text(400, 3))
    test = _text(30, 4, MARKED + ["zz <s> a", "a b </s> zz </s>"])
    (tmp_path / "q.txt").write_text(test)
    main(["ngram", "query", str(tmp_path / "m.arpa"), str(tmp_path / "q.txt"), "--json", "--per-sentence"])
    ours = json.loads(capsys.readouterr().out)
    theirs = kenlm.Model(str(tmp_path / "m.arpa"))
    scores = [list(theirs.full_scores(line)) for line in test.splitlines()]
    np.testing.assert_allclose(ours["sentence_totals"], [sum(s for s, _, _ in line) for line in scores],
                               atol=1e-4)
    assert ours["sentence_oovs"] == [sum(o for _, _, o in line) for line in scores]
    flat = [entry for line in scores for entry in line]
    total, oov = sum(s for s, _, _ in flat), sum(s for s, _, o in flat if o)
    oovs = sum(o for _, _, o in flat)
    assert (ours["tokens"], ours["oovs"]) == (len(flat), oovs)
    assert ours["perplexity_including_oovs"] == pytest.approx(10 ** (-total / len(flat)), rel=1e-4)
    assert ours["perplexity_excluding_oovs"] == pytest.approx(10 ** (-(total - oov) / (len(flat) - oovs)),
                                                              rel=1e-4)


def test_encode_text_keeps_markers_as_complements():
    tokens, stream, oov = encode_text("a <s> b\n</s>\n")
    assert stream.tolist() == [1, tokens.index("a"), ~1, tokens.index("b"), 2, 1, ~2, 2]
    assert not oov.any()
    _, stream, _ = encode_text("a <unk> b\n", markers=("<s>", "</s>", "<unk>"))
    assert stream.tolist() == [1, 3, ~0, 4, 2]


@pytest.mark.parametrize("split", ["train.txt", "test.txt"])
def test_prepare_names_the_file_and_line(tmp_path, split):
    """A test split's `<s>` once went into test.npy as a sentence start (a stream cut in two)."""
    for name, seed in (("train.txt", 5), ("valid.txt", 6), ("test.txt", 7)):
        (tmp_path / name).write_text(_text(300, seed, ["a </s> b"] if name == split else []))
    params = config.Params(corpus=config.CorpusParams(source=str(tmp_path), tokenizer="whitespace"))
    with pytest.raises(corpus.CorpusError) as raised:
        chunked.prepare(params, tmp_path / "out", 1 << 30, block=256, progress=lambda line: None)
    for thing in (str(tmp_path / split), "line 301", "'</s>'", "remove"):
        assert thing in str(raised.value), (thing, str(raised.value))
