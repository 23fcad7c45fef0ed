import re

import pytest
import yaml

from pipeline import config
from pipeline.config import ParamsError

from .conftest import ROOT


def test_repository_params_load():
    params = config.load(ROOT / "params.yaml")
    assert set(params.models) == {"rnn", "gru", "birnn", "deep"}
    assert params.models["deep"].num_layers >= 2
    assert params.models["birnn"].bidirectional
    assert params.models["gru"].cell == "gru"


def _raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_unknown_key_suggests_the_closest():
    raw = _raw()
    raw["train"]["max_epoch"] = 3
    with pytest.raises(ParamsError, match=r"train\.max_epoch.*did you mean train\.max_epochs"):
        config.from_dict(raw)


def test_unknown_section():
    raw = _raw()
    raw["modles"] = {}
    with pytest.raises(ParamsError, match="did you mean models"):
        config.from_dict(raw)


@pytest.mark.parametrize("section,key,value,message", [
    ("ngram", "order", 0, r"ngram\.order=0 is out of range"),
    ("train", "lr", "fast", r"train\.lr='fast' has the wrong type"),
    ("vocab", "min_count", 1.5, r"vocab\.min_count=1\.5 has the wrong type"),
    ("split", "valid", 0.96, r"fractions of split\.train, split\.valid and split\.test add up to 1"),
    ("split", "valid", -0.1, r"split\.valid=-0\.1 is out of range"),
    ("split", "valid", 2.5, r"split\.valid=2\.5 is out of range"),
    ("split", "valid", 200000, r"split\.valid=200000 is a number of words, which only split\.method: contiguous"),
    ("split", "test", 0, r"exactly one of split\.train, split\.valid, split\.test must be 0"),
    ("split", "method", "chapters", r"split\.method='chapters' is not allowed; use one of random, contiguous, documents"),
    ("corpus", "tokenizer", "bytes", r"corpus\.tokenizer='bytes' is not allowed; use one of words, whitespace, chars"),
    ("corpus", "level", "char", r"corpus\.level was replaced: use corpus\.tokenizer"),
    ("corpus", "unk", "< unk >", r"corpus\.unk='< unk >' holds whitespace"),
    ("corpus", "valid_source", "v.txt", r"corpus\.valid_source and corpus\.test_source go together"),
    ("vocab", "max_size", -1, r"vocab\.max_size=-1 is out of range"),
    ("train", "clip", -1.0, r"train\.clip=-1\.0 is out of range; it must be >= 0"),
    ("train", "lr", float("nan"), r"train\.lr=nan is not a finite number"),
    ("train", "limit_train_batches", float("inf"), r"train\.limit_train_batches=inf is not a finite number"),
    ("train", "clip", float("nan"), r"train\.clip=nan is not a finite number"),
    ("mlflow", "experiment", " ", r"mlflow\.experiment is empty"),
    ("mlflow", "tracking_uri", "nonsense", r"mlflow\.tracking_uri='nonsense' is not a tracking store"),
    ("train", "lr", 0, r"train\.lr=0\.0 is out of range; it must be > 0"),
    ("train", "limit_train_batches", 2.5, r"train\.limit_train_batches=2\.5 is out of range"),
    ("train", "batch_size", "32", r"train\.batch_size='32' has the wrong type; expected a whole number"),
    ("train", "precision", "fp8", r"train\.precision='fp8' is not allowed; use one of auto, "),
    ("corpus", "encoding_errors", "skip", r"corpus\.encoding_errors='skip' is not allowed; use one of strict, replace, ignore"),
    ("corpus", "max_line_tokens", -1, r"corpus\.max_line_tokens=-1 is out of range"),
    ("corpus", "source", " ", r"corpus\.source is empty"),
    ("corpus", "lowercase", "yes", r"corpus\.lowercase='yes' has the wrong type; expected true or false"),
    ("ngram", "order", 7, r"ngram\.order=7 is out of range; use 1\.\.6"),
])
def test_bad_values_name_key_and_value(section, key, value, message):
    raw = _raw()
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        config.from_dict(raw)


@pytest.mark.parametrize("key,value,message", [
    ("hidden_dim", 0, r"models\.gru\.hidden_dim=0 is out of range"),
    ("dropout", 1.0, r"models\.gru\.dropout=1\.0 is out of range"),
    ("cell", "transformer", r"models\.gru\.cell='transformer' is not allowed"),
])
def test_bad_model_values(key, value, message):
    raw = _raw()
    raw["models"]["gru"][key] = value
    with pytest.raises(ParamsError, match=message):
        config.from_dict(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        config.load(bad)


def test_relative_sqlite_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = config.tracking_uri(config.MlflowParams(), tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert config.tracking_uri(config.MlflowParams(), tmp_path) == "http://127.0.0.1:5000"


def test_tie_weights_needs_matching_sizes():
    raw = _raw()
    raw["models"]["gru"].update(tie_weights=True, embed_dim=64, hidden_dim=32)
    with pytest.raises(ParamsError, match=r"models\.gru\.tie_weights=true needs embed_dim == hidden_dim"):
        config.from_dict(raw)
    raw["train"]["lr_schedule"] = "cosine"
    raw["models"]["gru"].update(embed_dim=32)
    with pytest.raises(ParamsError, match=r"train\.lr_schedule='cosine' is not allowed"):
        config.from_dict(raw)


def test_presets_print_valid_dvc_flags(tmp_path):
    """`lmpipe preset NAME` gives -S flags whose values, applied to params.yaml, validate; the
    output survives `$(lmpipe preset NAME)`, which splits on whitespace and removes no quotes."""
    import subprocess
    import sys

    from .conftest import ROOT
    applied = {}
    from pipeline.cli.main import main as lmpipe
    for name in yaml.safe_load((ROOT / "configs" / "presets.yaml").read_text()):
        if name == "medium":       # the command itself once, as a user runs it
            out = subprocess.run([sys.executable, "-m", "pipeline.cli", "preset", name], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
        else:
            import contextlib
            import io
            import os
            buffer, here = io.StringIO(), os.getcwd()
            try:
                os.chdir(ROOT)
                with contextlib.redirect_stdout(buffer):
                    lmpipe(["preset", name])
            finally:
                os.chdir(here)
            out = buffer.getvalue()
        flags = out.split()
        assert flags[0::2] == ["-S"] * (len(flags) // 2) and len(flags) >= 10
        assert not any(q in out for q in "'\"")
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        for assignment in flags[1::2]:
            key, _, value = assignment.partition("=")
            *path, last = key.split(".")
            node = raw
            for part in path:
                node = node[part]
            node[last] = yaml.safe_load(value)
        applied[name] = config.from_dict(raw)
    assert applied["medium"].models["deep"].cell == "gru" and applied["medium"].models["deep"].tie_weights
    assert applied["ptb"].corpus.tokenizer == "whitespace" and applied["ptb"].vocab.max_size == 0
    assert applied["brown"].vocab.min_count == 4                # Bengio: words seen <= 3 times are <unk>
    assert applied["shakespeare"].split.method == "contiguous"
    awd = applied["awd-lstm"]
    assert awd.train.optimizer == "nt-asgd" and awd.train.weight_decay == pytest.approx(1.2e-6)
    assert (awd.models["deep"].num_layers, awd.models["deep"].tie_weights) == (3, True)
    assert applied["brown-cpu"].models["deep"].adaptive_cutoffs == (2000, 10000)
    assert applied["zaremba-small"].train.lr_schedule == "step"


def test_a_preset_with_a_misspelt_key_is_refused(tmp_path):
    from .conftest import ROOT
    (tmp_path / "presets.yaml").write_text("bad:\n  set:\n    train.max_epoch: 3\n")
    with pytest.raises(config.ParamsError, match="bad.set.train.max_epoch"):
        config.preset_overrides("bad", ROOT / "params.yaml", tmp_path / "presets.yaml")
    with pytest.raises(config.ParamsError, match="no preset 'nope'; known: bad"):
        config.preset_overrides("nope", ROOT / "params.yaml", tmp_path / "presets.yaml")


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_seed_out_of_range(seed):
    raw = _raw()
    raw["seed"] = seed
    with pytest.raises(ParamsError, match=rf"seed={seed} is out of range; use 0 <= seed < 2\*\*32"):
        config.from_dict(raw)


def test_params_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_bytes(b"seed: 1\ncorpus:\n  source: caf\xe9.txt\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: not UTF-8 text \(byte offset 29\)"):
        config.load(bad)


def test_params_are_read_as_dvc_reads_them_yaml_1_2(tmp_path):
    """DVC reads params.yaml with ruamel.yaml (YAML 1.2): `1e-3` is a float (PyYAML, YAML 1.1,
    reads a string) and `on` a string (PyYAML: true); lmpipe agrees with DVC."""
    from dvc.utils.serialize import parse_yaml
    path = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    assert "\n  lr: 0.003" in text and "\n  experiment: lmpipe" in text
    path.write_text(text.replace("\n  lr: 0.003", "\n  lr: 1e-3", 1)
                    .replace("\n  experiment: lmpipe", "\n  experiment: on", 1))
    params = config.load(path)
    assert params.train.lr == 0.001 and params.mlflow.experiment == "on"
    assert parse_yaml(path.read_text(), str(path))["train"]["lr"] == 0.001   # as DVC sees it
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-3"         # not as PyYAML


def test_a_duplicate_key_is_one_line_naming_where(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: not valid YAML \(line 2, column 1\): "
                                          r".*duplicate key"):
        config.load(path)


@pytest.mark.parametrize("name", ["gru.small", "gru small", "gru@2", "gru/x", ""])
def test_model_names_must_be_addressable_by_dvc(name):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"][name] = dict(raw["models"]["gru"])
    with pytest.raises(ParamsError, match=rf"models\.{name}: .* cannot name a model; DVC addresses "
                                          r"it as stage train@.*letters, digits, _ and - only"):
        config.from_dict(raw)


def test_model_names_with_dash_and_underscore_are_fine():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"]["gru-small_2"] = dict(raw["models"]["gru"])
    assert "gru-small_2" in config.from_dict(raw).models


@pytest.mark.parametrize(("key", "message"), [
    ("1", r"models\.1: YAML reads the unquoted name 1 as a number, not a name; quote it \('1':\)$"),
    ("7", r"models\.7: YAML reads the unquoted name 7 as a number, not a name; quote it \('7':\)$"),
    ("true", r"models\.true: YAML reads the unquoted name true as a boolean, not a name; quote it "
             r"\('true':\)$"),
    ("null", r"models\.null: YAML reads the unquoted name null as null, not a name; quote it"),
    ("1.5", r"models\.1\.5: YAML reads the unquoted name 1\.5 as a number, not a name; quote it and "
            r"use letters, digits, _ and - only, .*\(e\.g\. '1_5':\)$"),
    ("2024-01-01", r"models\.2024-01-01: YAML reads the unquoted name 2024-01-01 as a date, not a "
                   r"name; quote it \('2024-01-01':\)$"),
])
def test_an_unquoted_model_name_yaml_reads_as_no_string_is_told_to_be_quoted(tmp_path, key, message):
    text = (ROOT / "params.yaml").read_text()
    assert "\n  gru:\n" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("\n  gru:\n", f"\n  {key}:\n", 1))
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))}: {message}"):
        config.load(path)
    path.write_text(text.replace("\n  gru:\n", f"\n  '{key}':\n", 1))   # quoted, as told
    if re.fullmatch(config.MODEL_NAME, key):
        assert key in config.load(path).models


@pytest.mark.parametrize("text", ["", "\n\n", "# params.yaml\n# all commented out\n", "---\n"])
def test_an_empty_params_file_is_refused_as_models_empty_is(tmp_path, text):
    """Not "every section at its default" (no models: evaluate would rewrite metrics/ without
    the recurrent models), but what `models: {}` gets: one line and the fix."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))}: is empty \(no settings at "
                                          rf"all\); restore it \(`git checkout {re.escape(str(path))}`\)"):
        config.load(path)


@pytest.mark.parametrize(("models", "message"), [
    (None, r"models is missing; models must map each model name"),
    ({}, r"models must map each model name \(rnn, gru, \.\.\.\) to its settings"),
])
def test_params_without_models_are_refused(models, message):
    raw = _raw()
    if models is None:
        del raw["models"]
    else:
        raw["models"] = models
    with pytest.raises(ParamsError, match=message):
        config.from_dict(raw)
