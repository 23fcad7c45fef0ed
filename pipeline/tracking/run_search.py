"""Finding experiments, pipeline executions and their model runs (MlflowClient.search_runs). Out:
runs with `.info` (run_id, run_name, start_time (ms), status, experiment_id) and `.data` (tags,
metrics: the latest value of each). Errors: ValueError (none found), StateError (deleted)."""

from __future__ import annotations

import json
from urllib.parse import quote

from pipeline.errors import StateError

ROLE = "lmpipe.role"            # pipeline | model
PARENT = "mlflow.parentRunId"   # what the MLflow UI nests runs by
VIEW = "lmpipe"   # the runs table's preset columns: #/experiments/<id>/runs?viewStateShareKey=lmpipe
MIXTURE = "interpolation."   # a parent run's metrics of each RNN interpolated with the n-gram model:
# MIXTURE<rnn>.<interpolation.json's key> (evaluation_runs.mixture_metrics)


def mixtures(run) -> dict[str, dict[str, float]]:
    """{rnn: {key: value}} of the interpolated models logged on a pipeline run (none before lmpipe did)."""
    found: dict[str, dict[str, float]] = {}
    for key, value in run.data.metrics.items():
        if key.startswith(MIXTURE):
            rnn, metric = key[len(MIXTURE):].rsplit(".", 1)
            found.setdefault(rnn, {})[metric] = value
    return found


def pipeline_runs(tracking_uri: str, experiment: str, limit: int = 50, finished: bool = True) -> list:
    """The parent runs of pipeline executions, newest first (only FINISHED ones if `finished`)."""
    status = " and attributes.status = 'FINISHED'" if finished else ""
    return _runs(tracking_uri, experiment, f"tags.`{ROLE}` = 'pipeline'{status}", limit, "DESC")


def model_runs(tracking_uri: str, experiment: str, parent_id: str) -> list:
    """The model runs nested under the parent run `parent_id`, oldest first."""
    return _runs(tracking_uri, experiment, f"tags.`{PARENT}` = '{parent_id}'", 1000, "ASC")


def _runs(tracking_uri: str, experiment: str, query: str, limit: int, order: str) -> list:
    """`experiment`'s runs matching `query` by start time; ValueError: no such experiment."""
    found = active_experiment(tracking_uri, experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}; run `make repro` first")
    return _client(tracking_uri).search_runs([found.experiment_id], query, max_results=limit,
                                             order_by=[f"attributes.start_time {order}"])


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient  # here: MLflow's 2 s import, not at lmpipe's start
    return MlflowClient(tracking_uri)


def active_experiment(tracking_uri: str, experiment: str):
    """The experiment named `experiment` or None; StateError if deleted (its name stays taken)."""
    found = _client(tracking_uri).get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage != "active":
        restore = (f"MLFLOW_TRACKING_URI={tracking_uri} mlflow experiments restore --experiment-id "
                   f"{found.experiment_id}")
        raise StateError(f"MLflow experiment {experiment!r} (id {found.experiment_id}) at "
                         f"{tracking_uri} was deleted; restore it (`{restore}`), or set "
                         "mlflow.experiment to a new one")
    return found


def pipeline_run(tracking_uri: str, experiment: str, run_id: str | None = None):
    """The parent run `run_id` (a prefix among the newest 1,000), else the newest finished one."""
    matches = pipeline_runs(tracking_uri, experiment, limit=1) if run_id is None else [
        r for r in pipeline_runs(tracking_uri, experiment, 1000, False) if r.info.run_id.startswith(run_id)]
    if len(matches) != 1:
        problem = (f"{len(matches)} pipeline runs start with {run_id!r}" if matches else
                   f"no pipeline run {run_id!r}" if run_id else "no finished pipeline run")
        raise ValueError(f"{problem} in {experiment!r}; `make repro`, or `lmpipe compare --list`")
    return matches[0]


def ui_links(base: str, experiment_id: str, parent_id: str, model_run_ids: list[str]) -> dict[str, str]:
    """The MLflow 3.17 web app's pages of one execution (runs, charts, its models, its report)."""
    base = base.rstrip("/")
    runs = f"{base}/#/experiments/{experiment_id}/runs"
    compare = quote(json.dumps(model_run_ids, separators=(",", ":")))
    return {"runs table": f"{runs}?workflowType=machine_learning&viewStateShareKey={VIEW}",
            "chart view": f"{runs}?workflowType=machine_learning&compareRunsMode=CHART",
            "compare models": f"{base}/#/compare-runs?runs={compare}&experiments="
                              f"{quote(json.dumps([experiment_id]))}",
            "report": f"{runs}/{parent_id}/artifacts/report/comparison.md"}
