"""The model registry. In: a model's run (params, metrics, tags) and files. Out: its nested run
under the pipeline run, the model a pyfunc (serving.py) registered as `lmpipe-<kind>`: a new
version only for new weights or test set (version tags model_hash, test_set; aliases: promotion)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from mlflow.utils import logging_utils

from pipeline.config import flatten
from pipeline.errors import verbose
from pipeline.tracking.mlflow_runs import active_run, end_status, owner_tags, setup
from pipeline.tracking.promotion import TEST_SET
from pipeline.tracking.run_search import PARENT, ROLE
from pipeline.tracking.serving import SentenceScorer


def log_model_run(tracking_uri: str, experiment: str, root: Path, name: str, parent_id: str,
                  training_run_id: str | None, params: dict, metrics: dict[str, float],
                  tags: dict, model_files: dict[str, str] | None = None,
                  model_hash: str | None = None, test_set: dict | None = None, step: int = 0,
                  artifacts: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """(run id, version or None) of one model's nested run under `parent_id` (adopting a parentless
    `training_run_id`), `metrics` at training `step`; `model_files` (serving.py) registered as
    lmpipe-<name> unless a version holds `model_hash` on `test_set`."""
    experiment_id = setup(tracking_uri, experiment, root)
    client = MlflowClient(tracking_uri)
    run_id, tags, test_set = None, {**tags, **owner_tags(), ROLE: "model", PARENT: parent_id}, \
        test_set or {}
    training = active_run(tracking_uri, training_run_id)   # None: another store's, or deleted
    if training is not None and PARENT not in training.data.tags:
        run_id = training_run_id   # trained in this execution: adopt it (it holds val_ppl per epoch)
        metrics = {k: v for k, v in metrics.items() if k != "val_ppl"}
    elif training is not None:
        tags["training_run_id"] = training_run_id
    run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=name)
    try:
        existing = client.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in flatten(params).items() if k not in existing})
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics, step=step)
        version = _version_with_hash(client, f"lmpipe-{name}", model_hash, test_set.get("id")) \
            if model_files else None
        if version:
            mlflow.set_tag("registered_version", version)
        elif model_files:
            version = _register(client, name, model_files, model_hash, test_set)
        for path in artifacts:
            mlflow.log_artifact(path)
    except BaseException as error:
        mlflow.end_run(end_status(error))
        raise
    mlflow.end_run()
    return run.info.run_id, version


def _register(client: MlflowClient, name: str, model_files: dict[str, str], model_hash: str | None,
              test_set: dict) -> str:
    """`model_files` logged as a pyfunc in the open run, registered as lmpipe-<name> with version
    tags model_hash, test_set and test_set.<field>: the version."""
    enabled = logging_utils.MLFLOW_LOGGING_STREAM.enabled
    if not verbose():   # MLflow's "Registered model ... already exists": the caller says it
        logging_utils.disable_logging()
    try:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=SentenceScorer(), artifacts=model_files,
            code_paths=[str(Path(__file__).resolve().parents[1])],   # the pipeline package
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
                              f"mlflow=={mlflow.__version__}"],
            registered_model_name=f"lmpipe-{name}")
    finally:
        logging_utils.MLFLOW_LOGGING_STREAM.enabled = enabled
    version = str(info.registered_model_version)
    version_tags = {"model_hash": model_hash, TEST_SET: test_set.get("id"),
                    **{f"{TEST_SET}.{k}": v for k, v in test_set.items() if k != "id"}}
    for key, value in version_tags.items():
        if value:
            client.set_model_version_tag(f"lmpipe-{name}", version, key, value)
    return version


def _version_with_hash(client: MlflowClient, model_name: str, model_hash: str | None,
                       test_set_id: str | None) -> str | None:
    """The newest version of `model_name` with these weights on this test set, or None."""
    same = [int(v.version) for v in client.search_model_versions(f"name = '{model_name}'")
            if v.tags.get("model_hash") == model_hash and v.tags.get(TEST_SET) == test_set_id]
    return str(max(same)) if same else None
