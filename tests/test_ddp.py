"""Real DDP: the train stage with strategy ddp, 2 CPU processes over gloo, launched as a
subprocess (Lightning re-executes the command for rank 1; never inside the pytest process)."""
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from pipeline.evaluation import scoring
from pipeline.neural.rnn import RNNLM

from .conftest import ROOT

pytestmark = pytest.mark.slow


def _params(tmp_path, **train):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["corpus"]["max_sentences"] = 600
    params["vocab"]["min_count"] = 1
    params["train"].update(max_epochs=2, bptt=12, num_threads=1, eval_batch_size=6,
                           accelerator="cpu", checkpoint_every_n_steps=10, **train)
    params["models"]["gru"].update(embed_dim=16, hidden_dim=16, dropout=0.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def _train(tmp_path, out):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "stages.train", "gru", "data/prepared", out,
                             f"ck_{out}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads((tmp_path / out / "history.json").read_text())


def test_two_process_ddp_training(tmp_path):
    _params(tmp_path, batch_size=4, devices=2, strategy="ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "stages.prepare", "data/prepared"], cwd=tmp_path,
                   env=env, check=True, capture_output=True)
    ddp = _train(tmp_path, "ddp")

    # (a) one MLflow run for the model, whatever the world size; checkpoints written once
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
    assert sorted(p.name for p in (tmp_path / "ck_ddp").iterdir()) == ["best.ckpt", "last.ckpt", "resume.json"]

    # (b) the distributed validation perplexity (sums over both ranks) is the single-process
    # evaluation of the saved model, same columns, same tokens
    model = RNNLM.from_checkpoint(torch.load(tmp_path / "ddp" / "model.pt", weights_only=True))
    valid = np.load(tmp_path / "data" / "prepared" / "valid.npy")
    alone = scoring.summarize(scoring.causal_logprobs(model, valid, num_columns=6))["ppl"]
    best = min(h["val_ppl"] for h in ddp)
    assert alone == pytest.approx(best, rel=1e-5)

    # (c) one process with the same global batch (2 x 4 columns) reads the same windows; the
    # runs differ only in how the loss is averaged (DDP: mean over ranks of each rank's mean;
    # one process: mean over all targets — equal up to the per-rank count of ignored <s>
    # targets) and in summation order
    _params(tmp_path, batch_size=8, devices=1, strategy="auto")
    single = _train(tmp_path, "single")
    for a, b in zip(ddp, single, strict=True):
        assert a["val_ppl"] == pytest.approx(b["val_ppl"], rel=1e-2)
