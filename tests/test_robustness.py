"""Bad input is refused before any work with one line naming the key or file, the value and the
fix; nothing already produced is lost; a diverging training stops with the step and the LR.
The stages run in-process here (stages.run_stage, as `python -m stages.X` does) on tiny inputs;
one test runs a stage as a process to show the user sees exit status 2 and no traceback."""
import hashlib
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pooch
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from pipeline.config import ParamsError, TrainParams
from pipeline.neural.devices import check_machine
from pipeline.neural.lit import LitLM, NumericsError
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.text import corpus
from pipeline.text.corpus import CorpusError
from pipeline.text.tokenizers import tokenize
from stages import ngram as ngram_stage
from stages import prepare as prepare_stage
from stages import run_stage
from stages import train as train_stage

from .conftest import ROOT
from .oracle_prepare import streamed


def names(text: str, *things: str) -> None:
    """Each thing (a key and its value, a file, a step, a word of the fix) stands in the text."""
    missing = [thing for thing in things if thing not in text]
    assert not missing, (missing, text)


# ---- params ----------------------------------------------------------------------------------


def _raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("settings,machine,named", [
    ({"precision": "bf16-mixed"}, (0, 2), ("train.precision='bf16-mixed'", "CUDA")),
    ({"precision": "16-mixed", "accelerator": "cpu"}, (1, 2), ("train.precision='16-mixed'", "CUDA")),
    ({"accelerator": "gpu"}, (0, 2), ("train.accelerator='gpu'", "CUDA")),
    ({"devices": 4}, (2, 16), ("train.devices=4", "devices <= 2")),
    ({"devices": 3}, (0, 2), ("train.devices=3", "2 CPU")),
    ({"num_nodes": 2}, (1, 2), ("train.num_nodes=2", "launcher")),
])
def test_impossible_hardware_is_refused(settings, machine, named):
    with pytest.raises(ParamsError) as raised:
        check_machine(TrainParams(**settings), *machine, env={})
    names(str(raised.value), *named)


@pytest.mark.parametrize("settings,machine,env", [
    ({"precision": "bf16-mixed"}, (1, 2), {}),
    ({"devices": 2, "strategy": "ddp"}, (0, 2), {}),
    ({"devices": 8, "num_nodes": 2}, (8, 64), {"WORLD_SIZE": "16"}),
    ({}, (0, 1), {}),
])
def test_possible_hardware_is_accepted(settings, machine, env):
    check_machine(TrainParams(**settings), *machine, env=env)


# ---- corpus ----------------------------------------------------------------------------------


def test_invalid_utf8_policies(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good line\ncaf\xe9 noir\nlast\n")
    with pytest.raises(CorpusError) as raised:
        streamed(str(path))
    names(str(raised.value), "mixed.txt", "UTF-8", "offset 13", "line 2")
    assert streamed(str(path), errors="replace") == [["good line", "caf\ufffd noir", "last"]]
    assert streamed(str(path), errors="ignore") == [["good line", "caf noir", "last"]]
    assert tokenize("caf\ufffd noir") == ["caf", "\ufffd", "noir"]  # a token of its own


def test_byte_order_marks_nul_bytes_and_pinned_local_files(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfin the beginning\n")
    assert streamed(str(tmp_path / "bom.txt")) == [["in the beginning"]]   # not a token
    (tmp_path / "utf16.txt").write_bytes("in the beginning\n".encode("utf-16"))
    with pytest.raises(CorpusError) as raised:
        streamed(str(tmp_path / "utf16.txt"))
    names(str(raised.value), "utf16.txt", "UTF-16", "UTF-8")
    (tmp_path / "late.txt").write_bytes(b"x" * 5000 + b"\x00\x01")
    with pytest.raises(CorpusError) as raised:
        streamed(str(tmp_path / "late.txt"))
    names(str(raised.value), "late.txt", "binary", "5000")
    text = tmp_path / "pinned.txt"
    text.write_text("one line\n")
    digest = hashlib.sha256(text.read_bytes()).hexdigest()
    assert streamed(str(text), sha256=digest) == [["one line"]]
    text.write_text("one line, edited\n")
    with pytest.raises(CorpusError) as raised:
        streamed(str(text), sha256=digest)
    names(str(raised.value), "pinned.txt", "SHA-256", digest)
    with pytest.raises(CorpusError) as raised:
        streamed(str(tmp_path), sha256=digest)
    names(str(raised.value), "corpus.sha256", f"corpus.source={str(tmp_path)!r}")


def test_binary_and_bad_gzip(tmp_path):
    (tmp_path / "model.bin").write_bytes(bytes(range(256)))
    with pytest.raises(CorpusError) as raised:
        streamed(str(tmp_path / "model.bin"))
    names(str(raised.value), "model.bin", "binary")
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(CorpusError) as raised:
        streamed(str(tmp_path / "broken.txt.gz"))
    names(str(raised.value), "broken.txt.gz", "gzip")


def test_corpus_urls_must_be_https_and_pinned_by_sha256(monkeypatch, tmp_path):
    body = b"in the beginning\nwas the word\n"
    digest = hashlib.sha256(body).hexdigest()
    fetched = []

    def fetch(self, url, output_file, pooch_obj, check_only=False):   # pooch's downloader, offline
        fetched.append(url)
        Path(output_file).write_bytes(body)
    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fetch)
    monkeypatch.setattr(corpus, "CACHE", tmp_path / "cache")
    with pytest.raises(CorpusError) as raised:
        streamed("http://example.org/c.txt", sha256=digest)
    names(str(raised.value), "corpus.source='http://example.org/c.txt'", "https")
    with pytest.raises(CorpusError) as raised:
        streamed("https://example.org/c.txt")
    names(str(raised.value), "corpus.source='https://example.org/c.txt'", "corpus.sha256")
    with pytest.raises(CorpusError) as raised:
        streamed("https://example.org/c.txt", sha256="0" * 64)
    names(str(raised.value), "corpus.source='https://example.org/c.txt'", "SHA-256", digest)
    assert fetched == ["https://example.org/c.txt"]   # refused URLs are never fetched
    assert streamed("https://example.org/c.txt", sha256=digest.upper()) == \
        [["in the beginning", "was the word"]]
    assert streamed("https://example.org/c.txt", sha256=digest) == \
        [["in the beginning", "was the word"]]
    assert len(fetched) == 2   # the second read comes from the cache

    def offline(self, url, output_file, pooch_obj, check_only=False):
        raise OSError("network is unreachable")
    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", offline)
    with pytest.raises(CorpusError) as raised:
        streamed("https://example.org/other.txt", sha256=digest)
    names(str(raised.value), "corpus.source='https://example.org/other.txt'", "network is unreachable")


# ---- stages, in-process ----------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory with a tiny params.yaml and a small text corpus; the cwd of the stages."""
    lines = [f"the {w} saw the {v} and the {v} saw the {w} ." for w in ("cat", "dog", "cow", "hen")
             for v in ("fox", "owl", "ram", "elk", "bee")] * 8
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\t\n\n")
    (tmp_path / "enormous.txt").write_text("word " * 100_000)
    params = _raw()
    params["corpus"]["source"] = "corpus.txt"
    params["split"].update(method="random", valid=0.1, test=0.1)
    params["vocab"]["min_count"] = 1
    params["train"].update(batch_size=4, bptt=8, num_threads=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def _set(workdir, section, **values):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params[section].update(values)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def _stage(capsys, module, *args):
    status = run_stage(module.main, list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_a_bad_input_keeps_what_was_produced(workdir, capsys):
    assert _stage(capsys, prepare_stage, "data")[0] == 0
    before = {p.name: p.read_bytes() for p in (workdir / "data").iterdir()}
    (workdir / "latin1.txt").write_bytes(b"caf\xe9\n" * 50)
    _set(workdir, "corpus", source="latin1.txt")
    status, err = _stage(capsys, prepare_stage, "data")
    assert status == 2
    names(err, "latin1.txt", "UTF-8", "offset 3", "line 1", "corpus.encoding_errors: replace")
    assert {p.name: p.read_bytes() for p in (workdir / "data").iterdir()} == before
    _set(workdir, "corpus", encoding_errors="replace")
    assert _stage(capsys, prepare_stage, "data")[0] == 0
    stats = yaml.safe_load((workdir / "data" / "stats.json").read_text())
    assert stats["replaced_characters"] == 50


@pytest.mark.parametrize("section,values,stage,named", [
    ("corpus", {"source": "missing.txt"}, "prepare", ("corpus.source='missing.txt'",)),
    ("corpus", {"source": "empty.txt"}, "prepare", ("corpus.source='empty.txt'", "tokens")),
    ("corpus", {"source": "blank.txt"}, "prepare", ("corpus.source='blank.txt'", "tokens")),
    ("corpus", {"source": "enormous.txt", "max_line_tokens": 0}, "prepare", ("valid", "1 sentences", "split.valid")),
    ("vocab", {"min_count": 10_000}, "prepare", ("vocab.min_count=10000",)),
    ("split", {"valid": 0.001}, "prepare", ("valid", "160 sentences", "split.valid=0.001")),
    ("ngram", {"order": 6, "discount_fallback": True}, "ngram", ("ngram.order=6", "5 tokens")),
    ("ngram", {"order": 4}, "ngram", ("order 1", "ngram.order", "ngram.discount_fallback")),
    ("train", {"bptt": 1000}, "train", ("train.bptt=1000", "train.batch_size")),
    ("train", {"precision": "bf16-mixed", "accelerator": "cpu"}, "train", ("train.precision='bf16-mixed'", "CUDA")),
    ("train", {"devices": 512}, "train", ("train.devices=512",)),
])
def test_each_bad_input_gets_one_clear_line(workdir, capsys, section, values, stage, named):
    if stage != "prepare":
        assert _stage(capsys, prepare_stage, "data")[0] == 0
    _set(workdir, section, **values)
    if section == "ngram" and "order" in values and values["order"] == 6:
        (workdir / "corpus.txt").write_text("short line .\n" * 100)
        _set(workdir, "ngram", memory_orders=3)
        assert _stage(capsys, prepare_stage, "data")[0] == 0
    module = {"prepare": prepare_stage, "ngram": ngram_stage, "train": train_stage}[stage]
    args = {"prepare": ["data"], "ngram": ["data", "models/ngram"],
            "train": ["gru", "data", "models/gru"]}[stage]
    status, err = _stage(capsys, module, *args)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("lmpipe: error: "), err
    names(err, *named)
    assert not (workdir / "models").exists() and not (workdir / "mlflow.db").exists()


def test_an_enormous_line_becomes_sentences_of_max_line_tokens(workdir, capsys):
    _set(workdir, "corpus", source="enormous.txt", max_line_tokens=500)
    assert run_stage(prepare_stage.main, ["data"]) == 0
    names(capsys.readouterr().out, "corpus.max_line_tokens=500", "1 line")
    stats = yaml.safe_load((workdir / "data" / "stats.json").read_text())
    assert stats["lines_cut"] == 1
    assert sum(stats[s]["sentences"] for s in ("train", "valid", "test")) == 200


def test_an_os_error_names_the_path(workdir, capsys):
    (workdir / "data").write_text("a file where the output folder should be")
    status, err = _stage(capsys, prepare_stage, "data")
    assert status == 2 and err.startswith("lmpipe: error: data") and err.count("\n") == 1, err
    names(err, "File exists")


def test_sigterm_unwinds_the_stage_with_one_line():
    import os
    import signal
    import time

    def stage():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the stage")

    before = signal.getsignal(signal.SIGTERM)
    assert run_stage(stage, []) == 143
    assert signal.getsignal(signal.SIGTERM) is before   # restored


def test_every_torch_load_is_weights_only():
    import re
    calls = [(path, line) for folder in ("pipeline", "stages", "benchmarks")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for line in path.read_text().splitlines() if re.search(r"torch\.load\(", line)]
    assert calls   # the scan sees the loads there are
    assert [c for c in calls if "weights_only=True" not in c[1]] == []
    pickles = [path for folder in ("pipeline", "stages") for path in (ROOT / folder).rglob("*.py")
               if re.search(r"\bpickle\.|allow_pickle=True", path.read_text())]
    assert pickles == []


def test_a_stage_process_exits_2_without_a_traceback(tmp_path):
    params = _raw()
    params["vocab"]["min_cout"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "stages.prepare", "out"], cwd=tmp_path,
                            capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("lmpipe: error: params.yaml: unknown key vocab.min_cout; did "
                                     "you mean vocab.min_count? (allowed: min_count, max_size)")


# ---- numerics --------------------------------------------------------------------------------


def _counting_stream(sentences: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    parts = [np.r_[1, np.arange(s, s + rng.integers(2, 7)), 2] for s in rng.integers(3, 10, sentences)]
    return np.concatenate(parts).astype(np.int32)


class Poison(L.Callback):
    """Sets a weight to NaN at the start of batch 3 (so the loss of step 4 is NaN), or at the
    end of step 3 (so the weights are NaN when step 3's checkpoint is taken)."""

    def __init__(self, hook: str):
        self.hook = hook

    def _poison(self, trainer, module):
        if trainer.global_step == 3:
            with torch.no_grad():
                module.model.embedding.weight[:, 0] = float("nan")

    def on_train_batch_start(self, trainer, module, batch, batch_index):
        if self.hook == "start":
            self._poison(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        if self.hook == "end":
            self._poison(trainer, module)


@pytest.mark.parametrize("eager", [None, False])   # False: the GPU's deferred check, on the CPU
@pytest.mark.parametrize("hook,named,last_saved", [
    ("start", ("loss", "step 4", "epoch 0", "0.003", "train.lr", "0.00075", "train.clip"), 3),
    ("end", ("weights", "step 3", "checkpoint"), 2),
])
def test_a_nan_stops_training_naming_step_lr_and_fix(tmp_path, hook, named, last_saved, eager):
    train = TrainParams(max_epochs=1, batch_size=4, bptt=8, lr=0.003)
    stream = _counting_stream(200)
    lit = LitLM(RNNLM(ModelConfig(vocab_size=16, embed_dim=8, hidden_dim=8)), train, stream,
                stream[:int(np.flatnonzero(stream == 2)[20]) + 1], seed=0)
    lit.eager_check = eager
    every_step = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Poison(hook), every_step])
    with pytest.raises(NumericsError) as raised:
        trainer.fit(lit)
    names(str(raised.value), *named)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == last_saved   # nothing diverged was saved
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_a_python_without_lmpipes_packages_is_one_line(tmp_path):
    """DVC runs the first `python` on PATH; one that lacks a package lmpipe imports (here
    ruamel.yaml, hidden) gets one line naming the interpreter, the module and the fix."""
    hide = ("import runpy, sys; sys.modules['ruamel.yaml'] = None; "
            "runpy.run_module('stages.prepare', run_name='__main__', alter_sys=True)")
    result = subprocess.run([sys.executable, "-c", hide, "out"], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.strip() == (f"lmpipe: {sys.executable} has no module 'ruamel.yaml': DVC runs "
                                     "the first `python` on PATH; `source .venv/bin/activate` and "
                                     "rerun (or `make setup`)")
