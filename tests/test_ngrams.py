"""Counting and estimation: hand-checked toy answers, invariants, and KenLM's own outputs."""
import gzip
import json
import math

import numpy as np
import pytest

from pipeline import files
from pipeline.ngram import arpa, counting, kneser_ney, outputs
from pipeline.ngram.kneser_ney import DiscountError
from pipeline.text.vocab import BOS_ID, EOS_ID

from .conftest import SHARED, TOY
from .oracle_prepare import vocab_of

REFERENCE = SHARED / "reference" / "kenlm"


def _count_of(counts, vocab, words):
    index = vocab.index
    n = len(words)
    rows = counts.words(n)
    target = np.array([index[w] for w in words])
    hit = np.flatnonzero((rows == target).all(axis=1))
    return (int(counts.counts[n - 1][hit[0]]), int(counts.adjusted[n - 1][hit[0]])) if len(hit) else (0, 0)


def test_toy_counts_by_hand(toy_vocab, toy_stream):
    counts = counting.count(toy_stream, len(toy_vocab), 3)
    assert _count_of(counts, toy_vocab, ["the"]) == (6, 3)          # preceded by <s>, on, saw
    assert _count_of(counts, toy_vocab, ["sat"]) == (3, 2)          # cat sat, dog sat
    assert _count_of(counts, toy_vocab, ["the", "dog"]) == (2, 2)   # saw the dog, <s> the dog
    assert _count_of(counts, toy_vocab, ["<s>", "the"]) == (3, 3)   # starts with <s>: raw count
    assert _count_of(counts, toy_vocab, ["sat", "on", "the"]) == (2, 2)  # highest order: raw
    assert _count_of(counts, toy_vocab, ["on", "the", "cat"]) == (0, 0)  # never seen
    assert _count_of(counts, toy_vocab, ["<s>"]) == (4, 4)


def test_counts_sum_to_positions(toy_vocab, toy_stream):
    counts = counting.count(toy_stream, len(toy_vocab), 4)
    lengths = np.array([len(s) + 2 for s in TOY])
    for n in range(1, 5):
        assert counts.counts[n - 1].sum() == np.maximum(lengths - n + 1, 0).sum()


def test_words_rebuild_from_keys(toy_vocab, toy_stream):
    counts = counting.count(toy_stream, len(toy_vocab), 3)
    text = {" ".join(toy_vocab.decode(row)) for row in counts.words(3)}
    assert "<s> the cat" in text and "the mat </s>" in text and len(text) == len(counts.keys[2])


def _all_distributions_sum_to_one(lm, vocab_size, contexts):
    for context in contexts:
        total = 0.0
        for word in range(vocab_size):
            if word == BOS_ID:
                continue
            tail = [word] if word == EOS_ID else [word, EOS_ID]
            stream = np.array([BOS_ID, *context, *tail], dtype=np.int64)
            total += 10 ** lm.log10_probs(stream)[len(context)]  # the target after the context
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_kneser_ney_distributions_sum_to_one(toy_vocab, toy_stream):
    counts = counting.count(np.concatenate([toy_stream] * 3 + [toy_vocab.stream([["a", "cat"], ["a", "dog", "saw", "a", "mat"]])]),
                          len(toy_vocab), 3)
    lm = kneser_ney.estimate(counts, fallback=kneser_ney.LMPLZ_FALLBACK)
    index = toy_vocab.index
    contexts = [[], [index["the"]], [index["the"], index["cat"]], [index["sat"], index["on"]],
                [index["mat"], index["log"]]]
    _all_distributions_sum_to_one(lm, len(toy_vocab), contexts)


def test_discounts_fail_loudly_on_tiny_corpus(toy_vocab, toy_stream):
    counts = counting.count(toy_stream, len(toy_vocab), 3)
    with pytest.raises(DiscountError) as raised:
        kneser_ney.estimate(counts)
    assert "ngram.order" in str(raised.value) and "ngram.discount_fallback" in str(raised.value)


def test_mle_is_the_textbook_ratio(toy_vocab, toy_stream):
    counts = counting.count(toy_stream, len(toy_vocab), 3)
    test = toy_vocab.stream([["the", "cat", "sat"]])
    bigram = kneser_ney.mle_probs(counts, test, 2)
    # P(the|<s>) = 3/4, P(cat|the) = 2/6, P(sat|cat) = 1/2, P(</s>|sat) = 1/3
    np.testing.assert_allclose(bigram, [3 / 4, 2 / 6, 1 / 2, 1 / 3])
    trigram = kneser_ney.mle_probs(counts, test, 3)
    # P(the|<s>) (bigram at the start), P(cat|<s> the) = 2/3, P(sat|the cat) = 1/2, P(</s>|cat sat) = 0
    np.testing.assert_allclose(trigram, [3 / 4, 2 / 3, 1 / 2, 0.0])


def test_mle_tables_read_a_row_group_at_a_time_give_the_same_probabilities(tmp_path, toy_vocab, toy_stream):
    """evaluate's MLE from counts.parquet (orders 1-3 of the n-grams the streams hold, 3 rows a
    row group) equals the MLE over the whole counts."""
    counts = counting.count(toy_stream, len(toy_vocab), 4)
    outputs.write_counts(tmp_path / "counts.parquet", counts, toy_vocab.tokens, rows=3)
    tests = [toy_vocab.stream([["the", "cat", "sat"], ["a", "dog", "the", "cat"]]), toy_stream]
    small, totals = counting.mle_tables(tmp_path / "counts.parquet", tests, len(toy_vocab), 3)
    for test in tests:
        for n in (2, 3):
            np.testing.assert_array_equal(kneser_ney.mle_probs(small, test, n, totals),
                                          kneser_ney.mle_probs(counts, test, n))


def test_model_npz_is_aligned_for_memory_maps_and_reproducible(tmp_path, toy_vocab, toy_stream):
    """save_npz: np.load reads it; every array's data 64-byte aligned in the file (numpy would
    search a misaligned map through a whole copy); the same arrays give the same bytes."""
    model = kneser_ney.estimate(counting.count(toy_stream, len(toy_vocab), 3), kneser_ney.LMPLZ_FALLBACK)
    arrays = model.arrays()
    for name in ("a.npz", "b.npz"):
        outputs.save_npz(tmp_path / name, arrays, step=2)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as read:
        assert all(np.array_equal(read[k], v) for k, v in arrays.items())
    mapped = files.load_arrays(tmp_path / "a.npz", mapped=True)
    assert sum(isinstance(a, np.memmap) for a in mapped.values()) >= 3 * model.order   # and discounts
    assert all(a.offset % 64 == 0 and a.flags.aligned for a in mapped.values() if isinstance(a, np.memmap))


def _reference_model(order):
    train = [line.split() for line in (REFERENCE / "kjv3k.train.txt").read_text().splitlines()]
    vocab = vocab_of(train, 1, 10**9)
    counts = counting.count(vocab.stream(train), len(vocab), order)
    return vocab, counts, kneser_ney.estimate(counts)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference/kenlm not available")
@pytest.mark.parametrize("order", [3, 5])
def test_matches_kenlm_reference(order):
    vocab, counts, lm = _reference_model(order)
    stats = (REFERENCE / f"kjv3k.o{order}.discounts.txt").read_text().split("\n")
    for n, line in enumerate(filter(None, stats), start=1):
        fields = line.split()
        assert int(fields[1]) == len(counts.keys[n - 1])
        expected = [float(f.split("=")[1]) for f in fields[2:]]
        np.testing.assert_allclose(lm.discounts[n - 1], expected, atol=1e-5)
    test = [line.split() for line in (REFERENCE / "kjv3k.test.txt").read_text().splitlines()]
    stream = vocab.stream(test)
    logp = lm.log10_probs(stream)
    sentence = np.cumsum(stream == BOS_ID)[stream != BOS_ID] - 1
    totals = np.bincount(sentence, logp)
    reference = [float(line.split()[1]) for line in
                 (REFERENCE / f"kjv3k.o{order}.test.sentence_scores.txt").read_text().splitlines()]
    np.testing.assert_allclose(totals, reference, atol=1e-4)   # KenLM's ARPA rounds to 7 digits
    summary = (REFERENCE / f"kjv3k.o{order}.test.summary.txt").read_text().splitlines()
    ppl = float(summary[0].split("\t")[1])
    assert 10 ** (-logp.mean()) == pytest.approx(ppl, rel=1e-6)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference/kenlm not available")
@pytest.mark.parametrize("order", [3, 5])
def test_arpa_records_match_kenlm(order):
    vocab, counts, lm = _reference_model(order)
    import io
    buffer = io.BytesIO()
    arpa.write(lm, counts, vocab.tokens, buffer, chunk=1000)
    ours = _parse_arpa(buffer.getvalue().decode().splitlines())
    with gzip.open(REFERENCE / f"kjv3k.o{order}.arpa.gz", "rt", encoding="utf-8") as handle:
        theirs = _parse_arpa(handle.read().splitlines())
    assert ours.keys() == theirs.keys()
    for gram, (prob, backoff) in theirs.items():
        assert ours[gram][0] == pytest.approx(prob, abs=2e-6), gram
        assert ours[gram][1] == pytest.approx(backoff, abs=2e-6), gram


def _parse_arpa(lines):
    entries = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0] and fields[0][0] in "-0123456789":
            entries[fields[1]] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
    return entries


def test_unseen_word_gets_uniform_share_only(toy_vocab):
    stream = toy_vocab.stream(TOY * 5 + [["a", "cat"], ["a", "dog", "saw", "a", "mat"]])
    counts = counting.count(stream, len(toy_vocab), 2)
    lm = kneser_ney.estimate(counts, fallback=kneser_ney.LMPLZ_FALLBACK)
    # <unk> (id 0) never occurs in training: p(<unk>) = γ / |V without <s>|
    p_unk = 10 ** lm.log10_prob[0][0]
    total = counts.adjusted[0].sum() - counts.adjusted[0][BOS_ID]
    discount = sum(d * np.sum(np.minimum(counts.adjusted[0][[i for i in range(len(toy_vocab)) if i != BOS_ID]], 3) == k)
                   for k, d in zip((1, 2, 3), lm.discounts[0], strict=True))
    assert p_unk == pytest.approx(discount / total / (len(toy_vocab) - 1))
    assert math.isfinite(lm.log10_prob[0][0])


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference/kenlm not available")
@pytest.mark.parametrize("order", [3, 5])
def test_cli_build_and_query_match_kenlm(tmp_path, order, capsys):
    """`lmpipe ngram build` then `query`: KenLM's summary and per-sentence totals; and our reader
    scores KenLM's own ARPA the same way."""
    import json

    from pipeline.cli.main import main as lmpipe
    out = tmp_path / "model.arpa"
    lmpipe(["ngram", "build", str(REFERENCE / "kjv3k.train.txt"), "--order", str(order), "--arpa", str(out)])
    summary_lines = (REFERENCE / f"kjv3k.o{order}.test.summary.txt").read_text().splitlines()
    reference = {line.split(":")[0]: float(line.split("\t")[1]) for line in summary_lines}
    totals = [float(line.split()[1]) for line in
              (REFERENCE / f"kjv3k.o{order}.test.sentence_scores.txt").read_text().splitlines()]
    for model in (out, REFERENCE / f"kjv3k.o{order}.arpa.gz"):
        capsys.readouterr()
        lmpipe(["ngram", "query", str(model), str(REFERENCE / "kjv3k.test.txt"), "--json", "--per-sentence"])
        ours = json.loads(capsys.readouterr().out)
        assert ours["perplexity_including_oovs"] == pytest.approx(reference["Perplexity including OOVs"], rel=1e-4)
        assert ours["perplexity_excluding_oovs"] == pytest.approx(reference["Perplexity excluding OOVs"], rel=1e-4)
        assert ours["oovs"] == reference["OOVs"] and ours["tokens"] == reference["Tokens"]
        np.testing.assert_allclose(ours["sentence_totals"], totals, atol=1e-3)


def test_arpa_round_trip(toy_vocab, tmp_path):
    from pipeline.ngram import arpa
    stream = toy_vocab.stream(TOY * 5 + [["a", "cat"], ["a", "dog", "saw", "a", "mat"]])
    counts = counting.count(stream, len(toy_vocab), 3)
    lm = kneser_ney.estimate(counts, fallback=kneser_ney.LMPLZ_FALLBACK)
    path = tmp_path / "toy.arpa"
    with open(path, "wb") as handle:
        arpa.write(lm, counts, toy_vocab.tokens, handle, chunk=3)
    loaded, tokens = arpa.read(path)
    assert tokens == toy_vocab.tokens
    test = toy_vocab.stream([["the", "dog", "sat", "on", "the", "mat"], ["a", "log"]])
    np.testing.assert_allclose(loaded.log10_probs(test), lm.log10_probs(test), atol=1e-6)


def test_arpa_reader_names_the_problem(tmp_path):
    from pipeline.ngram import arpa
    bad = tmp_path / "bad.arpa"
    bad.write_text("hello\n")
    with pytest.raises(arpa.ArpaError) as raised:
        arpa.read(bad)
    assert all(named in str(raised.value) for named in ("bad.arpa", "line 1", "'hello'"))


@pytest.mark.parametrize("high", [1000, 2**62])   # packed SIMD sort, and the argsort fallback
def test_unique_agrees_with_numpy(rng, high):
    key = rng.integers(0, high, size=5000) // 7 * 7
    key[:100] = key[100:200]                          # plenty of repeats
    unique, first, inverse, counted = counting._unique(key)
    expected, expected_counts = np.unique(key, return_counts=True)
    np.testing.assert_array_equal(unique, expected)
    np.testing.assert_array_equal(counted, expected_counts)
    np.testing.assert_array_equal(unique[inverse], key)
    np.testing.assert_array_equal(key[first], unique)


@pytest.mark.parametrize("mapped", [False, True])
def test_find_agrees_with_searchsorted(rng, tmp_path, mapped):
    """In memory and memory-mapped (its pages released after), keys sorted first past 65,536; -1
    stands for no key and is never found."""
    table = np.unique(rng.integers(0, 2**40, size=50_000))
    key = np.concatenate([rng.choice(table, 60_000), rng.integers(0, 2**40, size=40_000), [-1] * 9])
    if mapped:
        np.save(tmp_path / "t.npy", table)
        table = np.load(tmp_path / "t.npy", mmap_mode="r")
    found, at = counting.find(table, key)
    where = np.minimum(np.searchsorted(table, key), len(table) - 1)
    expected = table[where] == key
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal(at, np.where(expected, where, 0))
    assert found[:60_000].all() and not found[-9:].any()


EDGES = REFERENCE / "edges"


def _kenlm_arpa(name):
    with gzip.open(EDGES / name, "rt", encoding="utf-8", newline="\n") as handle:
        return _parse_arpa(handle.read().split("\n"))


def _build_and_query(tmp_path, capsys, case):
    from pipeline.cli.main import main as lmpipe
    out = tmp_path / "model.arpa"
    lmpipe(["ngram", "build", str(EDGES / f"{case}.train.txt"), "--order", "3", "--arpa", str(out)])
    capsys.readouterr()
    lmpipe(["ngram", "query", str(out), str(EDGES / f"{case}.test.txt"), "--json", "--per-sentence"])
    return _parse_arpa(out.read_text(encoding="utf-8").split("\n")), json.loads(capsys.readouterr().out)


@pytest.mark.skipif(not EDGES.is_dir(), reason="shared/reference/kenlm/edges not available")
@pytest.mark.parametrize("case", ["blank", "unicode"])
def test_kenlms_text_conventions(tmp_path, capsys, case):
    """Blank lines are empty sentences (their </s> predicted); words split only at space, tab
    and \\r, lines only at \\n: every ARPA record and every sentence total as KenLM's."""
    ours, summary = _build_and_query(tmp_path, capsys, case)
    theirs = _kenlm_arpa(f"{case}.o3.arpa.gz")
    assert ours.keys() == theirs.keys()
    for gram, (prob, backoff) in theirs.items():
        assert ours[gram][0] == pytest.approx(prob, abs=2e-6), gram
        assert ours[gram][1] == pytest.approx(backoff, abs=2e-6), gram
    if case == "blank":
        assert "<s> </s>" in ours
    reference = {line.split(":")[0]: float(line.split("\t")[1]) for line in
                 (EDGES / f"{case}.o3.test.summary.txt").read_text().splitlines()}
    assert summary["tokens"] == reference["Tokens"] and summary["oovs"] == reference["OOVs"]
    assert summary["perplexity_including_oovs"] == pytest.approx(reference["Perplexity including OOVs"], rel=1e-5)
    totals = [float(line.split()[1]) for line in
              (EDGES / f"{case}.o3.test.sentence_scores.txt").read_text().splitlines()]
    np.testing.assert_allclose(summary["sentence_totals"], totals, atol=1e-3)


@pytest.mark.skipif(not EDGES.is_dir(), reason="shared/reference/kenlm/edges not available")
def test_a_literal_unk_is_the_unknown_word(tmp_path, capsys):
    """lmplz refuses `<unk>` in text; we count and predict it like a word. The reference is lmplz
    on the same text with `<unk>` renamed to UNKWORD, whose vocabulary holds one entry more (its
    own never-seen `<unk>`): the records agree up to that entry's share of the uniform term."""
    ours, summary = _build_and_query(tmp_path, capsys, "unk")
    theirs = _kenlm_arpa("unk.renamed-UNKWORD.o3.arpa.gz")
    theirs.pop("<unk>")
    renamed = {" ".join("<unk>" if w == "UNKWORD" else w for w in gram.split(" ")): v
               for gram, v in theirs.items()}
    assert ours.keys() == renamed.keys()
    differences = [abs(ours[g][0] - p) for g, (p, _) in renamed.items()]
    assert max(differences) < 2e-3 and np.median(differences) < 1e-4
    reference = {line.split(":")[0]: float(line.split("\t")[1]) for line in
                 (EDGES / "unk.renamed-UNKWORD.o3.test.summary.txt").read_text().splitlines()}
    assert summary["tokens"] == reference["Tokens"]
    assert summary["perplexity_including_oovs"] == pytest.approx(reference["Perplexity including OOVs"], rel=1e-3)


def test_cli_reads_standard_input_and_accepts_unk(tmp_path):
    """`-` is standard input, as for lmplz and query; a literal <unk> is counted, not refused."""
    import subprocess
    import sys
    text = "".join(f"the {w} saw a <unk> .\n\n" for w in ("cat", "dog", "cow", "hen", "fox") * 6)
    out = tmp_path / "m.arpa"
    cli = [sys.executable, "-m", "pipeline.cli", "ngram"]
    subprocess.run([*cli, "build", "-", "--order", "2", "--arpa", str(out), "--discount-fallback"],
                   input=text, text=True, check=True, capture_output=True)
    assert "<s> </s>" in out.read_text() and "\t<unk> ." in out.read_text()
    query = subprocess.run([*cli, "query", str(out), "-", "--json"], input="the cat saw a <unk> .\n\n",
                           text=True, check=True, capture_output=True)
    summary = json.loads(query.stdout)
    assert summary["tokens"] == 6 + 1 + 1 and summary["oovs"] == 1


@pytest.mark.skipif(not EDGES.is_dir(), reason="shared/reference/kenlm/edges not available")
def test_t4_zero_is_accepted_as_by_lmplz(tmp_path, capsys):
    """t1..t3 > 0 and every discount within [0, k] is all lmplz asks: with t4 = 0, D3+ = 3."""
    from pipeline.cli.main import main as lmpipe
    out = tmp_path / "model.arpa"
    lmpipe(["ngram", "build", str(EDGES / "t4zero.train.txt"), "--order", "3", "--arpa", str(out)])
    ours = _parse_arpa(out.read_text(encoding="utf-8").split("\n"))
    theirs = _kenlm_arpa("t4zero.o3.arpa.gz")
    assert ours.keys() == theirs.keys()
    for gram, (prob, backoff) in theirs.items():
        assert ours[gram][0] == pytest.approx(prob, abs=2e-6), gram
        assert ours[gram][1] == pytest.approx(backoff, abs=2e-6), gram
    stream = vocab_of([line.split() for line in (EDGES / "t4zero.train.txt").read_text().splitlines()], 1, 0)
    counts = counting.count(stream.stream([line.split() for line in (EDGES / "t4zero.train.txt").read_text().splitlines()]),
                            len(stream), 3)
    lm = kneser_ney.estimate(counts)
    for line in (EDGES / "t4zero.o3.discounts.txt").read_text().splitlines():
        n, expected = int(line.split()[0]), [float(f.split("=")[1]) for f in line.split()[2:]]
        np.testing.assert_allclose(lm.discounts[n - 1], expected, atol=1e-5)
    assert lm.discounts[2][2] == 3.0
    capsys.readouterr()
    lmpipe(["ngram", "query", str(out), str(EDGES / "t4zero.test.txt"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    reference = {line.split(":")[0]: float(line.split("\t")[1]) for line in
                 (EDGES / "t4zero.o3.test.summary.txt").read_text().splitlines()}
    assert summary["perplexity_including_oovs"] == pytest.approx(reference["Perplexity including OOVs"], rel=1e-5)


def test_discount_errors_name_the_remedy_of_their_caller(tmp_path, capsys):
    from pipeline.cli.main import main as lmpipe
    text = tmp_path / "tiny.txt"
    text.write_text("a b c\na b d\n")
    with pytest.raises(SystemExit):
        lmpipe(["ngram", "build", str(text), "--order", "3", "--arpa", str(tmp_path / "m.arpa")])
    err = capsys.readouterr().err
    assert "1-gram" in err and "--discount-fallback" in err and "ngram.discount_fallback" not in err
    stream = vocab_of([["a", "b", "c"], ["a", "b", "d"]], 1, 0)
    counts = counting.count(stream.stream([["a", "b", "c"], ["a", "b", "d"]]), len(stream), 3)
    with pytest.raises(DiscountError, match=r"ngram\.discount_fallback"):
        kneser_ney.estimate(counts)
