"""MLflow at the edge. In: run names, params, metrics, artifact files. Out: MLflow runs — one per
model, the same metric keys for every model, the model kind as a param and tag (never in a
metric name), flattened params, tags for the git commit (and dirty flag), the DVC experiment
name when present and the corpus with its hash.

Only this module (and the stages that call it) imports mlflow.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 0.1}} -> {'train.lr': '0.1'}"""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def git_tags(root: Path) -> dict[str, str]:
    def git(*args):
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""
    tags = {"git_commit": git("rev-parse", "HEAD") or "none",
            "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no")))}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def run_tags(kind: str, corpus_source: str, corpus_hash: str, root: Path) -> dict:
    return {"model_kind": kind, "corpus": corpus_source,
            "corpus_hash": corpus_hash, **git_tags(root)}


def setup(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    return found.experiment_id if found else mlflow.create_experiment(experiment)


def training_logger(tracking_uri: str, experiment: str, run_name: str, tags: dict,
                    run_id: str | None = None) -> MLFlowLogger:
    """Lightning's MLflow logger with an explicit URI (its default file store is rejected by
    MLflow >= 3.13). Under DDP it creates the run on rank zero only."""
    setup(tracking_uri, experiment)
    return MLFlowLogger(experiment_name=experiment, tracking_uri=tracking_uri, run_name=run_name,
                        tags=tags, run_id=run_id)


def run_exists(tracking_uri: str, run_id: str) -> bool:
    try:
        MlflowClient(tracking_uri).get_run(run_id)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def log_evaluation(tracking_uri: str, experiment: str, run_name: str, run_id: str | None,
                   params: dict, metrics: dict[str, float], tags: dict,
                   artifacts: list[Path]) -> str:
    """Log final metrics into the model's run (the training run when it still exists in this
    store, else a new run); returns the run id."""
    experiment_id = setup(tracking_uri, experiment)
    if run_id:
        try:
            MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run_id = None
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name) as run:
        client = MlflowClient()
        existing = client.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in flatten(params).items() if k not in existing})
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id
