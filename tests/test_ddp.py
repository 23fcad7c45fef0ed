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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_ROOT": str(tmp_path),
           "LMPIPE_CHECKPOINTS": str(tmp_path / "ckpt")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "stages.train", "gru", "data/prepared", out],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads((tmp_path / out / "history.json").read_text())


def test_two_process_ddp_training(tmp_path):
    _params(tmp_path, batch_size=4, devices=2, strategy="ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "stages.prepare", "data/prepared"], cwd=tmp_path,
                   env=env, check=True, capture_output=True)
    ddp = _train(tmp_path, "ddp")

    # (a) one MLflow run for the model, whatever the world size; the checkpoint folder and its
    # lock removed by rank 0 once model.pt is written
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
    assert list((tmp_path / "ckpt").iterdir()) == []

    # (b) the distributed validation perplexity (sums over both ranks) is the single-process
    # evaluation of the saved model, same columns, same tokens
    model = RNNLM.from_checkpoint(torch.load(tmp_path / "ddp" / "model.pt", weights_only=True))
    valid = np.load(tmp_path / "data" / "prepared" / "valid.npy")
    alone = scoring.summarize(scoring.causal_scores(model, valid, num_columns=6).logprobs)["ppl"]
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


AWD_SCRIPT = '''
import json
import lightning as L
import numpy as np
import torch
from pipeline.config import TrainParams
from pipeline.evaluation import scoring
from pipeline.neural.lit import LitLM

from pipeline.neural.rnn import RNNLM, ModelConfig

rng = np.random.default_rng(0)
def stream(n):
    parts = [np.concatenate([[1], np.arange(s, s + rng.integers(2, 8)), [2]])
             for s in rng.integers(3, 10, n)]
    return np.concatenate(parts).astype(np.int32)
train_stream, valid_stream = stream(200), stream(40)
L.seed_everything(0)
params = TrainParams(max_epochs=2, batch_size=4, bptt=8, eval_batch_size=4, optimizer="nt-asgd",
                     lr=1.0, ar_alpha=2.0, tar_beta=1.0, variable_bptt=True)
model = RNNLM(ModelConfig(vocab_size=20, cell="lstm", impl="fused", num_layers=2, embed_dim=8,
                        hidden_dim=8, dropout=0.3, dropout_input=0.4, locked_dropout=True,
                        embedding_dropout=0.1, weight_drop=0.3))
lit = LitLM(model, params, train_stream, valid_stream, seed=0)
lit._start_averaging()   # NT-ASGD's average exists before DDP wraps the module
trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                    use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1,
                    enable_model_summary=False)
trainer.fit(lit)
gathered = trainer.strategy.all_gather(torch.cat([p.flatten() for p in lit.averaged.parameters()]))
if trainer.is_global_zero:
    alone = scoring.summarize(scoring.causal_scores(lit.evaluation_model(), valid_stream,
                                                    num_columns=4).logprobs)["ppl"]
    print(json.dumps({"val_ppl": lit.history[-1]["val_ppl"], "alone": alone,
                      "averaged": int(lit.averaged.n_averaged),
                      "ranks_agree": bool(torch.equal(gathered[0], gathered[1]))}))
'''


def test_awd_recipe_under_ddp(tmp_path):
    """The whole AWD-LSTM recipe on 2 gloo processes: weight drop through functional_call on a
    DDP-wrapped fused LSTM, variable BPTT (the same cut on both ranks), AR/TAR, and NT-ASGD's
    average, present before DDP wraps the module (as after a resume): the ranks keep the same
    average, and the distributed validation perplexity is that of the average alone."""
    script = tmp_path / "awd_ddp.py"
    script.write_text(AWD_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("{")][-1]
    report = json.loads(line)
    assert report["ranks_agree"] and report["averaged"] > 0
    assert report["alone"] == pytest.approx(report["val_ppl"], rel=1e-5)
