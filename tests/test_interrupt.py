"""Interruptions under real DVC and MLflow: a stage killed with SIGKILL leaves nothing DVC accepts
as complete, and rerunning `dvc repro` gives back exactly the outputs of an uninterrupted run; a
killed training resumes from its checkpoint folder (outside the repository) and continues its MLflow run,
which meanwhile is marked KILLED, not left RUNNING; SIGTERM ends the run as KILLED itself.
Equality is exact (bytes of model.pt and history.json) on CPU."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.tracking import mlflow_runs

from .conftest import checkpoint_folder, checkpoint_folders, dvc_repo, run

pytestmark = pytest.mark.slow


def _env():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def small(params: dict) -> None:
    params["corpus"]["max_sentences"] = 0      # the whole KJV: each stage writes for a while
    params["ngram"]["memory_orders"] = 3
    params["train"].update(max_epochs=2, batch_size=8, bptt=12, num_threads=1,
                           limit_train_batches=80, checkpoint_every_n_steps=10, lr_schedule="plateau")
    params["models"]["gru"].update(embed_dim=16, hidden_dim=16, dropout=0.3)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The small pipeline, trained; its checkpoint folders in a root of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMPIPE_CHECKPOINTS", str(tmp_path_factory.mktemp("interrupt-checkpoints")))
        yield _trained(tmp_path_factory)


def _trained(tmp_path_factory):
    repo = dvc_repo(tmp_path_factory.mktemp("interrupt") / "repo", small)
    run(["dvc", "repro", "ngram", "train@gru"], repo)
    return repo


def _start(repo, *args):
    """`dvc ...` in its own process group (so the kill reaches DVC and the stage, as a cancelled
    CI job or a closed terminal does), stdout and stderr merged into one pipe."""
    return subprocess.Popen(["dvc", *args], cwd=repo, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_at_line(process, marker: str, sig=signal.SIGKILL) -> str:
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            os.killpg(process.pid, sig)
            break
    process.wait(timeout=60)
    assert any(marker in line for line in seen), "".join(seen)[-3000:]
    return "".join(seen)


def _step() -> int:
    """The global step of gru's last.ckpt; -1 while there is none (or it is being replaced)."""
    for folder in checkpoint_folders("gru"):
        try:
            return torch.load(folder / "last.ckpt", weights_only=True)["global_step"]
        except (OSError, RuntimeError, EOFError):
            pass
    return -1


def _kill_after(process, sig=signal.SIGKILL, newer_than_step: int = -1) -> None:
    """Kill the process group once gru's last.ckpt holds a step past `newer_than_step`, a few steps
    later (mid-epoch)."""
    deadline = time.monotonic() + 180
    while _step() <= newer_than_step:
        assert process.poll() is None and time.monotonic() < deadline, \
            "ended before the kill:\n" + process.stdout.read()[-3000:]
        time.sleep(0.05)
    time.sleep(0.1)
    assert process.poll() is None, "training ended before it could be killed"
    os.killpg(process.pid, sig)
    process.wait(timeout=60)


def _pending(repo) -> dict:
    """`dvc status --json`: the stages DVC would rerun, and why."""
    result = subprocess.run(["dvc", "status", "--json"], cwd=repo, env=_env(), capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def _client(repo):
    return MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def test_sigkill_during_prepare_or_ngram_is_never_accepted(repo):
    lock = (repo / "dvc.lock").read_text()
    assert _pending(repo) == {} or set(_pending(repo)) <= {"train@rnn", "train@birnn", "train@deep",
                                                           "evaluate", "promote"}

    prepare = _start(repo, "repro", "-f", "-s", "prepare")
    # read and split, the streams being written under scratch names (renamed at the end, train
    # last, microseconds apart: too close to kill in between from here)
    _kill_at_line(prepare, "prepare: split by")
    prepared = repo / "data" / "prepared"
    assert not (prepared / "train.npy").exists()
    for name in ("valid", "test"):                # whatever is there is whole
        if (prepared / f"{name}.npy").exists():
            assert np.load(prepared / f"{name}.npy").ndim == 1
    assert "prepare" in _pending(repo)
    out = run(["dvc", "repro", "ngram", "train@gru"], repo)
    # rerun, or restored whole from DVC's run-cache; what follows it is unchanged
    assert "Running stage 'prepare'" in out or "Stage 'prepare' is cached" in out
    assert "Running stage 'ngram'" not in out and "Running stage 'train@gru'" not in out
    assert (repo / "dvc.lock").read_text() == lock
    assert not list((repo / "data" / "prepared").glob(".*partial*"))

    ngram = _start(repo, "repro", "-f", "-s", "ngram")
    _kill_at_line(ngram, "ngram: wrote model.arpa")  # inside the staged folder, before the parquet
    assert not (repo / "models" / "ngram").exists() and (repo / ".models-ngram.partial").is_dir()
    assert "ngram" in _pending(repo)
    run(["dvc", "repro", "ngram"], repo)
    assert (repo / "dvc.lock").read_text() == lock
    assert not [p.name for p in (repo / "models").iterdir() if "partial" in p.name]


def test_killed_training_resumes_under_dvc_with_the_same_result(repo):
    """Killed twice (SIGTERM, then SIGKILL after resuming), the training ends with the bytes of
    the uninterrupted run: resuming is exact, and so is training itself (determinism)."""
    model = repo / "models" / "gru"
    first = {name: (model / name).read_bytes() for name in ("model.pt", "history.json")}
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    assert checkpoint_folders("gru") == []   # the finished training's folder is gone

    # SIGTERM (kill, SLURM, a cancelled CI job): the stage ends its MLflow run as KILLED
    stopped = _start(repo, "repro", "-f", "-s", "train@gru")
    _kill_after(stopped, sig=signal.SIGTERM)
    ckpts = checkpoint_folder("gru")
    run_id = json.loads((ckpts / "resume.json").read_text())["run_id"]
    deadline = time.monotonic() + 60   # the stage process winds down after DVC
    while _client(repo).get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _client(repo).get_run(run_id).info.status == "KILLED"
    assert not (model / "model.pt").exists()
    assert "train@gru" in _pending(repo)

    # resumed, then SIGKILLed mid-epoch: the run stays RUNNING until the next stage reaps it
    step = torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"]
    # -f: this configuration finished once (the fixture), so DVC would check models/gru out of its
    # cache instead of running the stage; an interrupted new configuration has nothing to restore
    resumed = _start(repo, "repro", "-f", "-s", "train@gru")
    _kill_after(resumed, newer_than_step=step)
    assert _client(repo).get_run(run_id).info.status == "RUNNING"   # nobody could say otherwise
    # what the next stage does; the killed stage process may take a moment to be torn down
    # after DVC (the group's leader) is gone, and a process still exiting is not judged dead
    deadline = time.monotonic() + 30
    while True:
        reaped = mlflow_runs.reap_orphans(uri, "lmpipe")
        if run_id in reaped or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert run_id in reaped
    assert _client(repo).get_run(run_id).info.status == "KILLED"

    out = run(["dvc", "repro", "-f", "-s", "train@gru"], repo)
    assert "resuming from" in out
    assert {name: (model / name).read_bytes() for name in first} == first   # tolerance: none
    assert json.loads((model / "run.json").read_text())["run_id"] == run_id
    assert _client(repo).get_run(run_id).info.status == "FINISHED"
    assert "train@gru" not in _pending(repo)
    assert checkpoint_folders("gru") == []   # removed once models/gru was written
