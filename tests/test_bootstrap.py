"""Intervals and paired comparisons (pipeline/evaluation/bootstrap.py), the resampling units and
the original text's size (pipeline/text/units.py), and the tokenizer-independent numbers
(pipeline/evaluation/scoring.py)."""

import math

import numpy as np
import pytest

from pipeline.evaluation import bootstrap, report, scoring
from pipeline.text import units
from pipeline.text.tokenizers import tokenize

from .oracle_prepare import vocab_of
from .test_pipeline_e2e import CI_KEYS, KEYS


def test_resample_sums_is_seeded_and_draws_as_many_units_as_there_are():
    columns = {"ones": np.ones(37), "x": np.arange(37.0)}
    a = bootstrap.resample_sums(columns, 200, seed=5)
    b = bootstrap.resample_sums(columns, 200, seed=5)
    c = bootstrap.resample_sums(columns, 200, seed=6)
    assert np.array_equal(a["x"], b["x"]) and not np.array_equal(a["x"], c["x"])
    assert np.all(a["ones"] == 37)                       # each replicate draws U units
    assert a["x"].mean() == pytest.approx(np.arange(37.0).sum(), rel=0.02)


def test_blocks_of_replicates_are_the_same_draw_as_one(monkeypatch):
    columns = {"x": np.random.default_rng(0).random(50)}
    whole = bootstrap.resample_sums(columns, 64, seed=3)["x"]
    monkeypatch.setattr(bootstrap, "CHUNK", 50 * 7)      # 7 replicates per block
    blocked = bootstrap.resample_sums(columns, 64, seed=3)["x"]
    assert blocked.shape == (64,)
    assert np.allclose(np.sort(whole), np.sort(blocked), rtol=0.5)   # same distribution


def test_interval_covers_the_true_per_token_value_at_the_stated_rate():
    """Units of Poisson-many tokens, each token's nll exponential with mean mu: the corpus-level
    ratio Σ nll / Σ tokens estimates mu; its 95% interval must cover mu about 95% of the time."""
    rng = np.random.default_rng(2026)
    mu, trials, covered = 1.7, 300, 0
    for trial in range(trials):
        tokens = 1 + rng.poisson(19, size=120).astype(float)
        nll = rng.gamma(tokens, mu)                      # a sum of `tokens` exponentials
        drawn = bootstrap.resample_sums({"nll": nll, "tokens": tokens}, 500, seed=trial)
        low, high = bootstrap.ratio_interval(drawn["nll"], drawn["tokens"], 0.95)
        covered += low <= mu <= high
    assert 0.90 <= covered / trials <= 0.985, covered / trials


def test_a_wider_level_gives_a_wider_interval():
    drawn = np.random.default_rng(1).normal(size=1000)
    low90, high90 = bootstrap.interval(drawn, 0.90)
    low99, high99 = bootstrap.interval(drawn, 0.99)
    assert low99 < low90 < high90 < high99


def _paired(nll_a, nll_b, tokens, seed=0):
    drawn = bootstrap.resample_sums({"nll_a": nll_a, "nll_b": nll_b, "tokens": tokens}, 1000, seed)
    return bootstrap.paired("a", "b", nll_a, nll_b, tokens, drawn, 0.95)


def test_a_model_against_itself_is_not_distinguishable():
    rng = np.random.default_rng(0)
    tokens = 1 + rng.poisson(20, 300).astype(float)
    nll = rng.gamma(tokens, 4.0)
    same = _paired(nll, nll.copy(), tokens)
    assert same.delta == 0 and same.low == 0 and same.high == 0
    assert same.verdict == "not distinguishable"
    assert "not distinguishable at 95%" in same.sentence()


def test_a_model_better_on_every_unit_is_better_and_the_reverse_is_not():
    rng = np.random.default_rng(1)
    tokens = 1 + rng.poisson(20, 300).astype(float)
    worse = rng.gamma(tokens, 4.0)
    better = worse - 0.01 * tokens                       # 0.01 nats per token better everywhere
    forward = _paired(better, worse, tokens)
    assert forward.verdict == "yes" and forward.p_better == 1.0
    assert forward.delta == pytest.approx(0.01)
    assert forward.low > 0
    assert _paired(worse, better, tokens).verdict == "no"


def test_noise_larger_than_the_difference_is_not_distinguishable():
    rng = np.random.default_rng(3)
    tokens = 1 + rng.poisson(20, 200).astype(float)
    a = rng.gamma(tokens, 4.0)
    b = a + rng.normal(0, 3.0, size=200)                 # no systematic difference
    assert _paired(a, b, tokens).verdict == "not distinguishable"


def test_units_group_documents_or_the_pieces_of_one_line():
    lines = ["In the beginning", "God créa\r", "", "x y z w", "last line"]
    documents = np.array([0, 0, 0, 1, 1])
    line_of = np.array([0, 1, 3, 3, 4])                  # line 3 was cut into two sentences
    by_line = units.text_units(lines, line_of)
    assert by_line["unit"].tolist() == [0, 1, 2, 2, 3]
    assert by_line["chars"].tolist() == [17, 9, 8, 10]   # `\r` is the line terminator's
    assert by_line["bytes"].tolist() == [17, 10, 8, 10]  # é is two UTF-8 bytes
    assert by_line["words"].tolist() == [4, 3, 5, 3]     # + 1 each for the end of the sentence
    by_document = units.text_units(lines, line_of, documents)
    assert by_document["unit"].tolist() == [0, 0, 1, 1, 1]
    assert by_document["chars"].tolist() == [26, 18]


def test_measure_falls_back_to_sentences_with_too_few_documents():
    lines = [f"line {i}" for i in range(40)]
    documents = np.arange(40) // 2                       # 20 documents of two lines
    line_of = {"valid": np.arange(0, 20), "test": np.arange(20, 40)}
    unit, found = units.measure(lines, line_of, documents)
    assert unit == "documents" and len(found["test_chars"]) == 10
    line_of = {"valid": np.arange(0, 20), "test": np.arange(20, 24)}   # 2 test documents
    unit, found = units.measure(lines, line_of, documents)
    assert unit == "sentences" and len(found["test_chars"]) == 4


def _scored(line: str, tokenizer: str, p: float):
    """A model that gives every target of `line` probability p: its unit sums and the text."""
    tokens = tokenize(line, tokenizer, False, "<unk>")
    stream = vocab_of([tokens], 1, 0).stream([tokens])
    targets = len(stream) - 1                            # all but <s>
    scores = scoring.Scores(np.full(targets, math.log(p)), np.zeros(targets, dtype=np.int64))
    text = units.text_units([line], np.array([0]))
    return scoring.unit_sums(scores, stream, text["unit"], 1), text


def _text_metrics(sums: dict, text: dict) -> dict:
    """report.metrics' bits_per_char, bits_per_byte and word_ppl of one model's test sums."""
    drawn = bootstrap.resample_sums(report.columns({"m": {"test": sums}}, "test", text), 10, 0)
    got = report.metrics("m", {"valid": sums, "test": sums}, {"valid": drawn, "test": drawn}, text,
                         np.ones(1, dtype=bool), {"m": np.ones(10), "blanks": np.ones(10)},
                         {"test": {"oov_rate": 0.0}}, 0, "causal", 0.95)
    return {key: got[f"test_{key}"] for key in ("bits_per_char", "bits_per_byte", "word_ppl")}


def test_bits_per_character_of_a_hand_checked_text_for_a_word_and_a_char_model():
    """"the cat": 7 characters + the newline = 8; 2 words + the end of the sentence = 3.
    A word model paying 2 bits for each of the, cat, </s>: 6 bits / 8 chars = 0.75 bits/char.
    A char model paying 1 bit for each of t h e ▁ c a t </s>: 8 bits / 8 chars = 1 bit/char,
    and its word-level perplexity is 2^(8/3)."""
    sums, text = _scored("the cat", "words", 0.25)
    assert sums["tokens"].sum() == 3
    got = _text_metrics(sums, text)
    assert got["bits_per_char"] == pytest.approx(0.75)
    assert got["word_ppl"] == pytest.approx(4.0)         # = the word model's own perplexity
    sums, text = _scored("the cat", "chars", 0.5)
    assert sums["tokens"].sum() == 8
    got = _text_metrics(sums, text)
    assert got["bits_per_char"] == pytest.approx(1.0)
    assert got["bits_per_byte"] == pytest.approx(1.0)
    assert got["word_ppl"] == pytest.approx(2 ** (8 / 3))


def test_unit_sums_refuse_units_of_another_stream():
    sums, _ = _scored("a b", "words", 0.5)
    stream = np.array([1, 3, 4, 2], dtype=np.int32)
    scores = scoring.Scores(np.zeros(3), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="rerun `dvc repro prepare`"):
        scoring.unit_sums(scores, stream, np.array([0, 0]), 1)


def _result(nll_per_unit, tokens):
    sums = {s: {"nll": nll_per_unit, "tokens": tokens, "top1": tokens / 2, "top5": tokens}
            for s in ("valid", "test")}
    return sums


def test_report_metrics_have_the_same_interval_keys_for_every_model_and_pair_by_objective():
    rng = np.random.default_rng(4)
    tokens = 1 + rng.poisson(10, 50).astype(float)
    text = {"chars": tokens * 5, "bytes": tokens * 5, "words": tokens}
    sums = {"ngram": _result(rng.gamma(tokens, 4.0), tokens),
            "gru": _result(rng.gamma(tokens, 3.0), tokens),
            "birnn": _result(rng.gamma(tokens, 2.0), tokens)}
    replicates = {s: bootstrap.resample_sums(report.columns(sums, s, text if s == "test" else None),
                                             300, i) for i, s in enumerate(("test", "valid"))}
    fill = {n: rng.random(20) < 0.5 for n in sums}
    fill_drawn = bootstrap.resample_sums({**{n: f.astype(float) for n, f in fill.items()},
                                          "blanks": np.ones(20)}, 300, 9)
    stats = {"test": {"oov_rate": 0.01}}
    results = {n: report.metrics(n, sums[n], replicates, text, fill[n], fill_drawn, stats, 1000,
                                 "cloze" if n == "birnn" else "causal", 0.95) for n in sums}
    keys = {n: set(r) for n, r in results.items()}
    assert keys["ngram"] == keys["gru"] == keys["birnn"]
    assert set(KEYS) | set(CI_KEYS) <= keys["gru"]
    for r in results.values():
        for k in report.WITH_INTERVALS:
            assert r[f"{k}_ci_low"] <= r[k] <= r[f"{k}_ci_high"], k
    pairs = report.comparisons(results, sums, replicates["test"], 0.95)
    assert [(c.a, c.b) for c in pairs] == [("gru", "ngram")]   # birnn: no other cloze model
    assert pairs[0].verdict == "yes"
    table = report.comparison_markdown(results, 20, 5, pairs, 0.95, 300, "sentences", {})
    assert "| gru | ngram |" in table and "**yes**" in table and "birnn: no other model" in table
