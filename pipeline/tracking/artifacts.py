"""Reading back what a run logged: one artifact of a run into a scratch folder, for the promotion
gate (unit_scores.npz of two model runs) and `lmpipe compare` (an execution's
`report/pairs.json`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

T = TypeVar("T")


def read(tracking_uri: str, run_id: str, path: str, parse: Callable[[Path], T]) -> T | None:
    """`parse(local copy)` of artifact `path` of run `run_id`, or None when the run has no such
    artifact (a run logged before lmpipe wrote it; MlflowException or OSError from MLflow).
    Whatever `parse` raises is the caller's (an unreadable file is not a missing one)."""
    with tempfile.TemporaryDirectory() as scratch, _no_progress_bar():
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                        tracking_uri=tracking_uri, dst_path=scratch)
        except (MlflowException, OSError):
            return None
        return parse(Path(local))


class DamagedArtifact(ValueError):
    """An artifact that a run has but that cannot be read as what lmpipe wrote (not UTF-8, not
    JSON, a folder); the message names the run, the artifact and what is wrong."""


def read_json(tracking_uri: str, run_id: str, path: str):
    """The parsed JSON artifact `path` of run `run_id`, or None when the run has no such artifact
    (read). Raises DamagedArtifact when it is there but is not UTF-8 JSON text."""
    def parse(local: Path):
        try:
            return json.loads(local.read_text("utf-8"))
        except (OSError, ValueError) as error:   # UnicodeDecodeError, JSONDecodeError: ValueErrors
            why = error.strerror if isinstance(error, OSError) and error.strerror else \
                f"not UTF-8 JSON: {' '.join(str(error).split())}"
            raise DamagedArtifact(f"run {run_id}'s artifact {path} is damaged ({why})") from None
    return read(tracking_uri, run_id, path, parse)


@contextmanager
def _no_progress_bar():
    """MLflow's download progress bar off (small files; it would clutter a stage's log)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
