"""The promotion gate: better by the margin (and, when required, significantly better by the
paired bootstrap of per-unit scores), or kept back with a reason."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.decisions import markdown, paired_cell, summary
from pipeline.tracking.promotion import champion, decide, line_alias, promote, seed_spread


def names(text: str, *things: str) -> None:
    """Each thing (a version, a key, a number, a fix) stands in the reason or alias note."""
    missing = [thing for thing in things if thing not in text]
    assert not missing, (missing, text)


def _champion(ppl, fill=0.5):
    return {"version": "3", "metrics": {"test_ppl": ppl, "fill_accuracy": fill}}


def test_first_model_is_promoted():
    promoted, reason = decide({"test_ppl": 80.0}, None, 0.01)
    assert promoted
    names(reason, "champion")


def test_causal_model_must_beat_the_champion_by_the_margin():
    assert decide({"test_ppl": 98.0, "objective": "causal"}, _champion(100.0), 0.01)[0]
    promoted, reason = decide({"test_ppl": 99.5, "objective": "causal"}, _champion(100.0), 0.01)
    assert not promoted
    names(reason, "99.000", "v3")


def test_bidirectional_model_must_not_lose_fill_accuracy():
    new = {"test_ppl": 50.0, "fill_accuracy": 0.4, "objective": "cloze"}
    promoted, reason = decide(new, _champion(60.0, fill=0.45), 0.01)
    assert not promoted
    names(reason, "fill_accuracy", "0.400")
    assert decide({**new, "fill_accuracy": 0.5}, _champion(60.0, fill=0.45), 0.01)[0]


def test_report_table():
    text = markdown({"gru": {"promoted": 0, "version": "4", "test_ppl": 99.5,
                             "champion_version": "3", "reason": "r"}})
    assert "| gru | 4 | - | kept back | 99.500 | v3 | - | r | - |" in text
    paired = {"delta_nats_per_token": 0.031, "delta_ci_low": 0.012, "delta_ci_high": 0.05,
              "p_better": 0.999, "level": 0.95, "verdict": "yes"}
    text = markdown({"gru": {"promoted": 1, "version": "4", "test_ppl": 90.0,
                             "champion_version": "3", "reason": "r", "paired": paired},
                     "rnn": {"promoted": 0, "version": "2", "test_ppl": 90.0,
                             "champion_version": "1", "reason": "r",
                             "paired": {**paired, "delta_ci_low": -0.01,
                                        "verdict": "not distinguishable"}},
                     "deep": {"promoted": 0, "version": "2", "test_ppl": 90.0, "champion_version": "1",
                              "reason": "r", "paired": None, "paired_problem": "champion v1's run x"}})
    assert ("| v3 | Δ +0.0310 nats/token [+0.0120, +0.0500], P(better) 0.999: significant at 95% |"
            in text)
    assert "[-0.0100, +0.0500], P(better) 0.999: not significant at 95% |" in text
    assert "| v1 | unavailable: champion v1's run x | r |" in text


def _test_set(corpus="c1", tokenizer="words lowercase=true unk=<unk>"):
    fields = {"corpus": corpus, "split": "documents seed=1", "tokenizer": tokenizer,
              "vocab": "v", "test_tokens": corpus + tokenizer}
    return {**fields, "id": f"{corpus}-{len(tokenizer)}"}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its schema made once (the migrations take seconds)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, empty_store):
    """(tracking uri, client) of a fresh copy of the empty store, with lmpipe-gru registered."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("lmpipe-gru")
    return uri, client


def _experiment(client) -> str:
    """The experiment "t", its artifacts beside the sqlite store (not in the working directory)."""
    experiment = client.get_experiment_by_name("t")
    if experiment is not None:
        return experiment.experiment_id
    store = Path(client.tracking_uri.removeprefix("sqlite:///")).parent
    return client.create_experiment("t", artifact_location=(store / "artifacts").as_uri())


def _log_scores(client, run_id: str, scores: dict | None) -> None:
    """Log `scores` ({"nll", "tokens"}) as the run's unit_scores.npz, as evaluate does."""
    if scores is None:
        return
    folder = Path(client.tracking_uri.removeprefix("sqlite:///")).parent / run_id
    folder.mkdir()
    np.savez(folder / "unit_scores.npz", **scores)
    client.log_artifact(run_id, str(folder / "unit_scores.npz"))


def _version(client, ppl: float, test_set: dict, scores: dict | None = None) -> str:
    """A registered version of lmpipe-gru whose run has test_ppl `ppl` (and `scores` as its
    unit_scores.npz), tagged with `test_set`."""
    run = client.create_run(_experiment(client))
    client.log_metric(run.info.run_id, "test_ppl", ppl)
    _log_scores(client, run.info.run_id, scores)
    version = client.create_model_version("lmpipe-gru", "file:///nowhere", run.info.run_id).version
    client.set_model_version_tag("lmpipe-gru", version, "test_set", test_set["id"])
    for key, value in test_set.items():
        if key != "id":
            client.set_model_version_tag("lmpipe-gru", version, f"test_set.{key}", value)
    return str(version)


def test_a_champion_is_compared_only_on_its_own_test_set(store):
    """Another corpus gets its own line (champion-<id>) and leaves `champion` alone, however low
    its perplexity; a better model of the first corpus moves both of that line's aliases."""
    uri, client = store
    kjv, other = _test_set("c1"), _test_set("c2", "chars lowercase=false unk=none")
    first = _version(client, 50.0, kjv)
    d = promote(uri, "lmpipe-gru", first, {"test_ppl": 50.0}, kjv, 0.01)
    assert d["promoted"] and "`champion` set" in d["default"]
    # much lower perplexity, on another corpus and tokenizer: its own line, `champion` kept
    foreign = _version(client, 5.0, other)
    d = promote(uri, "lmpipe-gru", foreign, {"test_ppl": 5.0}, other, 0.01)
    assert d["promoted"]
    names(d["reason"], "champion")
    names(d["default"], "`champion`", "corpus", "c1", "c2", "tokenizer", "words lowercase=true unk=<unk>",
          "chars lowercase=false unk=none")
    assert champion(uri, "lmpipe-gru")["version"] == first
    assert champion(uri, "lmpipe-gru", line_alias(other["id"]))["version"] == foreign
    # a worse model of the first corpus: kept back on its line
    worse = _version(client, 60.0, kjv)
    d = promote(uri, "lmpipe-gru", worse, {"test_ppl": 60.0}, kjv, 0.01)
    assert not d["promoted"]
    names(d["reason"], "49.500")
    # a better one: both its line and `champion` move; the other line is untouched
    better = _version(client, 40.0, kjv)
    d = promote(uri, "lmpipe-gru", better, {"test_ppl": 40.0}, kjv, 0.01)
    assert d["promoted"]
    names(d["default"], "`champion`", f"v{first}")
    assert champion(uri, "lmpipe-gru")["version"] == better
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == better
    assert champion(uri, "lmpipe-gru", line_alias(other["id"]))["version"] == foreign


def test_champion_is_restored_from_its_line_and_left_alone_by_an_unchanged_version(store):
    """With `champion` deleted, the next promotion gives it the line's champion even when the
    new model is kept back; a rerun of promote on the line's champion moves nothing (a manual
    choice of `champion` within the line survives it)."""
    uri, client = store
    kjv = _test_set("c1")
    good = _version(client, 40.0, kjv)
    promote(uri, "lmpipe-gru", good, {"test_ppl": 40.0}, kjv, 0.01)
    client.delete_registered_model_alias("lmpipe-gru", "champion")
    worse = _version(client, 45.0, kjv)
    d = promote(uri, "lmpipe-gru", worse, {"test_ppl": 45.0}, kjv, 0.01)
    assert not d["promoted"]
    names(d["default"], "`champion`", f"v{good}")
    assert champion(uri, "lmpipe-gru")["version"] == good
    client.set_registered_model_alias("lmpipe-gru", "champion", worse)   # a user's rollback
    d = promote(uri, "lmpipe-gru", good, {"test_ppl": 40.0}, kjv, 0.01)
    names(d["reason"], "unchanged")
    names(d["default"], "`champion`", f"v{worse}")
    assert champion(uri, "lmpipe-gru")["version"] == worse
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == good


def _scores(nll, tokens) -> dict:
    return {"nll": np.asarray(nll, dtype=np.float64), "tokens": np.asarray(tokens, dtype=np.float64)}


def _ppl(scores: dict) -> float:
    return float(np.exp(scores["nll"].sum() / scores["tokens"].sum()))


def _pair(noise: float, gain: float, units: int = 200):
    """(champion's, challenger's) per-unit scores: the challenger `gain` nats per token better
    on average, each unit's nll off by independent noise (sd `noise` nats)."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(20, 40, size=units)
    old = tokens * 3.7 + rng.normal(0.0, noise, units)
    new = tokens * (3.7 - gain) + rng.normal(0.0, noise, units)
    return _scores(old, tokens), _scores(new, tokens)


GATE = {"resamples": 300, "level": 0.95, "seed": 1}


def test_significance_keeps_back_a_model_that_beats_the_margin_only_by_chance(store):
    """2% lower perplexity, but per-unit noise far larger than the gain: kept back when
    promote.require_significant, promoted (the comparison still reported) when not."""
    uri, client = store
    kjv = _test_set("c1")
    old, new = _pair(noise=8.0, gain=0.02)
    assert _ppl(new) < _ppl(old) * 0.99
    first = _version(client, _ppl(old), kjv, old)
    promote(uri, "lmpipe-gru", first, {"test_ppl": _ppl(old)}, kjv, 0.01, **GATE)
    second = _version(client, _ppl(new), kjv, new)
    d = promote(uri, "lmpipe-gru", second, {"test_ppl": _ppl(new)}, kjv, 0.01,
                require_significant=True, **GATE)
    assert not d["promoted"] and d["paired"]["verdict"] == "not distinguishable"
    names(d["reason"], "significant", "promote.require_significant")
    assert d["paired"]["delta_ci_low"] < 0 < d["paired"]["delta_nats_per_token"] < d["paired"]["delta_ci_high"]
    assert "not significant at 95%" in paired_cell(d)
    names(d["default"], f"v{first}")
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == first
    d = promote(uri, "lmpipe-gru", second, {"test_ppl": _ppl(new)}, kjv, 0.01, **GATE)
    assert d["promoted"] and "not significant at 95%" in paired_cell(d)
    assert champion(uri, "lmpipe-gru")["version"] == second


def test_significance_promotes_a_model_better_on_every_unit(store):
    uri, client = store
    kjv = _test_set("c1")
    old, _ = _pair(noise=8.0, gain=0.0)
    new = _scores(old["nll"] - 0.05 * old["tokens"], old["tokens"])
    first = _version(client, _ppl(old), kjv, old)
    promote(uri, "lmpipe-gru", first, {"test_ppl": _ppl(old)}, kjv, 0.01, require_significant=True,
            **GATE)
    second = _version(client, _ppl(new), kjv, new)
    d = promote(uri, "lmpipe-gru", second, {"test_ppl": _ppl(new)}, kjv, 0.01,
                require_significant=True, **GATE)
    assert d["promoted"]
    names(d["reason"], "significant", "paired bootstrap", "95%")
    assert d["paired"]["verdict"] == "yes" and d["paired"]["p_better"] == 1.0
    assert abs(d["paired"]["delta_nats_per_token"] - 0.05) < 1e-9
    assert paired_cell(d).startswith("Δ +0.0500 nats/token [+0.0500, +0.0500], P(better) 1.000: "
                                     "significant at 95%")
    assert champion(uri, "lmpipe-gru")["version"] == second
    names(d["default"], "`champion`", f"v{first}")


def test_a_champion_without_unit_scores_keeps_back_only_when_significance_is_required(store):
    """An older champion run has no unit_scores.npz: required, the new model is kept back with
    the reason and the fixes; not required, the margin alone decides. Once the champion's
    weights are re-evaluated (a run tagged registered_version), its scores are found there."""
    uri, client = store
    kjv = _test_set("c1")
    old, _ = _pair(noise=2.0, gain=0.0)
    new = _scores(old["nll"] - 0.05 * old["tokens"], old["tokens"])
    first = _version(client, _ppl(old), kjv)                       # no unit_scores.npz
    promote(uri, "lmpipe-gru", first, {"test_ppl": _ppl(old)}, kjv, 0.01, **GATE)
    second = _version(client, _ppl(new), kjv, new)
    d = promote(uri, "lmpipe-gru", second, {"test_ppl": _ppl(new)}, kjv, 0.01,
                require_significant=True, **GATE)
    assert not d["promoted"] and d["paired"] is None
    names(d["reason"], "promote.require_significant", f"champion v{first}", "unit_scores.npz",
          "re-evaluate", "promote.require_significant: false")
    assert paired_cell(d).startswith(f"unavailable: champion v{first}'s run ")
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == first
    # the champion's weights evaluated again by this lmpipe: a run tagged with its version
    rescored = client.create_run(_experiment(client), tags={
        "registered_version": first, "model_kind": "gru", "test_set": kjv["id"]}).info.run_id
    _log_scores(client, rescored, old)
    d = promote(uri, "lmpipe-gru", second, {"test_ppl": _ppl(new)}, kjv, 0.01,
                require_significant=True, **GATE)
    assert d["promoted"] and d["paired"]["verdict"] == "yes"


def test_a_champion_without_unit_scores_does_not_matter_when_not_required(store):
    uri, client = store
    kjv = _test_set("c1")
    old, _ = _pair(noise=2.0, gain=0.0)
    new = _scores(old["nll"] - 0.05 * old["tokens"], old["tokens"])
    first = _version(client, _ppl(old), kjv)
    promote(uri, "lmpipe-gru", first, {"test_ppl": _ppl(old)}, kjv, 0.01, **GATE)
    second = _version(client, _ppl(new), kjv, new)
    d = promote(uri, "lmpipe-gru", second, {"test_ppl": _ppl(new)}, kjv, 0.01, **GATE)
    assert d["promoted"] and d["paired"] is None
    names(d["paired_problem"], "unit_scores.npz")
    assert "significant" not in d["reason"] and paired_cell(d).startswith("unavailable: ")
    assert champion(uri, "lmpipe-gru")["version"] == second


def test_scores_of_other_units_keep_back_with_the_reason(store):
    """The same test set id but another number of units (or other token counts): no paired
    comparison is possible; required, the new model is kept back saying so."""
    uri, client = store
    kjv = _test_set("c1")
    old, _ = _pair(noise=2.0, gain=0.0)
    first = _version(client, _ppl(old), kjv, old)
    promote(uri, "lmpipe-gru", first, {"test_ppl": _ppl(old)}, kjv, 0.01, **GATE)
    fewer = _scores(old["nll"][1:] - 0.05 * old["tokens"][1:], old["tokens"][1:])
    second = _version(client, _ppl(fewer), kjv, fewer)
    d = promote(uri, "lmpipe-gru", second, {"test_ppl": _ppl(fewer)}, kjv, 0.01,
                require_significant=True, **GATE)
    assert not d["promoted"]
    names(d["reason"], f"v{second}", "199", f"v{first}", "200")
    shifted = _scores(old["nll"] - 0.05 * old["tokens"], old["tokens"] + np.eye(1, 200)[0])
    third = _version(client, _ppl(shifted), kjv, shifted)
    d = promote(uri, "lmpipe-gru", third, {"test_ppl": _ppl(shifted)}, kjv, 0.01,
                require_significant=True, **GATE)
    assert not d["promoted"]
    names(d["reason"], "token counts", "1 of 200")


def test_promotion_json_holds_the_comparison():
    assert summary({"promoted": 1, "paired": None}) == {"promoted": 1}
    paired = {"delta_nats_per_token": 0.1, "p_better": 0.99, "verdict": "not distinguishable"}
    assert summary({"promoted": 0, "paired": paired}) == {
        "promoted": 0, "delta_nats_per_token": 0.1, "p_better": 0.99, "significant": 0}


def test_a_sweep_member_never_moves_champion_and_a_deliberate_promotion_does(store):
    """A member of a sweep (promote.sweep: true) far better than the champion is recorded, kept
    back, and moves neither alias, even with no champion yet; the same version promoted on
    purpose (promote.sweep: false, e.g. `dvc exp apply` then `dvc exp run -S promote.sweep=false`)
    goes through the gate and moves both."""
    uri, client = store
    kjv = _test_set("c1")
    member = _version(client, 30.0, kjv)
    d = promote(uri, "lmpipe-gru", member, {"test_ppl": 30.0}, kjv, 0.01, sweep=True)
    assert not d["promoted"] and champion(uri, "lmpipe-gru") is None
    names(d["reason"], "sweep member", "promote.sweep")
    names(d["default"], "`champion` left alone")
    first = _version(client, 50.0, kjv)
    promote(uri, "lmpipe-gru", first, {"test_ppl": 50.0}, kjv, 0.01)
    d = promote(uri, "lmpipe-gru", member, {"test_ppl": 30.0}, kjv, 0.01, sweep=True)
    assert not d["promoted"]
    names(d["reason"], "sweep member", "30.000 beats champion")   # what the gate would say
    assert champion(uri, "lmpipe-gru")["version"] == first
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == first
    d = promote(uri, "lmpipe-gru", member, {"test_ppl": 30.0}, kjv, 0.01)   # on purpose
    assert d["promoted"]
    assert champion(uri, "lmpipe-gru")["version"] == member
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == member


def _trained(client, ppl: float, test_set: dict) -> str:
    """A model run of the experiment with test_ppl `ppl` on `test_set`, as evaluate logs it."""
    run = client.create_run(_experiment(client), tags={"test_set": test_set["id"]})
    client.log_metric(run.info.run_id, "test_ppl", ppl)
    return run.info.run_id


def test_the_seed_spread_of_a_recipe_raises_the_bar(store):
    """Runs of one recipe on one test set over 4 seeds (38, 39, 40, 41: SD 1.291) set the bar
    at the champion's 40 - 1.291, not the margin's 39.6; other recipes, other test sets and a
    seed's older run do not count; one seed alone is no spread."""
    uri, client = store
    kjv, other = _test_set("c1"), _test_set("c2")
    assert seed_spread(uri, _trained(client, 50.0, kjv), "r1", 7, kjv["id"]) is None   # one seed
    seed_spread(uri, _trained(client, 30.0, kjv), "r2", 8, kjv["id"])          # another recipe
    seed_spread(uri, _trained(client, 20.0, other), "r1", 9, other["id"])      # another test set
    for seed, ppl in enumerate([38.0, 39.0, 40.0], start=1):
        seed_spread(uri, _trained(client, ppl, kjv), "r1", seed, kjv["id"])
    spread = seed_spread(uri, _trained(client, 41.0, kjv), "r1", 7, kjv["id"])   # seed 7 again
    assert spread["n"] == 4 and spread["sd"] == pytest.approx(np.std([38, 39, 40, 41], ddof=1))
    champ = _champion(40.0)
    beats, why = decide({"test_ppl": 39.2}, champ, 0.01, spread)
    assert not beats
    names(why, "39.200", "the margin 0.01 and the seed spread (SD 1.291 over 4 seeds of this recipe)",
          "needs < 38.709")
    beats, why = decide({"test_ppl": 38.5}, champ, 0.01, spread)
    assert beats
    names(why, "seed spread (SD 1.291")
    assert decide({"test_ppl": 39.2}, champ, 0.01)[0]   # the margin alone lets it through
