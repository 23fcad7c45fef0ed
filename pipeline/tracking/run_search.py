"""Finding experiments, pipeline executions and their model runs. In: a tracking URI and an
experiment name. Out: runs with `.info` (run_id, run_name, start_time (ms), status,
experiment_id) and `.data` (tags, metrics: the latest value of each). An embedded store is read
with read-only SQL over MLflow's tables (no MLflow import); a server, or another MLflow schema,
through MlflowClient.search_runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

from pipeline.errors import StateError
from pipeline.tracking import store

ROLE = "lmpipe.role"            # pipeline | model
PARENT = "mlflow.parentRunId"   # what the MLflow UI nests runs by
VIEW = "lmpipe"   # the runs table's preset columns: #/experiments/<id>/runs?viewStateShareKey=lmpipe


def pipeline_runs(tracking_uri: str, experiment: str, limit: int = 50, finished: bool = True) -> list:
    """The parent runs of pipeline executions, newest first (only FINISHED ones if `finished`)."""
    return _runs(tracking_uri, experiment, ROLE, "pipeline", finished, limit, newest_first=True)


def model_runs(tracking_uri: str, experiment: str, parent_id: str) -> list:
    """The model runs nested under the parent run `parent_id`, oldest first."""
    return _runs(tracking_uri, experiment, PARENT, parent_id, False, 1000, newest_first=False)


def _runs(tracking_uri: str, experiment: str, tag: str, value: str, finished: bool, limit: int,
          newest_first: bool) -> list:
    """The runs of `experiment` tagged `tag`=`value`: SQL over an embedded store, else (or for
    another MLflow schema) client_runs. ValueError: no such experiment; StateError: deleted."""
    db = _database(tracking_uri)
    if db is not None:
        try:
            return _read_runs(db, experiment, tag, value, finished, limit, newest_first)
        except sqlite3.OperationalError:   # no such table or column: the client's search below
            pass
    return client_runs(tracking_uri, experiment, tag, value, finished, limit, newest_first)


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient  # here: MLflow's 2 s import, not for SQL answers
    return MlflowClient(tracking_uri)


def active_experiment(tracking_uri: str, experiment: str):
    """The experiment named `experiment`, None if there is none; StateError if it was deleted."""
    found = _client(tracking_uri).get_experiment_by_name(experiment)
    if found is not None:
        _experiment_id(tracking_uri, experiment, (found.experiment_id, found.lifecycle_stage))
    return found


def client_runs(tracking_uri: str, experiment: str, tag: str, value: str, finished: bool,
                limit: int, newest_first: bool) -> list:
    """_runs through MlflowClient.search_runs (mlflow.entities.Run)."""
    found = _client(tracking_uri).get_experiment_by_name(experiment)
    experiment_id = _experiment_id(tracking_uri, experiment,
                                   found and (found.experiment_id, found.lifecycle_stage))
    status = " and attributes.status = 'FINISHED'" if finished else ""
    return _client(tracking_uri).search_runs(
        [experiment_id], f"tags.`{tag}` = '{value}'{status}", max_results=limit,
        order_by=[f"attributes.start_time {'DESC' if newest_first else 'ASC'}"])


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


def _database(tracking_uri: str) -> Path | None:
    """The file of an embedded store, None for others; ValueError when it does not exist."""
    if not tracking_uri.startswith(store.PREFIX):
        return None
    path = store.database(tracking_uri)
    if path is None or not path.is_file():
        raise ValueError(f"no MLflow store at {path or tracking_uri}; `make repro`, or --tracking-uri")
    return path


def _experiment_id(tracking_uri: str, experiment: str, found: tuple | None) -> str:
    """The id of `experiment` from `found` ((id, lifecycle stage) or None). Raises ValueError when
    there is none, StateError when it was deleted (a soft delete: its name stays taken)."""
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}; run `make repro` first")
    restore = f"MLFLOW_TRACKING_URI={tracking_uri} mlflow experiments restore --experiment-id {found[0]}"
    if found[1] != "active":
        raise StateError(f"MLflow experiment {experiment!r} (id {found[0]}) at {tracking_uri} was "
                         f"deleted; restore it (`{restore}`), or set mlflow.experiment to a new one")
    return str(found[0])


def _read_runs(db: Path, experiment: str, tag: str, value: str, finished: bool, limit: int,
               newest_first: bool) -> list:
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
        experiment_id = _experiment_id(f"sqlite:///{db}", experiment, con.execute(
            "select experiment_id, lifecycle_stage from experiments where name = ?",
            (experiment,)).fetchone())
        status = " and r.status = 'FINISHED'" if finished else ""
        rows = con.execute(
            "select r.run_uuid, r.name, r.start_time, r.status, r.experiment_id from runs r "
            "join tags t on t.run_uuid = r.run_uuid and t.key = ? and t.value = ? "
            f"where r.experiment_id = ? and r.lifecycle_stage = 'active'{status} "
            f"order by r.start_time {'desc' if newest_first else 'asc'} limit ?",
            (tag, value, experiment_id, limit)).fetchall()
        ids = [row[0] for row in rows]
        marks = ",".join("?" * len(ids))
        tags, metrics = {i: {} for i in ids}, {i: {} for i in ids}
        for run, key, val in con.execute(f"select run_uuid, key, value from tags where run_uuid "
                                         f"in ({marks})", ids):
            tags[run][key] = val
        for run, key, val, nan in con.execute(f"select run_uuid, key, value, is_nan from "
                                              f"latest_metrics where run_uuid in ({marks})", ids):
            metrics[run][key] = float("nan") if nan else val   # MLflow stores NaN as 0 + is_nan
    return [SimpleNamespace(
        info=SimpleNamespace(run_id=i, run_name=name, start_time=start, status=state,
                             experiment_id=str(experiment_id)),
        data=SimpleNamespace(tags=tags[i], metrics=metrics[i]))
        for (i, name, start, state, experiment_id) in rows]
