import re

import pytest
import yaml

from pipeline import config, files
from pipeline.cli import presets
from pipeline.config import ParamsError
from pipeline.tracking import store

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
    raw = _raw()
    raw["corpus"]["level"] = "char"   # an old lmpipe's key: named, with the keys allowed
    with pytest.raises(ParamsError, match=r"unknown key corpus\.level \(allowed: .*tokenizer"):
        config.from_dict(raw)


def test_unknown_section():
    raw = _raw()
    raw["modles"] = {}
    with pytest.raises(ParamsError, match="did you mean models"):
        config.from_dict(raw)


@pytest.mark.parametrize("section,key,value", [
    ("ngram", "order", 0), ("ngram", "order", 7), ("train", "lr", "fast"), ("vocab", "min_count", 1.5),
    ("split", "valid", -0.1), ("split", "valid", 2.5), ("split", "valid", 200000),
    ("split", "method", "chapters"), ("corpus", "tokenizer", "bytes"),
    ("corpus", "unk", "< unk >"), ("vocab", "max_size", -1), ("train", "clip", -1.0),
    ("train", "lr", float("nan")), ("train", "limit_train_batches", float("inf")),
    ("train", "clip", float("nan")), ("mlflow", "experiment", " "), ("mlflow", "tracking_uri", "x"),
    ("train", "lr", 0), ("train", "limit_train_batches", 2.5), ("train", "batch_size", "32"),
    ("train", "precision", "fp8"), ("corpus", "encoding_errors", "skip"),
    ("corpus", "max_line_tokens", -1), ("corpus", "source", " "), ("corpus", "lowercase", "yes"),
    ("corpus", "memory", "lots"), ("evaluate", "confidence_level", 0.2), ("promote", "margin", 1.0),
])
def test_bad_values_name_the_key(section, key, value):
    raw = _raw()
    raw[section][key] = value
    with pytest.raises(ParamsError, match=rf"^{section}\.{key}\b") as raised:
        config.from_dict(raw)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("section,key,value,message", [   # the commonest, whole
    ("ngram", "order", 7, r"ngram\.order=7 is out of range; use 1\.\.6$"),
    ("models.gru", "dropout", 1.0, r"models\.gru\.dropout=1\.0 is out of range; use a value in \[0, 1\)$"),
    ("train", "lr", 0, r"train\.lr=0 is out of range; it must be > 0$"),
    ("train", "batch_size", "32", r"train\.batch_size='32' has the wrong type; expected a whole number$"),
    ("corpus", "lowercase", "yes", r"corpus\.lowercase='yes' has the wrong type; expected true or false$"),
    ("split", "method", "chapters", r"split\.method='chapters' is not allowed; use one of random, contiguous, documents$"),
    ("train", "lr", float("nan"), r"train\.lr=nan is not a finite number; give a real value$"),
    ("corpus", "memory", 80, r"corpus\.memory=80: '80' is 81,920 bytes, below the least budget of 1M; give e\.g\. 100M$"),
    ("split", "train", 0.9, r"split\.train, split\.valid, split\.test: set one to 0 \(it takes the rest\)"),
    # Lightning's ddp_spawn returns nothing to the main process: not offered (ddp does its work)
    ("train", "strategy", "ddp_spawn", r"train\.strategy='ddp_spawn' is not allowed; use one of auto, ddp$"),
])
def test_the_commonest_messages_whole(section, key, value, message):
    raw = _raw()
    node = raw
    for part in section.split("."):
        node = node[part]
    node[key] = value
    with pytest.raises(ParamsError, match=message):
        config.from_dict(raw)


@pytest.mark.parametrize("section,values,keys", [   # cross-field rules name every key involved
    ("split", {"valid": 0.96}, ("split.train", "split.valid", "split.test")),
    ("split", {"test": 0}, ("split.train", "split.valid", "split.test")),
    ("corpus", {"valid_source": "v.txt"}, ("corpus.valid_source", "corpus.test_source")),
])
def test_cross_field_rules_name_their_keys(section, values, keys):
    raw = _raw()
    raw[section].update(values)
    with pytest.raises(ParamsError) as raised:
        config.from_dict(raw)
    assert all(key in str(raised.value) for key in keys)


@pytest.mark.parametrize("key,value", [("hidden_dim", 0), ("dropout", 1.0), ("cell", "transformer"),
                                       ("adaptive_cutoffs", [1, "a"]), ("seed", -1)])
def test_bad_model_values(key, value):
    raw = _raw()
    raw["models"]["gru"][key] = value
    with pytest.raises(ParamsError, match=rf"^models\.gru\.{key}="):
        config.from_dict(raw)


def test_the_schema_defaults_are_params_yaml():
    """Defaults live in the schema; the repository's params.yaml states every one of them."""
    raw = files.read_yaml(ROOT / "params.yaml")
    for name, section in config.SECTIONS.items():
        assert raw[name] == section().model_dump(mode="json"), name
    model_keys = set(config.ModelParams.model_fields)
    for name, spec in raw["models"].items():
        assert set(spec) == model_keys, name
    assert raw["seed"] == config.Params.model_fields["seed"].default


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        config.load(bad)


def test_relative_sqlite_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = store.tracking_uri(config.MlflowParams(), tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert store.tracking_uri(config.MlflowParams(), tmp_path) == "http://127.0.0.1:5000"


def test_tie_weights_needs_matching_sizes():
    raw = _raw()
    raw["models"]["gru"].update(tie_weights=True, embed_dim=64, hidden_dim=32)
    with pytest.raises(ParamsError, match=r"^models\.gru\.tie_weights=true needs embed_dim"):
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
        presets.preset_overrides("bad", ROOT / "params.yaml", tmp_path / "presets.yaml")
    with pytest.raises(config.ParamsError, match=r"^NAME 'nope': .*presets\.yaml.* bad$"):
        presets.preset_overrides("nope", ROOT / "params.yaml", tmp_path / "presets.yaml")


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_seed_out_of_range(seed):
    raw = _raw()
    raw["seed"] = seed
    with pytest.raises(ParamsError, match=rf"^seed={seed} is out of range"):
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
    with pytest.raises(ParamsError, match=rf"^models\.{re.escape(name)}: .*train@NAME.*letters, digits, _ and - only"):
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
    ("1.5", r"models\.1\.5: YAML reads the unquoted name 1\.5 as a number, not a name; .*"
            r"letters, digits, _ and - only \(e\.g\. '1_5':\)$"),
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
    (None, r"^models must map each model name"),
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


def test_a_path_only_the_workspace_holds_is_named_in_an_experiments_clone(tmp_path, monkeypatch):
    """In a queued or --temp experiment (cwd a clone, DVC_ROOT the workspace), a params path
    that the workspace has and the clone lacks (untracked) is one line: why, and git/dvc add."""
    workspace, clone = tmp_path / "ws", tmp_path / "ws" / ".dvc" / "tmp" / "exps" / "tmp1"
    clone.mkdir(parents=True)
    (workspace / "extra.txt").write_text("a b\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["corpus"]["source"] = "extra.txt"
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(clone)
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    with pytest.raises(ParamsError) as raised:
        config.load()
    message = str(raised.value)
    for part in ("corpus.source='extra.txt'", "only files tracked by git or DVC", "`git add extra.txt`",
                 "`dvc add extra.txt`", "queue again"):
        assert part in message, message
    (clone / "extra.txt").write_text("a b\n")   # tracked: it reached the clone
    assert config.load().corpus.source == "extra.txt"
    monkeypatch.delenv("DVC_ROOT")             # outside DVC: no workspace to compare with
    (clone / "extra.txt").unlink()
    assert config.load().corpus.source == "extra.txt"
