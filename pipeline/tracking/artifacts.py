"""Reading back what a run logged: one JSON artifact of a run, for `lmpipe compare` (the paired
comparisons of an execution, evaluate's `report/pairs.json`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException


def read_json(tracking_uri: str, run_id: str, path: str):
    """The parsed JSON artifact `path` of run `run_id`, or None when the run has no such artifact
    or it is not JSON (a run logged before lmpipe wrote it, or a damaged store)."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                        tracking_uri=tracking_uri, dst_path=scratch)
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):
            return None
