"""MLflow at the edge, on a real sqlite store."""
import mlflow

from pipeline import tracking


def test_flatten():
    assert tracking.flatten({"train": {"lr": 0.1, "opt": {"name": "sgd"}}, "seed": 1}) == \
        {"train.lr": "0.1", "train.opt.name": "sgd", "seed": "1"}


def test_git_tags_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    tags = tracking.git_tags(tmp_path)
    assert tags["git_commit"] == "none" and tags["dvc_exp_name"] == "exp-1"


def test_evaluation_reuses_the_training_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = tracking.log_evaluation(uri, "exp", "gru", None, {"model": {"cell": "gru"}},
                                    {"test_ppl": 10.0}, {"model_kind": "gru"}, [])
    again = tracking.log_evaluation(uri, "exp", "gru", first, {"model": {"cell": "gru"}},
                                    {"test_ppl": 9.0}, {"model_kind": "gru"}, [])
    stale = tracking.log_evaluation(uri, "exp", "gru", "0123456789abcdef0123456789abcdef",
                                    {"model": {"cell": "gru"}}, {"test_ppl": 8.0}, {}, [])
    assert again == first and stale != first
    runs = mlflow.search_runs(experiment_names=["exp"])
    assert len(runs) == 2
    row = runs[runs.run_id == first].iloc[0]
    assert row["metrics.test_ppl"] == 9.0 and row["params.model.cell"] == "gru"
    assert row["tags.model_kind"] == "gru" and row["status"] == "FINISHED"


def test_mlflow_server_command_serves_the_repository_store_on_localhost(tmp_path):
    """`lmpipe mlflow-server` starts `mlflow server` over the repo's sqlite store, bound to
    127.0.0.1; a run logged through it lands in mlflow.db."""
    import os
    import shutil
    import sqlite3
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from .conftest import ROOT, free_port, wait_for_http
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "mlflow-server", "--port", str(port),
                               "--workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        first = server.stdout.readline()
        assert "--host 127.0.0.1" in first and f"sqlite:///{tmp_path}/mlflow.db" in first
        wait_for_http(f"http://127.0.0.1:{port}/", server)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.create_experiment("served")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "test_ppl", 42.0)
        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            assert db.execute("select value from metrics where key = 'test_ppl'").fetchone()[0] == 42.0
    finally:
        server.terminate()
        server.wait(timeout=30)
