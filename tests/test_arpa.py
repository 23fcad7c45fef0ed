"""The ARPA reader at the edges: files of other toolkits read as KenLM reads them, broken ones
refused with one line (file, line, cause). Small hand-written files; the value KenLM gives is
worked out by hand in each test. KenLM's own cases: ../shared/reference/kenlm/edges."""
import gzip
import subprocess
import sys

import pytest

from pipeline.cli.ngram import query_summary
from pipeline.ngram import arpa
from pipeline.ngram.arpa import ArpaError

from .conftest import SHARED

REFERENCE = SHARED / "reference" / "kenlm"
EDGES = REFERENCE / "edges"

BIGRAM = """\\data\\
ngram 1=4
ngram 2=3

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-0.5\ta\t-0.3
-0.7\t</s>

\\2-grams:
-0.2\t<s> a
-0.1\ta </s>
-0.4\ta a

\\end\\
"""


def _total(tmp_path, text: str, sentence: str, notes=None, name="m.arpa") -> float:
    path = tmp_path / name
    path.write_bytes(text.encode())
    model, tokens = arpa.read(path, notes)
    return query_summary(model, tokens, sentence + "\n")["sentence_totals"][0]


def test_the_hand_written_model(tmp_path):
    # p(a|<s>) + p(a|a) + p(</s>|a) = -0.2 - 0.4 - 0.1
    assert _total(tmp_path, BIGRAM, "a a") == pytest.approx(-0.7)
    # p(a|<s>) = -0.2; p(</s>|a) = -0.1 ; "a </s>" only
    assert _total(tmp_path, BIGRAM, "a") == pytest.approx(-0.3)


def test_lenient_where_kenlm_is(tmp_path):
    """\\r\\n endings, comments and blank lines before \\data\\, padded counts, blank lines in
    and between sections, trailing blank lines: the same model."""
    text = ("# written by hand\n\n" + BIGRAM.replace("ngram 1=4", "ngram  1= 4 ")
            .replace("-0.4\ta a", "-0.4 a  a").replace("-0.2\t<s> a", "-0.2\t<s>\ta")
            .replace("-0.5\ta\t-0.3\n", "-0.5\ta\t-0.3\n\n").replace("\\2-grams:\n", "\n\\2-grams:\n\n")
            + "\n\n").replace("\n", "\r\n")
    assert _total(tmp_path, text, "a a") == pytest.approx(-0.7)
    # <s> is context only: lmplz writes its probability -99, other toolkits -inf
    assert _total(tmp_path, BIGRAM.replace("-99\t<s>", "-inf\t<s>"), "a a") == pytest.approx(-0.7)
    compressed = tmp_path / "model.bin"          # gzip recognised by its bytes, not its name
    compressed.write_bytes(gzip.compress(BIGRAM.encode()))
    model, tokens = arpa.read(compressed)
    assert query_summary(model, tokens, "a a\n")["sentence_totals"][0] == pytest.approx(-0.7)


def _respelled(text: bytes, spelling: bytes) -> bytes:
    """`text` with each entry's log10 p and backoff written with the printf `spelling`."""
    import re
    return re.sub(rb"(?m)^([-0-9.e]+)(\t[^\t\n]+)(?:\t([-0-9.e]+))?$", lambda m: spelling % float(m[1]) + m[2]
                  + (b"\t" + spelling % float(m[3]) if m[3] else b""), text)


def test_any_printf_spelling_of_a_number_reads_as_strtod_reads_it(tmp_path):
    """%.18e is 25 characters, %.21e 28: once read through a 24-byte field (a wrong score, or
    numpy's error with no file). Each spelling gives the very same model."""
    import numpy as np
    _, _, text = _model([["a", "b", "a", "c"], ["b", "c", "a", "a"]], 3)
    (tmp_path / "m.arpa").write_bytes(text)
    want, _ = arpa.read(tmp_path / "m.arpa")
    for spelling in (b"%.18e", b"%.19e", b"%.21e", b"%.40E", b"%+.30f", b"%.17g"):
        (tmp_path / "respelled.arpa").write_bytes(_respelled(text, spelling))
        got, _ = arpa.read(tmp_path / "respelled.arpa")
        for n in range(3):
            np.testing.assert_array_equal(got.log10_prob[n], want.log10_prob[n], err_msg=spelling)
            np.testing.assert_array_equal(got.log10_backoff[n], want.log10_backoff[n], err_msg=spelling)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference/kenlm not available")
def test_lmplzs_model_respelled_with_18_digits_scores_as_kenlm_query(tmp_path):
    """The issue's case (perplexity 118,834 for KenLM's 217.04), here on kjv3k.o3."""
    reference = {line.split(":")[0]: float(line.split("\t")[1]) for line in
                 (REFERENCE / "kjv3k.o3.test.summary.txt").read_text().splitlines()}
    path = tmp_path / "o3.arpa"
    path.write_bytes(_respelled(gzip.decompress((REFERENCE / "kjv3k.o3.arpa.gz").read_bytes()), b"%.18e"))
    model, tokens = arpa.read(path)
    summary = query_summary(model, tokens, (REFERENCE / "kjv3k.test.txt").read_text())
    assert summary["perplexity_including_oovs"] == pytest.approx(reference["Perplexity including OOVs"], rel=1e-6)


def test_a_latin1_file_is_read_as_bytes_as_kenlm_does(tmp_path):
    """Words are bytes: a Latin-1 `rivière` is one word in every order (not a false 'not among the
    1-grams'); the same model as the UTF-8 file; UTF-8 text's `rivière` is another word (OOV)."""
    import numpy as np
    _, _, text = _model([["la", "rivière", "a"], ["rivière", "a", "la", "rivière"]], 3)
    (tmp_path / "utf8.arpa").write_bytes(text)
    (tmp_path / "latin1.arpa").write_bytes(text.decode("utf-8").encode("latin-1"))
    want, tokens = arpa.read(tmp_path / "utf8.arpa")
    got, latin = arpa.read(tmp_path / "latin1.arpa")
    assert latin == tuple(t.encode("latin-1").decode("utf-8", "surrogateescape") for t in tokens)
    for n in range(3):
        np.testing.assert_array_equal(got.log10_prob[n], want.log10_prob[n])
    assert query_summary(got, latin, "la rivière a\n")["oovs"] == 1
    assert query_summary(want, tokens, "la rivière a\n")["oovs"] == 0


def test_unknown_word_spellings_and_a_missing_unknown_word(tmp_path):
    # b is unknown: p(<unk>|<s>) backs off: bo(<s>) + p(<unk>) = -0.5 - 1.0; p(a|<unk>) =
    # bo(<unk>) + p(a) = 0 - 0.5; p(</s>|a) = -0.1
    assert _total(tmp_path, BIGRAM, "b a") == pytest.approx(-2.1)
    assert _total(tmp_path, BIGRAM.replace("<unk>", "<UNK>"), "b a") == pytest.approx(-2.1)
    notes = []
    without = BIGRAM.replace("ngram 1=4", "ngram 1=3").replace("-1.0\t<unk>\t0\n", "")
    assert _total(tmp_path, without, "b a", notes) == pytest.approx(-0.5 - 100 - 0.5 - 0.1)
    names(notes[0], "<unk>", "-100")


def test_a_section_of_zero_ngrams_is_read(tmp_path):
    text = BIGRAM.replace("ngram 2=3\n", "ngram 2=3\nngram 3=0\n").replace(
        "\\end\\", "\\3-grams:\n\n\\end\\").replace("-0.1\ta </s>", "-0.1\ta </s>\t0")
    assert _total(tmp_path, text, "a a") == pytest.approx(-0.7)


ORPHAN = BIGRAM.replace("ngram 2=3\n", "ngram 2=3\nngram 3=1\n").replace(
    "\\end\\", "\\3-grams:\n-0.05\ta a </s>\n-0.01\t<s> <s> a\n\n\\end\\").replace("ngram 3=1", "ngram 3=2")


def names(message: str, *things: str) -> None:
    """Each thing (a line number, an n-gram, a header line) stands in the message."""
    missing = [thing for thing in things if thing not in message]
    assert not missing, (missing, message)


@pytest.mark.parametrize("change,named", [   # named: what the line names besides the file
    (lambda t: "hello\n" + t, ("line 1", "'hello'", "\\data\\")),
    (lambda t: t.replace("ngram 2=3", "ngram 3=3"), ("line 3", "ngram 1=")),
    (lambda t: t.replace("ngram 2=3", "ngram 2=4"), ("2-grams", "line 12", "ngram 2=4")),
    (lambda t: t.replace("ngram 2=3", "ngram 2=2"), ("2-grams", "ngram 2=2")),
    (lambda t: t.replace("-0.7\t</s>\n", "").replace("ngram 1=4", "ngram 1=3")
              .replace("-0.1\ta </s>\n", "").replace("ngram 2=3", "ngram 2=2"), ("missing", "</s>")),
    (lambda t: t.replace("-99\t<s>\t-0.5\n", "").replace("ngram 1=4", "ngram 1=3")
              .replace("-0.2\t<s> a\n", "").replace("ngram 2=3", "ngram 2=2"), ("missing", "<s>")),
    (lambda t: t.replace("-0.4\ta a", "-0.4\ta a\n-0.3\ta a").replace("ngram 2=3", "ngram 2=4"),
     ("line 15", "line 14", "twice")),
    (lambda t: t.replace("-0.4\ta a", "0.4\ta a"), ("line 14", "positive")),
    (lambda t: t.replace("-0.4\ta a", "-0.4\ta a\t-0.2"), ("line 14", "backoff", "2-gram")),
    (lambda t: t.replace("-0.4\ta a", "-0.4\ta zebra"), ("line 14", "'zebra'", "1-grams")),
    (lambda t: t.replace("-0.4\ta a", "-0.4\ta a "), ("line 14", "2 words")),
    (lambda t: t.replace("-0.5\ta\t-0.3", "-0.5 a\t-0.3"), ("line 8", "number")),
    (lambda t: t.replace("-0.4\ta a", "nan?\ta a"), ("line 14", "number")),
    (lambda t: t.replace("-1.0\t<unk>", "nan\t<unk>"), ("line 6", "NaN")),
    (lambda t: t.replace("-0.5\ta\t-0.3", "inf\ta\t-0.3"), ("line 8", "positive")),
    (lambda t: t.replace("-0.5\ta\t-0.3", "-inf\ta\t-0.3"), ("line 8", "-inf", "<s>")),
    (lambda t: t.replace("-0.4\ta a", "NaN\ta a"), ("line 14", "NaN")),
    (lambda t: t.replace("-0.4\ta a", "-inf\ta a"), ("line 14", "-inf")),
    (lambda t: t.replace("-0.2\t<s> a", "-Infinity\t<s> a"), ("line 12", "-inf")),
    (lambda t: t.replace("\\end\\\n", ""), ("\\end\\", "missing")),
    (lambda t: t + "more\n", ("line 17", "\\end\\", "'more'")),
    (lambda t: t.replace("\\2-grams:", "\\2-gram:"), ("\\2-grams:", "missing")),
    (lambda t: ORPHAN, ("line 19", "'<s> <s> a'", "'<s> <s>'")),
])
def test_refused_with_one_line(tmp_path, change, named):
    path = tmp_path / "bad.arpa"
    path.write_text(change(BIGRAM))
    with pytest.raises(ArpaError) as caught:
        arpa.read(path)
    assert "\n" not in str(caught.value)
    names(str(caught.value), str(path), *named)


def test_the_command_line_says_one_line_for_a_broken_or_missing_file(tmp_path):
    text = tmp_path / "test.txt"
    text.write_text("a a\n")
    (tmp_path / "bad.arpa").write_text(ORPHAN)
    cli = [sys.executable, "-m", "pipeline.cli", "ngram", "query"]
    for model, named in ((tmp_path / "bad.arpa", "context"), (tmp_path / "nowhere.arpa", ""),
                         (tmp_path, "directory")):
        result = subprocess.run([*cli, str(model), str(text)], capture_output=True, text=True)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        names(result.stderr, f"MODEL {model}", named)
    (tmp_path / "nan.arpa").write_text(BIGRAM.replace("-0.7\t</s>", "nan\t</s>"))
    result = subprocess.run([*cli, str(tmp_path / "nan.arpa"), str(text)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"lmpipe: error: MODEL {tmp_path / 'nan.arpa'}"), result.stderr
    names(result.stderr, "line 9", "NaN")
    result = subprocess.run([*cli, str(tmp_path / "bad.arpa"), str(tmp_path / "missing.txt")],
                            capture_output=True, text=True)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "ngram", "build", str(text), "--order", "2",
                             "--arpa", str(tmp_path / "no" / "such" / "m.arpa"), "--discount-fallback"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--arpa" in result.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(not EDGES.is_dir(), reason="shared/reference/kenlm/edges not available")
def test_kenlms_own_edge_files():
    test = (REFERENCE / "kjv3k.test.txt").read_text()
    reference = {line.split(":")[0]: float(line.split("\t")[1]) for line in
                 (REFERENCE / "kjv3k.o3.test.summary.txt").read_text().splitlines()}
    model, tokens = arpa.read(EDGES / "crlf.o3.arpa.gz")
    summary = query_summary(model, tokens, test)
    assert summary["perplexity_including_oovs"] == pytest.approx(reference["Perplexity including OOVs"], rel=1e-6)
    with pytest.raises(ArpaError, match=r"no-eos\.o3\.arpa\.gz.*</s>"):
        arpa.read(EDGES / "no-eos.o3.arpa.gz")
    with pytest.raises(ArpaError, match=r"line \d+: .*3-gram.*'(inclosings|inward|thummim|forehead|bullock) \.'"):
        arpa.read(EDGES / "orphan.o3.arpa.gz")
    model, tokens = arpa.read(EDGES / "orphan.o3.arpa.gz", orphans="keep")   # SRILM's reading
    summary = query_summary(model, tokens, test)
    assert summary["perplexity_including_oovs"] == pytest.approx(reference["Perplexity including OOVs"], rel=1e-3)


from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .test_properties import corpora, examples  # noqa: E402


def _model(corpus, order):
    import io
    assume(max(map(len, corpus)) + 2 >= order)

    from pipeline.ngram import counting, kneser_ney

    from .oracle_prepare import vocab_of
    vocab = vocab_of(corpus, 1, 0)
    counts = counting.count(vocab.stream(corpus), len(vocab), order)
    lm = kneser_ney.estimate(counts, fallback=(0.5, 1.0, 1.5))
    buffer = io.BytesIO()
    arpa.write(lm, counts, vocab.tokens, buffer)
    return lm, vocab, buffer.getvalue()


@examples(30)
@given(corpus=corpora, order=st.integers(1, 4))
def test_what_we_write_reads_back_and_scores_the_same(tmp_path_factory, corpus, order):
    lm, vocab, text = _model(corpus, order)
    path = tmp_path_factory.mktemp("arpa") / "m.arpa"
    path.write_bytes(text)
    loaded, tokens = arpa.read(path)
    stream = vocab.stream(corpus)
    import numpy as np
    mapping = np.array([tokens.index(t) for t in vocab.tokens])
    np.testing.assert_allclose(loaded.log10_probs(mapping[stream]), lm.log10_probs(stream), atol=1e-6)


@examples(40)
@given(corpus=corpora, order=st.integers(2, 3), cut=st.integers(0, 10**6), byte=st.integers(0, 255))
def test_a_damaged_file_is_read_or_refused_with_one_line(tmp_path_factory, corpus, order, cut, byte):
    """Drop a line or overwrite a byte anywhere: the reader either reads the file or raises
    ArpaError with one line; never another exception."""
    _, _, text = _model(corpus, order)
    lines = text.split(b"\n")
    damaged = [b"\n".join(lines[:cut % len(lines)] + lines[cut % len(lines) + 1:]),
               text[:cut % len(text)] + bytes([byte]) + text[cut % len(text) + 1:]]
    for i, data in enumerate(damaged):
        path = tmp_path_factory.mktemp("arpa") / f"m{i}.arpa"
        path.write_bytes(data)
        try:
            arpa.read(path)
        except ArpaError as error:
            assert "\n" not in str(error)


PRUNED = """\\data\\
ngram 1=5
ngram 2=3
ngram 3=1

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-0.5\ta\t-0.3
-0.6\tb\t-0.2
-0.7\t</s>\t0

\\2-grams:
-0.2\t<s> a\t-0.1
-0.1\ta </s>\t0
-0.4\ta a\t0

\\3-grams:
-0.02\tb a </s>

\\end\\
"""


def test_an_orphan_is_kept_with_its_own_context_as_srilm_does(tmp_path):
    """`b a </s>` has no context `b a`. Refused by default; with orphans="keep" SRILM's values:
    p(b|<s>) = bo(<s>) + p(b) = -1.1; p(a|<s> b) = p(a|b) = bo(b) + p(a) = -0.7 (the added
    context's probability); p(</s>|b a) = -0.02, the orphan itself; p(a|b a) = bo(b a) = 0 plus
    p(a|a) = -0.4."""
    path = tmp_path / "pruned.arpa"
    path.write_text(PRUNED)
    with pytest.raises(ArpaError) as caught:
        arpa.read(path)
    names(str(caught.value), "line 19", "'b a </s>'", "'b a'")
    notes = []
    model, tokens = arpa.read(path, notes, orphans="keep")
    assert "1 context(s) of n-grams were missing" in notes[0]
    totals = query_summary(model, tokens, "b a\nb a a\n")["sentence_totals"]
    assert totals[0] == pytest.approx(-1.1 - 0.7 - 0.02)
    assert totals[1] == pytest.approx(-1.1 - 0.7 - 0.4 - 0.1)
