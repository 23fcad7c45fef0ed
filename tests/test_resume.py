"""A training killed with SIGKILL resumes from checkpoints/<kind>/last.ckpt when its stage is run
again: same final weights as an uninterrupted run (CPU, bit for bit), same MLflow run continued."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
import yaml

from .conftest import ROOT

pytestmark = pytest.mark.slow


def _env(cwd):
    return {**os.environ, "PYTHONPATH": str(ROOT), "DVC_ROOT": str(cwd)}


def _train(cwd, out, ckpts):
    return [sys.executable, "-m", "stages.train", "gru", "data/prepared", out, ckpts]


def test_sigkilled_training_resumes_exactly(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["corpus"]["max_sentences"] = 400
    params["vocab"]["min_count"] = 1
    params["train"].update(max_epochs=3, batch_size=8, bptt=12, num_threads=1,
                           checkpoint_every_n_steps=5, lr_schedule="plateau")
    params["models"]["gru"].update(embed_dim=16, hidden_dim=16, dropout=0.3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = _env(tmp_path)
    subprocess.run([sys.executable, "-m", "stages.prepare", "data/prepared"], cwd=tmp_path,
                   env=env, check=True, capture_output=True)

    subprocess.run(_train(tmp_path, "whole", "ck_whole"), cwd=tmp_path, env=env, check=True,
                   capture_output=True)

    killed = subprocess.Popen(_train(tmp_path, "cut", "ck_cut"), cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "ck_cut" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # a few more steps past the checkpoint
    assert killed.poll() is None, "training ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "cut" / "model.pt").exists()
    first_run = json.loads((tmp_path / "ck_cut" / "resume.json").read_text())["run_id"]

    again = subprocess.run(_train(tmp_path, "cut", "ck_cut"), cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout + again.stderr

    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    for name, tensor in whole["state_dict"].items():
        assert torch.equal(tensor, cut["state_dict"][name]), name
    assert (json.loads((tmp_path / "whole" / "history.json").read_text())
            == json.loads((tmp_path / "cut" / "history.json").read_text()))
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["run_id"] == first_run
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 2  # whole + cut, resumed

    # a finished training is not resumed: the next run starts afresh
    third = subprocess.run(_train(tmp_path, "cut", "ck_cut"), cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert third.returncode == 0 and "resuming from" not in third.stdout + third.stderr
