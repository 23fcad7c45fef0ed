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
