"""End to end: `dvc repro` in a fresh git repository with a tiny params override, then the
no-op rerun and the selective rerun after editing one model's params."""
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.report import KEYS

from .conftest import ROOT

pytestmark = pytest.mark.slow
KINDS = ("rnn", "gru", "birnn", "deep")


def _run(args, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def tiny_params(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    params["corpus"]["max_sentences"] = 400
    params["vocab"]["min_count"] = 1
    params["train"].update(max_epochs=1, batch_size=8, bptt=12, num_threads=1)
    for spec in params["models"].values():
        spec.update(embed_dim=16, hidden_dim=16)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("lmpipe") / "repo"
    repo.mkdir()
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    tiny_params(repo / "params.yaml")
    _run(["git", "init", "-q"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"], repo)
    _run(["dvc", "repro"], repo)
    return repo


def test_every_output_exists(repo):
    prepared = repo / "data" / "prepared"
    for name in ("train.npy", "valid.npy", "test.npy", "vocab.json", "stats.json"):
        assert (prepared / name).is_file(), name
    stats = json.loads((prepared / "stats.json").read_text())
    assert stats["train"]["sentences"] + stats["valid"]["sentences"] + stats["test"]["sentences"] == 400
    assert (repo / "models" / "ngram" / "model.arpa").read_text().startswith("\\data\\")
    assert (repo / "models" / "ngram" / "counts.parquet").is_file()
    for kind in KINDS:
        assert (repo / "models" / kind / "model.pt").is_file()
    for name in ("metrics.json", "mle.json", "comparison.md", "memory.md", "plots/val_ppl.csv",
                 "plots/test_ppl.csv", "plots/memory.csv", "plots/comparison.png"):
        assert (repo / "metrics" / name).is_file(), name


def test_metrics_are_finite_for_all_five_models(repo):
    metrics = json.loads((repo / "metrics" / "metrics.json").read_text())
    assert set(metrics) == {"ngram", *KINDS}
    for name, values in metrics.items():
        for key in KEYS:
            assert math.isfinite(values[key]), (name, key)
        assert 1 < values["test_ppl"] < 10 * json.loads((repo / "data/prepared/stats.json").read_text())["vocab_size"]
    assert metrics["birnn"]["objective"] == "cloze"
    assert {metrics[k]["objective"] for k in ("ngram", "rnn", "gru", "deep")} == {"causal"}


def test_mlflow_holds_five_runs_with_the_same_keys(repo):
    db = sqlite3.connect(repo / "mlflow.db")
    runs = db.execute("select r.run_uuid, r.status from runs r join experiments e "
                      "on r.experiment_id = e.experiment_id where e.name = 'lmpipe'").fetchall()
    assert len(runs) == 5
    assert {status for _, status in runs} == {"FINISHED"}
    kinds = set()
    for run_id, _ in runs:
        keys = {k for (k,) in db.execute("select distinct key from metrics where run_uuid = ?", (run_id,))}
        assert set(KEYS) <= keys, keys
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        kinds.add(tags["model_kind"])
        assert tags["git_commit"] != "none" and "corpus_hash" in tags
    assert kinds == {"ngram", *KINDS}


def test_memory_table_grows_with_the_order(repo):
    memory = (repo / "metrics" / "plots" / "memory.csv").read_text().splitlines()[1:]
    ngram = [float(line.split(",")[2]) for line in memory if line.startswith("ngram")]
    assert len(ngram) == 5 and ngram == sorted(ngram) and ngram[4] > ngram[0]
    assert {line.split(",")[0] for line in memory} >= set(KINDS)


def test_score_ranks_sentences_with_every_model(repo):
    out = _run([sys.executable, "-m", "pipeline.cli", "score", "and god said", "said and god"], repo)
    for name in ("ngram", *KINDS):
        assert f"{name}  [" in out
    assert "pseudo-log-likelihood (cloze)" in out


def test_second_repro_does_nothing(repo):
    out = _run(["dvc", "repro"], repo)
    assert "Running stage" not in out
    assert "up to date" in out


def test_editing_one_model_reruns_only_that_model(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["gru"]["hidden_dim"] = 12
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], repo)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@gru", "evaluate"}
