"""Interpolation of a recurrent model with the n-gram model (pipeline/evaluation/interpolation.py):
the weights 0 and 1 give the parts exactly, λ is chosen on valid (never test), and the report
gives the mixture the same intervals and verdicts as any model."""
import math

import numpy as np

from pipeline.evaluation import bootstrap, interpolation, report, scoring


def _logprobs(rng, size, better):
    """ln p of `size` tokens; `better` (bool mask) tokens get a much higher p than the others."""
    return np.where(better, np.log(rng.uniform(0.3, 0.9, size)), np.log(rng.uniform(1e-4, 1e-2, size)))


def test_weights_zero_and_one_reproduce_the_parts_exactly(rng):
    rnn, ngram = np.log(rng.uniform(1e-6, 1, 500)), np.log(rng.uniform(1e-6, 1, 500))
    assert np.array_equal(interpolation.mix(rnn, ngram, 1.0), rnn)
    assert np.array_equal(interpolation.mix(rnn, ngram, 0.0), ngram)
    half = interpolation.mix(rnn, ngram, 0.3)   # in probability space, not ln p space
    assert np.allclose(half, np.log(0.3 * np.exp(rnn) + 0.7 * np.exp(ngram)), rtol=1e-12)
    assert not np.allclose(half, 0.3 * rnn + 0.7 * ngram)


def test_the_weight_is_chosen_on_valid_even_where_test_disagrees(rng):
    n = 2000
    rnn_wins = rng.random(n) < 0.8                     # valid: the RNN is better on most tokens
    test_ngram_wins = rng.random(n) < 0.8              # test: the n-gram model is
    logprobs = {"ngram": {"valid": _logprobs(rng, n, ~rnn_wins), "test": _logprobs(rng, n, test_ngram_wins)},
                "gru": {"valid": _logprobs(rng, n, rnn_wins), "test": _logprobs(rng, n, ~test_ngram_wins)}}
    on_valid = interpolation.choose_weight(logprobs["gru"]["valid"], logprobs["ngram"]["valid"])
    on_test = interpolation.choose_weight(logprobs["gru"]["test"], logprobs["ngram"]["test"])
    assert on_valid > 0.5 > on_test                    # the splits disagree
    (mixture,) = interpolation.mixtures(logprobs)
    assert (mixture.name, mixture.rnn, mixture.ngram) == ("gru+ngram", "gru", "ngram")
    assert mixture.weight == on_valid and mixture.weight in interpolation.GRID
    for split in ("valid", "test"):
        assert np.array_equal(mixture.logprobs[split],
                              interpolation.mix(logprobs["gru"][split], logprobs["ngram"][split], on_valid))
    # the grid holds 0 and 1: on valid the mixture is never worse than either part
    assert mixture.logprobs["valid"].sum() >= max(lp["valid"].sum() for lp in logprobs.values())


def test_only_models_given_are_mixed_and_none_without_the_ngram_model(rng):
    scores = {"valid": np.log(rng.uniform(0.1, 1, 10)), "test": np.log(rng.uniform(0.1, 1, 10))}
    assert interpolation.mixtures({"gru": scores}) == []
    assert [m.name for m in interpolation.mixtures({"ngram": scores, "rnn": scores, "gru": scores})] == [
        "rnn+ngram", "gru+ngram"]


def test_a_mixture_at_weight_one_reports_its_rnn_numbers_and_intervals(rng):
    stream = np.array([0, 5, 6, 1, 0, 7, 1, 0, 5, 5, 6, 1] * 10)   # <s>=0 .. </s>=1; 30 sentences
    targets = int(np.count_nonzero(stream != 0))
    units = np.arange(30) // 3                                      # 10 resampling units
    lp = {name: {s: np.log(rng.uniform(0.01, 1, targets)) for s in ("valid", "test")} for name in ("ngram", "gru")}
    sums = {name: {s: scoring.unit_sums(scoring.Scores(x[s], np.zeros(targets, dtype=np.int64)), stream, units, 10)
                   for s in x} for name, x in lp.items()}
    mixture = interpolation.Mixture("gru+ngram", "gru", "ngram", 1.0,
                                    {s: interpolation.mix(lp["gru"][s], lp["ngram"][s], 1.0) for s in lp["gru"]})
    sums[mixture.name] = {s: scoring.unit_sums(scoring.Scores(mixture.logprobs[s]), stream, units, 10)
                          for s in mixture.logprobs}
    assert set(sums[mixture.name]["test"]) == {"nll", "tokens"}     # no ranks: no top-k
    text = {"chars": np.full(10, 40.0), "bytes": np.full(10, 40.0), "words": np.full(10, 9.0)}
    replicates = {s: bootstrap.resample_sums(report.columns(sums, s, text if s == "test" else None), 200, i)
                  for i, s in enumerate(("test", "valid"))}
    mixed = report.mixture_metrics(mixture, sums[mixture.name], replicates, text, 0.95)
    fill = np.ones(4, dtype=bool)
    alone = report.metrics("gru", sums["gru"], replicates, text, fill,
                           {"gru": np.full(5, 4.0), "blanks": np.full(5, 4.0)}, {"test": {"oov_rate": 0}},
                           1, "causal", 0.95)
    keys = [k for group in report.MIXTURE_GROUPS for k in group]
    assert "test_ppl" in keys and "test_top1_accuracy" not in keys and "fill_accuracy" not in keys
    for key in keys:
        assert mixed[key] == alone[key], key
        assert (mixed[f"{key}_ci_low"], mixed[f"{key}_ci_high"]) == (alone[f"{key}_ci_low"], alone[f"{key}_ci_high"])
    versus = report.pair("gru+ngram", "gru", sums, replicates["test"], 0.95)
    assert versus.delta == 0 and versus.low == versus.high == 0
    assert versus.verdict == "not distinguishable"
    table = report.comparison_markdown({}, 4, 5, [versus], 0.95, 200, "sentences", {"gru+ngram": mixed})
    assert "| gru+ngram (λ=1.00) |" in table and "| gru+ngram | gru |" in table
    assert math.isclose(mixed["test_ppl"], math.exp(-lp["gru"]["test"].sum() / targets))
