"""Finding experiments, pipeline executions and their model runs. In: a tracking URI and an
experiment name. Out: runs with `.info` (run_id, run_name, start_time (ms), status,
experiment_id) and `.data` (tags, metrics: the latest value of each). An embedded store
(`sqlite:///...`) is read with read-only SQL over MLflow's tables (no MLflow import); a server,
or tables of another MLflow schema, through MlflowClient.search_runs.
"""

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
    """The parent runs of pipeline executions, newest first (only FINISHED ones if `finished`).
    Raises ValueError when the experiment does not exist."""
    return _runs(tracking_uri, experiment, ROLE, "pipeline", finished, limit, newest_first=True)


def model_runs(tracking_uri: str, experiment: str, parent_id: str) -> list:
    """The model runs nested under the parent run `parent_id`, oldest first."""
    return _runs(tracking_uri, experiment, PARENT, parent_id, False, 1000, newest_first=False)


def _runs(tracking_uri: str, experiment: str, tag: str, value: str, finished: bool, limit: int,
          newest_first: bool) -> list:
    """The runs of `experiment` tagged `tag`=`value`: SQL over an embedded store, else (or
    when its tables do not answer) MlflowClient's search (client_runs)."""
    db = _database(tracking_uri)
    if db is not None:
        try:
            return _read_runs(db, experiment, tag, value, finished, limit, newest_first)
        except sqlite3.Error as error:   # another MLflow schema: the client's search below
            if getattr(error, "sqlite_errorname", None) in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise damaged_store(db) from None
    return client_runs(tracking_uri, experiment, tag, value, finished, limit, newest_first)


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient  # here: MLflow's 2 s import, not for SQL answers
    return MlflowClient(tracking_uri)


def active_experiment(tracking_uri: str, experiment: str):
    """The experiment named `experiment` (mlflow.entities.Experiment), None if there is none.
    Raises StateError when it was deleted (deleted_experiment)."""
    found = _client(tracking_uri).get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        raise deleted_experiment(tracking_uri, experiment, found.experiment_id)
    return found


def client_runs(tracking_uri: str, experiment: str, tag: str, value: str, finished: bool,
                limit: int, newest_first: bool) -> list:
    """_runs through MlflowClient.search_runs (mlflow.entities.Run). Raises ValueError when the
    experiment does not exist, StateError when it was deleted."""
    found = active_experiment(tracking_uri, experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}; run `make repro` first")
    status = " and attributes.status = 'FINISHED'" if finished else ""
    return _client(tracking_uri).search_runs(
        [found.experiment_id], f"tags.`{tag}` = '{value}'{status}", max_results=limit,
        order_by=[f"attributes.start_time {'DESC' if newest_first else 'ASC'}"])


def pipeline_run(tracking_uri: str, experiment: str, run_id: str | None = None):
    """The parent run `run_id` (a full id, or a prefix of the id of one of the newest 1,000
    executions), or the newest finished one. Raises ValueError naming what is missing."""
    if run_id is None:
        runs = pipeline_runs(tracking_uri, experiment, limit=1)
        if not runs:
            raise ValueError(f"no finished pipeline run in {experiment!r} at {tracking_uri}; "
                             "`make repro` first")
        return runs[0]
    matches = [r for r in pipeline_runs(tracking_uri, experiment, 1000, finished=False)
               if r.info.run_id.startswith(run_id)]
    if len(matches) != 1:
        problem = "no pipeline run" if not matches else f"{len(matches)} pipeline runs start with"
        raise ValueError(f"{problem} {run_id!r} in {experiment!r}; `lmpipe compare --list` lists them")
    return matches[0]


def ui_links(base: str, experiment_id: str, parent_id: str, model_run_ids: list[str]) -> dict[str, str]:
    """The MLflow web app's pages for one execution (hash routes of MLflow 3.17): the runs
    table with lmpipe's columns, the chart view, the side-by-side comparison of its model runs
    and its report artifact."""
    base = base.rstrip("/")
    runs = f"{base}/#/experiments/{experiment_id}/runs"
    compare = quote(json.dumps(model_run_ids, separators=(",", ":")))
    return {"runs table": f"{runs}?workflowType=machine_learning&viewStateShareKey={VIEW}",
            "chart view": f"{runs}?workflowType=machine_learning&compareRunsMode=CHART",
            "compare models": f"{base}/#/compare-runs?runs={compare}&experiments="
                              f"{quote(json.dumps([experiment_id]))}",
            "report": f"{runs}/{parent_id}/artifacts/report/comparison.md"}


def _database(tracking_uri: str) -> Path | None:
    """The file of an embedded store (store.database), None for other stores. Raises ValueError
    when it does not exist: MlflowClient would create an empty store."""
    if not tracking_uri.startswith(store.PREFIX):
        return None
    path = store.database(tracking_uri)
    if path is None or not path.is_file():
        raise ValueError(f"no MLflow store at {path or tracking_uri}; `make repro`, or --tracking-uri")
    return path


def deleted_experiment(tracking_uri: str, experiment: str, experiment_id: str) -> StateError:
    """The error for an experiment deleted in the MLflow UI or by `mlflow experiments delete`:
    a soft delete keeps the name taken, so it can be neither used nor created again."""
    restore = f"MLFLOW_TRACKING_URI={tracking_uri} mlflow experiments restore --experiment-id {experiment_id}"
    return StateError(
        f"MLflow experiment {experiment!r} (id {experiment_id}) at {tracking_uri} was deleted (in "
        f"the MLflow UI or by `mlflow experiments delete`); restore it with `{restore}` and rerun, "
        "or log to a new experiment (`dvc exp run -S mlflow.experiment=NEW`, or mlflow.experiment "
        "in params.yaml)")


def damaged_store(path: str | Path) -> StateError:
    """The error for an sqlite store that is not a database (overwritten, a partial copy)."""
    return StateError(
        f"{path}: the MLflow store is damaged, not an sqlite database (a partial copy, or "
        "overwritten); restore it from a backup, or move it aside and rerun (a new, empty store "
        "is created; `dvc repro -f evaluate` logs the models again)")


def _read_runs(db: Path, experiment: str, tag: str, value: str, finished: bool, limit: int,
               newest_first: bool) -> list:
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
        found = con.execute("select experiment_id, lifecycle_stage from experiments where "
                            "name = ?", (experiment,)).fetchone()
        if found is None:
            raise ValueError(f"no MLflow experiment {experiment!r} at sqlite:///{db}; run "
                             "`make repro` first")
        if found[1] != "active":
            raise deleted_experiment(f"sqlite:///{db}", experiment, str(found[0]))
        status = " and r.status = 'FINISHED'" if finished else ""
        rows = con.execute(
            "select r.run_uuid, r.name, r.start_time, r.status, r.experiment_id from runs r "
            "join tags t on t.run_uuid = r.run_uuid and t.key = ? and t.value = ? "
            f"where r.experiment_id = ? and r.lifecycle_stage = 'active'{status} "
            f"order by r.start_time {'desc' if newest_first else 'asc'} limit ?",
            (tag, value, found[0], limit)).fetchall()
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
