"""Resuming an interrupted training. In: a checkpoint directory (last.ckpt, best.ckpt and
resume.json: fingerprint, run_id, finished) and the fingerprint of the training. Out: the
checkpoint and MLflow run to continue, or a clean start (after a params or data change, or
once the training finished)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from pipeline import files

LAST = "last.ckpt"
BEST = "best.ckpt"
STATE = "resume.json"
CHECKPOINT_KEYS = ("state_dict", "optimizer_states", "loops", "lmpipe")   # what a resume reads
# (Lightning's keys, and LitLM's own: on_save_checkpoint)


def fingerprint(*parts) -> str:
    """A stable hash of JSON-serialisable parts (params, model config, data hash)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _damaged_state(state) -> str | None:
    """What makes a parsed resume.json unusable (its values are not what `record` writes), or None."""
    if not isinstance(state, dict):
        return "unreadable"
    for key, kinds, what in (("fingerprint", (str,), "a string"),
                             ("run_id", (str, type(None)), "an MLflow run id"),
                             ("finished", (bool,), "true or false")):
        if key in state and not isinstance(state[key], kinds):
            return f"damaged ({key} is {json.dumps(state[key])}, not {what})"
    return None


def _unfit(path: Path, state_dict: dict, model) -> str | None:
    """Why the weights of a LitLM checkpoint cannot be resumed into `model` (the RNNLM about to
    be trained; None: not checked): a tensor holding NaN or infinity, a missing or extra tensor,
    or one of another shape (model.* and NT-ASGD's averaged.module.*); None when they fit."""
    nonfinite = next((key for key, value in state_dict.items()
                      if isinstance(value, torch.Tensor) and value.is_floating_point()
                      and not bool(torch.isfinite(value).all())), None)
    if nonfinite:   # a resumed NaN would be blamed on train.lr, and every rerun resume it
        return f"{path}: damaged, holds NaN or infinite weights ({nonfinite})"
    if model is None:
        return None
    wanted = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    for prefix in ("model.", "averaged.module."):
        found = {key[len(prefix):]: tuple(value.shape) for key, value in state_dict.items()
                 if key.startswith(prefix) and hasattr(value, "shape")}
        if prefix == "averaged.module." and not found:
            continue   # NT-ASGD's average had not started
        other = f"{path}: the weights of another model"
        for key in wanted.keys() - found.keys():
            return f"{other} (has no {prefix}{key})"
        for key in found.keys() - wanted.keys():
            return f"{other} (holds {prefix}{key}, which the model of params.yaml lacks)"
        for key, shape in found.items():
            if shape != wanted[key]:
                return f"{other} (holds {prefix}{key} of shape {list(shape)}, params.yaml's needs {list(wanted[key])})"
    return None


def plan(directory: Path, print_fn=print, model=None, fp: str | None = None
         ) -> tuple[dict, Path | None]:
    """(state, checkpoint to resume from or None). A damaged resume.json or checkpoint, or (given
    `model`) one whose weights do not fit it, is reported with `print_fn` and the training starts
    afresh; given `fp`, a training of another fingerprint is not resumed. Reads only."""
    state_file = directory / STATE
    if not state_file.exists():
        return {}, None
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        state = None
    damaged = _damaged_state(state)
    if damaged:
        print_fn(f"lmpipe: {state_file} is {damaged}; starting afresh")
        return {}, None
    last = directory / LAST
    if not last.exists() or state.get("finished") or fp not in (None, state.get("fingerprint")):
        return state, None
    for path in (path for path in (last, directory / BEST) if path.exists()):
        try:
            checkpoint = files.load_checkpoint(path, directory, CHECKPOINT_KEYS)
            problem = _unfit(path, checkpoint["state_dict"], model)
        except files.StateError as error:
            problem = error.problem
        if problem:
            print_fn(f"lmpipe: cannot resume, {problem}; starting afresh")
            return {}, None
    return state, last


def existing(directory: Path, fp: str, print_fn=print, model=None) -> tuple[Path | None, str | None]:
    """(the checkpoint of an unfinished training with this fingerprint, its MLflow run id), or
    (None, None). Read-only: rank 0 calls `clear` once the MLflow store has taken the run."""
    state, last = plan(directory, print_fn, model, fp)
    if last is not None and state.get("fingerprint") == fp and not state.get("finished"):
        return last, state.get("run_id")
    return None, None


def clear(directory: Path) -> None:
    """An empty `directory` for a training that starts afresh (old checkpoints removed)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def record(directory: Path, fp: str, run_id: str | None, finished: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fp, "run_id": run_id, "finished": finished}, indent=2))
    tmp.replace(directory / STATE)
