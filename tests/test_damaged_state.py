"""State changed or damaged behind lmpipe's back (issue 18): each case damages a copy of one small
trained pipeline (prepare, ngram, train@gru, evaluate, promote, run in-process as
`python -m stages.X` runs them) and reruns a stage or a command. lmpipe either recovers, saying
so in one line, or stops with one line naming the state and the command that fixes it; never a
traceback, and what was produced before is kept.

The catalogue (state, stage, what lmpipe says, exit status) is the table CASES below."""
import json
import os
import shutil
import types

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.neural import fit
from stages import evaluate as evaluate_stage
from stages import ngram as ngram_stage
from stages import prepare as prepare_stage
from stages import promote as promote_stage
from stages import run_stage
from stages import train as train_stage

from .conftest import ROOT, checkpoint_folder, free_port

STAGES = {"prepare": (prepare_stage, ["data"]), "ngram": (ngram_stage, ["data", "models/ngram"]),
          "train": (train_stage, ["gru", "data", "models/gru"]),
          "evaluate": (evaluate_stage, ["data", "models", "metrics"]),
          "promote": (promote_stage, ["metrics"])}


def _stage(capsys, name):
    module, args = STAGES[name]
    status = run_stage(module.main, args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder holding a whole tiny pipeline's outputs, its MLflow store (sqlite) and, in ckpt/
    (LMPIPE_CHECKPOINTS), gru's checkpoint folder, kept as if the training had been killed at
    its end."""
    base = tmp_path_factory.mktemp("trained")
    lines = [f"the {w} saw the {v} and the {v} saw the {w} ." for w in ("cat", "dog", "cow", "hen")
             for v in ("fox", "owl", "ram", "elk", "bee")] * 8
    (base / "corpus.txt").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["corpus"]["source"] = "corpus.txt"
    params["split"].update(method="random", valid=0.1, test=0.1)
    params["vocab"]["min_count"] = 1
    params["ngram"].update(order=3, memory_orders=3, discount_fallback=True)
    params["train"].update(batch_size=4, bptt=8, num_threads=1, max_epochs=1)
    params["models"] = {"gru": {**params["models"]["gru"], "embed_dim": 8, "hidden_dim": 8}}
    params["evaluate"].update(blanks=10, samples=1, max_length=5, bootstrap_resamples=50,
                              probes=str(ROOT / "configs" / "probes.yaml"))
    (base / "params.yaml").write_text(yaml.safe_dump(params))
    here, env = os.getcwd(), {k: os.environ.pop(k, None) for k in ("DVC_ROOT", "MLFLOW_TRACKING_URI")}
    os.chdir(base)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LMPIPE_CHECKPOINTS", str(base / "ckpt"))
            patch.setattr(fit, "shutil", types.SimpleNamespace(rmtree=lambda path: None))
            for name in ("prepare", "ngram", "train", "evaluate", "promote"):
                module, args = STAGES[name]
                assert run_stage(module.main, args) == 0, name
    finally:
        os.chdir(here)
        os.environ.update({k: v for k, v in env.items() if v is not None})
    return base


@pytest.fixture
def repo(trained, tmp_path, monkeypatch):
    """A copy of the trained pipeline, the cwd; its store is its own mlflow.db, whose artifact
    locations store.prepare points at the copy's mlartifacts/ (a repository that moved)."""
    copy = tmp_path / "repo"
    shutil.copytree(trained, copy)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("LMPIPE_CHECKPOINTS", str(copy / "ckpt"))
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return copy


def _client(repo):
    return MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def _experiment(repo):
    return _client(repo).get_experiment_by_name("lmpipe")


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---- damage, one function per piece of state --------------------------------------------------

def delete_experiment(repo):
    _client(repo).delete_experiment(_experiment(repo).experiment_id)


def corrupt_resume_json(repo):
    (checkpoint_folder("gru") / "resume.json").write_text("{not json")


def truncate_last_checkpoint(repo):
    _truncate(checkpoint_folder("gru") / "last.ckpt")   # an interrupted training's, a full disk cut it short


def delete_training_run(repo):
    run_id = json.loads((repo / "models" / "gru" / "run.json").read_text())["run_id"]
    _client(repo).delete_run(run_id)


def run_json_names_unknown_run(repo):
    (repo / "models" / "gru" / "run.json").write_text(json.dumps({"run_id": "0" * 32}))


def corrupt_run_json(repo):
    (repo / "models" / "gru" / "run.json").write_text("")


def delete_vocab(repo):
    (repo / "data" / "vocab.json").unlink()


def edit_vocab(repo):
    (repo / "data" / "vocab.json").write_text(json.dumps({"tokens": ["a", "b"]}))


def truncate_test_stream(repo):
    _truncate(repo / "data" / "test.npy", 0.8)


def out_of_vocabulary_ids(repo):
    stream = np.load(repo / "data" / "train.npy")
    stream[5] = 10 ** 6
    np.save(repo / "data" / "train.npy", stream)


def drop_units_array(repo):
    arrays = dict(np.load(repo / "data" / "units.npz"))
    del arrays["test_chars"]
    np.savez(repo / "data" / "units.npz", **arrays)


def truncate_model(repo):
    _truncate(repo / "models" / "gru" / "model.pt")


def delete_ngram_weights(repo):
    (repo / "models" / "ngram" / "model.npz").unlink()


def model_of_another_vocabulary(repo):
    vocab = json.loads((repo / "data" / "vocab.json").read_text())
    vocab["tokens"].append("zebra")
    (repo / "data" / "vocab.json").write_text(json.dumps(vocab))


def corrupt_ngram_model(repo):
    (repo / "models" / "ngram" / "model.npz").write_bytes(b"PK\x03\x04 not a zip")


def corrupt_counts(repo):
    (repo / "models" / "ngram" / "counts.parquet").write_text("not parquet")


def _edit_json(path, change):
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def _edit_arrays(path, change):
    with np.load(path) as found:
        arrays = dict(found)
    change(arrays)
    np.savez(path, **arrays)


def _edit_weights(repo, change):
    import torch
    path = repo / "models" / "gru" / "model.pt"
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint["state_dict"])
    torch.save(checkpoint, path)


def nan_weights(repo):
    _edit_weights(repo, lambda state: next(v for v in state.values() if v.is_floating_point())
                  .view(-1)[0].fill_(float("nan")))


def huge_weights(repo):   # finite, but the scores overflow to NaN: refused before anything is written
    _edit_weights(repo, lambda state: [v.fill_(3e38) for v in state.values() if v.is_floating_point()])


def duplicate_vocab_token(repo):
    _edit_json(repo / "data" / "vocab.json", lambda v: v["tokens"].__setitem__(4, v["tokens"][3]))


def blank_vocab_token(repo):
    _edit_json(repo / "data" / "vocab.json", lambda v: v["tokens"].__setitem__(4, " "))


def unsorted_ngram_keys(repo):
    def change(arrays):
        arrays["keys2"][[0, 1]] = arrays["keys2"][[1, 0]]
    _edit_arrays(repo / "models" / "ngram" / "model.npz", change)


def nan_ngram_logprob(repo):
    _edit_arrays(repo / "models" / "ngram" / "model.npz",
                 lambda arrays: arrays["log10_prob2"].__setitem__(3, np.nan))


def positive_ngram_logprob(repo):
    _edit_arrays(repo / "models" / "ngram" / "model.npz",
                 lambda arrays: arrays["log10_prob3"].__setitem__(0, 0.5))


def infinite_ngram_backoff(repo):
    _edit_arrays(repo / "models" / "ngram" / "model.npz",
                 lambda arrays: arrays["log10_backoff1"].__setitem__(5, -np.inf))


def units_of_another_length(repo):
    _edit_arrays(repo / "data" / "units.npz",
                 lambda arrays: arrays.__setitem__("test_unit", arrays["test_unit"][:-1]))


def negative_unit_id(repo):
    _edit_arrays(repo / "data" / "units.npz", lambda arrays: arrays["valid_unit"].__setitem__(0, -1))


def zero_chars(repo):
    _edit_arrays(repo / "data" / "units.npz", lambda arrays: arrays["test_chars"].__setitem__(0, 0))


def stats_without_test(repo):
    _edit_json(repo / "data" / "stats.json", lambda stats: stats.pop("test"))


def stats_of_wrong_types(repo):
    _edit_json(repo / "data" / "stats.json", lambda stats: stats["test"].update(oov_rate="0.1"))


def history_without_val_ppl(repo):
    _edit_json(repo / "models" / "gru" / "history.json", lambda h: h[0].pop("val_ppl"))


def history_with_string_step(repo):
    _edit_json(repo / "models" / "gru" / "history.json", lambda h: h[0].update(step="12"))


def cut_test_stream(repo):
    np.save(repo / "data" / "test.npy", np.load(repo / "data" / "test.npy")[:-3])


def train_stream_cut_mid_sentence(repo):
    np.save(repo / "data" / "train.npy", np.load(repo / "data" / "train.npy")[:-3])


def nan_metrics(repo):
    _edit_json(repo / "metrics" / "metrics.json", lambda m: m["gru"].update(test_ppl=float("nan")))


def impossible_metrics(repo):
    _edit_json(repo / "metrics" / "metrics.json", lambda m: m["gru"].update(test_ppl=-3.0))


def malformed_test_set(repo):
    _edit_json(repo / "metrics" / "registry.json", lambda r: r["gru"].update(test_set="abc"))


def delete_registered_version(repo):
    entry = json.loads((repo / "metrics" / "registry.json").read_text())["gru"]
    _client(repo).delete_model_version(entry["model"], entry["version"])


def delete_champion_alias(repo):
    _client(repo).delete_registered_model_alias("lmpipe-gru", "champion")


def delete_registered_model(repo):
    _client(repo).delete_registered_model("lmpipe-gru")


def corrupt_registry_json(repo):
    (repo / "metrics" / "registry.json").write_text("[1, 2]")


def broken_probes(repo):
    (repo / "probes.yaml").write_text("- name: x\n  rank: [a b, c d\n")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["probes"] = "probes.yaml"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def server_down(repo):
    return {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}   # nothing listens there


def store_not_a_database(repo):
    (repo / "mlflow.db").write_bytes(b"this is not an sqlite database" * 100)


# state, stage rerun, exit status, what the one line (the last of stderr on failure, the
# message on stdout on recovery) names: the state (file, key, MLflow object) and a word of the
# fix, each a part of the line; a str is the regex of a whole line, kept for the commonest
CASES = [
    (delete_experiment, "train", 2, ("MLflow experiment 'lmpipe'", "mlflow experiments restore")),
    (delete_experiment, "evaluate", 2, ("'lmpipe'", "mlflow experiments restore")),
    (delete_experiment, "promote", 2, ("'lmpipe'", "mlflow experiments restore")),
    (corrupt_resume_json, "train", 0, ("ckpt/gru-", "/resume.json", "afresh")),
    (truncate_last_checkpoint, "train", 0, ("ckpt/gru-", "/last.ckpt", "afresh")),
    (delete_training_run, "evaluate", 0, ("models/gru/run.json", "new run")),
    (run_json_names_unknown_run, "evaluate", 0, ("models/gru/run.json", "0" * 32)),
    (corrupt_run_json, "evaluate", 2, ("models/gru/run.json", "dvc checkout -f models/gru/run.json")),
    (delete_vocab, "train", 2, r"data/vocab\.json: missing; restore it with `dvc checkout -f data/vocab\.json`"),
    (delete_vocab, "ngram", 2, ("data/vocab.json", "missing")),
    (edit_vocab, "evaluate", 2, ("data/vocab.json", "vocabulary")),
    (truncate_test_stream, "evaluate", 2, ("data/test.npy", "damaged")),
    (out_of_vocabulary_ids, "ngram", 2, ("data/train.npy", "1000000")),
    (drop_units_array, "evaluate", 2, ("data/units.npz", "test_chars")),
    (truncate_model, "evaluate", 2, r"models/gru/model\.pt: damaged, not a readable torch "
                                    r"checkpoint.*; restore it with `dvc checkout -f models/gru/model\.pt`"),
    (model_of_another_vocabulary, "evaluate", 2, ("models/ngram/model.npz", "data/prepared")),
    (corrupt_ngram_model, "evaluate", 2, ("models/ngram/model.npz", "damaged")),
    (corrupt_counts, "evaluate", 2, ("models/ngram/counts.parquet", "damaged")),
    (delete_registered_version, "promote", 2, ("lmpipe-gru v", "registry", "dvc repro -f -s evaluate")),
    (delete_registered_model, "promote", 2, ("lmpipe-gru v", "registry")),
    (delete_champion_alias, "promote", 0, ("gru v", "`champion` set")),
    (corrupt_registry_json, "promote", 2, ("metrics/registry.json", "list", "dvc repro -f -s evaluate")),
    (nan_weights, "evaluate", 2, ("models/gru/model.pt", "NaN", "dvc checkout -f models/gru",
                                  "dvc repro -f -s train@gru")),
    (huge_weights, "evaluate", 2, ("models/gru/model.pt", "nan", "dvc checkout -f models/gru")),
    (duplicate_vocab_token, "evaluate", 2, ("data/vocab.json", "'the'", "3 and 4", "dvc checkout -f data/vocab.json")),
    (duplicate_vocab_token, "ngram", 2, ("data/vocab.json", "twice")),
    (blank_vocab_token, "train", 2, ("data/vocab.json", "entry 4", "' '", "dvc checkout -f data/vocab.json")),
    (unsorted_ngram_keys, "evaluate", 2, ("models/ngram/model.npz", "order-2", "dvc checkout -f models/ngram",
                                          "dvc repro -f -s ngram")),
    (nan_ngram_logprob, "evaluate", 2, ("models/ngram/model.npz", "order 2", "nan", "entry 3")),
    (positive_ngram_logprob, "evaluate", 2, ("models/ngram/model.npz", "order 3", "0.5", "entry 0")),
    (infinite_ngram_backoff, "evaluate", 2, ("models/ngram/model.npz", "backoffs", "order 1", "-inf",
                                             "entry 5")),
    (units_of_another_length, "evaluate", 2, ("data/units.npz", "test_unit", "data/test.npy",
                                              "dvc checkout -f data/units.npz")),
    (negative_unit_id, "evaluate", 2, ("data/units.npz", "valid_unit", "-1")),
    (zero_chars, "evaluate", 2, ("data/units.npz", "test_chars", "0")),
    (stats_without_test, "evaluate", 2, ("data/stats.json", "test", "git checkout data/stats.json",
                                         "dvc repro -f -s prepare")),
    (stats_of_wrong_types, "evaluate", 2, ("data/stats.json", "test.oov_rate", "'0.1'", "git checkout")),
    (history_without_val_ppl, "evaluate", 2, ("models/gru/history.json", "entry 0", "val_ppl",
                                              "dvc checkout -f models/gru", "dvc repro -f -s train@gru")),
    (history_with_string_step, "evaluate", 2, ("models/gru/history.json", "entry 0", "step", "'12'")),
    (cut_test_stream, "evaluate", 2, ("data/test.npy", "</s>", "dvc checkout -f data/test.npy")),
    (train_stream_cut_mid_sentence, "ngram", 2, ("data/train.npy", "</s>")),
    (train_stream_cut_mid_sentence, "train", 2, ("data/train.npy", "</s>")),
    (nan_metrics, "promote", 2, ("metrics/metrics.json", "gru", "test_ppl=nan", "dvc repro -f -s evaluate")),
    (impossible_metrics, "promote", 2, ("metrics/metrics.json", "gru", "test_ppl=-3.0")),
    (malformed_test_set, "promote", 2, ("metrics/registry.json", "gru", "test_set", '"abc"')),
    (broken_probes, "evaluate", 2, ("probes.yaml", "YAML")),
    (server_down, "train", 2, ("http://127.0.0.1:", "lmpipe mlflow-server")),
    (server_down, "evaluate", 2, ("http://127.0.0.1:", "lmpipe mlflow-server")),
    (store_not_a_database, "evaluate", 2, ("mlflow.db", "sqlite", "aside")),
]


def names(line: str, *things: str) -> None:
    """Each thing (a file, a key, an MLflow object, a word of the fix) stands in the line."""
    missing = [thing for thing in things if thing not in line]
    assert not missing, (missing, line)


def _says(text: str, message) -> None:
    """`message`: what `text` names (a tuple), or the regex of a whole line (a str)."""
    import re
    if isinstance(message, str):
        assert re.search(message, text), text
    else:
        names(text, *message)


@pytest.mark.parametrize("damage,stage,status,message", CASES,
                         ids=[f"{d.__name__}-{s}" for d, s, _, _ in CASES])
def test_damaged_state_gets_one_line_or_recovers(repo, capsys, monkeypatch, damage, stage,
                                                 status, message):
    for key, value in (damage(repo) or {}).items():
        monkeypatch.setenv(key, value)
    outputs = {p: p.read_bytes() for folder in ("data", "models", "metrics")
               for p in (repo / folder).rglob("*") if p.is_file()}
    code, out, err = _stage(capsys, stage)
    assert code == status, (out, err)
    if status:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lmpipe: error: "), err
        _says(lines[0], message)
        # nothing produced before is lost: a refused stage writes nothing
        assert {p: p.read_bytes() for p in outputs if p.exists()} == outputs
    else:
        _says(out, message)


# ---- the one error path (pipeline/errors.py) ----------------------------------------------------

def test_an_unforeseen_error_is_one_line_with_exit_1_and_debug_shows_the_traceback(capsys,
                                                                                   monkeypatch):
    def stage():
        return {}["missing"]
    monkeypatch.delenv("LMPIPE_DEBUG", raising=False)
    assert run_stage(stage, []) == 1
    assert capsys.readouterr().err == ("lmpipe: error: KeyError: 'missing' (unexpected; rerun "
                                       "with LMPIPE_DEBUG=1 for the traceback and report it)\n")
    monkeypatch.setenv("LMPIPE_DEBUG", "1")
    with pytest.raises(KeyError):
        run_stage(stage, [])


def test_a_stage_process_with_lmpipe_debug_prints_the_traceback(tmp_path):
    import subprocess
    import sys
    env = {**os.environ, "LMPIPE_DEBUG": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "promote.py"), "metrics"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr   # no params.yaml here
    assert "ParamsError" in result.stderr and "params.yaml" in result.stderr


@pytest.mark.parametrize("damage,argv,message", [
    (truncate_model, ["score", "the cat saw the fox ."], ("models/gru/model.pt", "dvc checkout -f models/gru/model.pt")),
    (model_of_another_vocabulary, ["fill", "the ___ saw the fox ."], ("models/gru/model.pt", "data/prepared")),
    (delete_vocab, ["generate", "--model", "gru"], ("data/vocab.json", "missing")),
    (corrupt_ngram_model, ["score", "--model", "ngram", "the cat"], ("models/ngram/model.npz", "damaged")),
    (delete_ngram_weights, ["score", "the cat"], ("models/ngram", "no model.npz", "dvc checkout -f models/ngram")),
    (nan_weights, ["score", "the cat saw the fox ."], ("models/gru/model.pt", "NaN", "dvc repro -f -s train@gru")),
    (nan_ngram_logprob, ["fill", "the ___ saw the fox ."], ("models/ngram/model.npz", "log10")),
])
def test_commands_on_damaged_models_get_one_line(repo, capsys, damage, argv, message):
    from pipeline.cli.main import main
    damage(repo)
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--data", "data"])
    err = capsys.readouterr().err
    assert stopped.value.code not in (0, None) and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmpipe: error: "), err
    names(lines[0], *message)


def test_a_model_with_nan_scores_never_becomes_champion(repo, capsys):
    """The scores of a damaged model (metrics.json as an older evaluate wrote them for NaN
    weights): promote refuses before any alias moves, so no champion is set."""
    client = _client(repo)
    for alias in [a for a in client.get_registered_model("lmpipe-gru").aliases]:
        client.delete_registered_model_alias("lmpipe-gru", alias)
    nan_metrics(repo)
    code, _, err = _stage(capsys, "promote")
    assert code == 2 and err.startswith("lmpipe: error: "), err
    names(err, "metrics/metrics.json", "gru", "test_ppl=nan")
    assert client.get_registered_model("lmpipe-gru").aliases == {}


def test_promotion_never_takes_a_non_finite_test_ppl(repo):
    """A NaN test_ppl is refused where metrics.json is read (decisions.check_result), and a
    champion scored NaN is no bar to clear."""
    from pipeline.errors import StateError
    from pipeline.tracking import decisions, promotion
    path = repo / "metrics" / "metrics.json"
    with pytest.raises(StateError) as refused:
        decisions.check_result(path, "gru", {"test_ppl": float("nan")})
    names(str(refused.value), "metrics.json", "gru", "test_ppl")
    promoted, reason = promotion.decide({"test_ppl": 50.0},
                                        {"version": "3", "metrics": {"test_ppl": float("nan")}}, 0.01)
    assert promoted
    names(reason, "v3", "test_ppl", "nan")
