"""One artifact of a run, read back via a scratch folder: unit_scores.npz (the promotion gate),
report/pairs.json (`lmpipe compare`). MLflow's progress bar stays off (errors.quiet_libraries)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException


def read(tracking_uri: str, run_id: str, path: str, parse: Callable[[Path], object]):
    """`parse(local copy)` of artifact `path` of run `run_id`; None when the run has none."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                        tracking_uri=tracking_uri, dst_path=scratch)
        except (MlflowException, OSError):
            return None
        return parse(Path(local))
