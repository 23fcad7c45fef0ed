"""The promotion gate: better by the margin, or kept back with a reason."""
from pipeline.tracking.promotion import decide, markdown


def _champion(ppl, fill=0.5):
    return {"version": "3", "metrics": {"test_ppl": ppl, "fill_accuracy": fill}}


def test_first_model_is_promoted():
    assert decide({"test_ppl": 80.0}, None, 0.01) == (True, "no champion yet")


def test_causal_model_must_beat_the_champion_by_the_margin():
    assert decide({"test_ppl": 98.0, "objective": "causal"}, _champion(100.0), 0.01)[0]
    promoted, reason = decide({"test_ppl": 99.5, "objective": "causal"}, _champion(100.0), 0.01)
    assert not promoted and "needs < 99.000" in reason and "v3" in reason


def test_bidirectional_model_must_not_lose_fill_accuracy():
    new = {"test_ppl": 50.0, "fill_accuracy": 0.4, "objective": "cloze"}
    promoted, reason = decide(new, _champion(60.0, fill=0.45), 0.01)
    assert not promoted and "fill_accuracy 0.400 is below" in reason
    assert decide({**new, "fill_accuracy": 0.5}, _champion(60.0, fill=0.45), 0.01)[0]


def test_report_table():
    text = markdown({"gru": {"promoted": 0, "version": "4", "test_ppl": 99.5,
                             "champion_version": "3", "reason": "r"}})
    assert "| gru | 4 | - | kept back | 99.500 | v3 | r | - |" in text


def _test_set(corpus="c1", tokenizer="words lowercase=true unk=<unk>"):
    fields = {"corpus": corpus, "split": "documents seed=1", "tokenizer": tokenizer,
              "vocab": "v", "test_tokens": corpus + tokenizer}
    return {**fields, "id": f"{corpus}-{len(tokenizer)}"}


def _version(client, ppl: float, test_set: dict) -> str:
    """A registered version of lmpipe-gru whose run has test_ppl `ppl`, tagged with `test_set`."""
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run = client.create_run(experiment.experiment_id)
    client.log_metric(run.info.run_id, "test_ppl", ppl)
    version = client.create_model_version("lmpipe-gru", "file:///nowhere", run.info.run_id).version
    client.set_model_version_tag("lmpipe-gru", version, "test_set", test_set["id"])
    for key, value in test_set.items():
        if key != "id":
            client.set_model_version_tag("lmpipe-gru", version, f"test_set.{key}", value)
    return str(version)


def test_a_champion_is_compared_only_on_its_own_test_set(tmp_path):
    """Another corpus gets its own line (champion-<id>) and leaves `champion` alone, however low
    its perplexity; a better model of the first corpus moves both of that line's aliases."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.promotion import champion, line_alias, promote
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("lmpipe-gru")
    kjv, other = _test_set("c1"), _test_set("c2", "chars lowercase=false unk=none")
    first = _version(client, 50.0, kjv)
    d = promote(uri, "lmpipe-gru", first, {"test_ppl": 50.0}, kjv, 0.01)
    assert d["promoted"] and "`champion` set" in d["default"]
    # much lower perplexity, on another corpus and tokenizer: its own line, `champion` kept
    foreign = _version(client, 5.0, other)
    d = promote(uri, "lmpipe-gru", foreign, {"test_ppl": 5.0}, other, 0.01)
    assert d["promoted"] and d["reason"] == "no champion yet"
    assert "not comparable" in d["default"] and "corpus (c1 vs c2)" in d["default"]
    assert "tokenizer (words lowercase=true unk=<unk> vs chars" in d["default"]
    assert champion(uri, "lmpipe-gru")["version"] == first
    assert champion(uri, "lmpipe-gru", line_alias(other["id"]))["version"] == foreign
    # a worse model of the first corpus: kept back on its line
    worse = _version(client, 60.0, kjv)
    d = promote(uri, "lmpipe-gru", worse, {"test_ppl": 60.0}, kjv, 0.01)
    assert not d["promoted"] and "needs < 49.500" in d["reason"]
    # a better one: both its line and `champion` move; the other line is untouched
    better = _version(client, 40.0, kjv)
    d = promote(uri, "lmpipe-gru", better, {"test_ppl": 40.0}, kjv, 0.01)
    assert d["promoted"] and f"moved from v{first}" in d["default"]
    assert champion(uri, "lmpipe-gru")["version"] == better
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == better
    assert champion(uri, "lmpipe-gru", line_alias(other["id"]))["version"] == foreign


def test_champion_is_restored_from_its_line_and_left_alone_by_an_unchanged_version(tmp_path):
    """With `champion` deleted, the next promotion gives it the line's champion even when the
    new model is kept back; a rerun of promote on the line's champion moves nothing (a manual
    choice of `champion` within the line survives it)."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.promotion import champion, line_alias, promote
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("lmpipe-gru")
    kjv = _test_set("c1")
    good = _version(client, 40.0, kjv)
    promote(uri, "lmpipe-gru", good, {"test_ppl": 40.0}, kjv, 0.01)
    client.delete_registered_model_alias("lmpipe-gru", "champion")
    worse = _version(client, 45.0, kjv)
    d = promote(uri, "lmpipe-gru", worse, {"test_ppl": 45.0}, kjv, 0.01)
    assert not d["promoted"] and d["default"] == f"`champion` set to v{good}: the first line"
    assert champion(uri, "lmpipe-gru")["version"] == good
    client.set_registered_model_alias("lmpipe-gru", "champion", worse)   # a user's rollback
    d = promote(uri, "lmpipe-gru", good, {"test_ppl": 40.0}, kjv, 0.01)
    assert d["reason"].startswith("unchanged") and d["default"] == f"`champion` stays v{worse}"
    assert champion(uri, "lmpipe-gru")["version"] == worse
    assert champion(uri, "lmpipe-gru", line_alias(kjv["id"]))["version"] == good
