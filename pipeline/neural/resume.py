"""Resuming an interrupted training. In: the checkpoint folder of a training, ROOT/KIND-FP
(last.ckpt, best.ckpt and resume.json: run_id), ROOT = $LMPIPE_CHECKPOINTS or the
user cache; FP hashes params, data and this package's code. Out: the checkpoint and MLflow run
to continue, or a clean start; a lock per folder (`hold`) while a training uses it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import platformdirs
import torch
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline import files
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.validation import first_complaint

LAST = "last.ckpt"
BEST = "best.ckpt"
STATE = "resume.json"


class State(BaseModel):
    """resume.json as `record` writes it."""
    model_config = ConfigDict(strict=True)
    run_id: str | None = None


def fingerprint(*parts) -> str:
    """16 hex digits of the hash of `parts` (JSON-serialisable) and of pipeline/neural/*.py's bytes."""
    code = [hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(__file__).parent.glob("*.py"))]
    text = json.dumps([parts, code], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder(kind: str, fp: str) -> Path:
    """The checkpoint folder of a training of models.KIND with fingerprint `fp`."""
    root = os.environ.get("LMPIPE_CHECKPOINTS") or platformdirs.user_cache_path("lmpipe") / "checkpoints"
    return Path(root) / f"{kind}-{fp}"


@contextmanager
def hold(directory: Path, print_fn):
    """Hold `directory`'s lock (DIRECTORY.lock) while a training uses it; a second training of the
    same fingerprint waits. The lock file goes with the folder."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{directory}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print_fn(f"lmpipe: another training holds {lock.lock_file}; waiting for it to end")
        lock.acquire()
    try:
        yield
    finally:
        if not directory.exists():
            Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()


def prune(directory: Path, keep: int = 3) -> None:
    """Remove the checkpoint folders of `directory`'s KIND beyond the `keep` newest (by change
    time; those without a last.ckpt, failed starts, count as oldest), except those another
    training holds. Called once a training has written models/KIND: a failure removes nothing."""
    kind, fp = directory.name.rsplit("-", 1)
    others = sorted(directory.parent.glob(f"{kind}-{'?' * len(fp)}"),   # not KIND-FP.lock
                    key=lambda path: ((path / LAST).exists(), path.stat().st_mtime), reverse=True)
    for old in (path for path in others[keep:] if path != directory):
        with contextlib.suppress(Timeout), FileLock(f"{old}.lock", timeout=0):   # held: in use
            shutil.rmtree(old, ignore_errors=True)
            Path(f"{old}.lock").unlink(missing_ok=True)


def weights(state_dict: dict, prefix: str) -> dict:
    """A LitLM state_dict's entries under `prefix` ("model.", "averaged.module."), without it."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def best_weights(state_dict: dict) -> dict:
    """NT-ASGD's averaged weights once it has averaged a step, else the trained ones."""
    averaged = weights(state_dict, "averaged.module.")
    started = averaged and int(state_dict["averaged.n_averaged"]) > 0
    return averaged if started else weights(state_dict, "model.")


def _unfit(path: Path, state_dict: dict, model) -> str | None:
    """Why a LitLM checkpoint's weights cannot resume into `model`: NaN or infinity, or another
    model's shapes (model.*, averaged.module.*); None when they fit."""
    nonfinite = next((key for key, value in state_dict.items()
                      if isinstance(value, torch.Tensor) and value.is_floating_point()
                      and not bool(torch.isfinite(value).all())), None)
    if nonfinite:   # a resumed NaN would be blamed on train.lr, and every rerun resume it
        return f"{path}: damaged, holds NaN or infinite weights ({nonfinite})"
    wanted = {key: list(value.shape) for key, value in model.state_dict().items()}
    for prefix in ("model.", "averaged.module."):   # no averaged.*: NT-ASGD had not started
        found = {key: list(value.shape) for key, value in weights(state_dict, prefix).items()}
        other = next((key for key in {**wanted, **found} if found.get(key) != wanted.get(key)), None)
        if other and (found or prefix == "model."):
            return (f"{path}: the weights of another model ({prefix}{other}: shape "
                    f"{found.get(other, 'none')} here, {wanted.get(other, 'none')} in params.yaml's)")
    return None


def existing(directory: Path, print_fn, config: ModelConfig) -> tuple[Path | None, str | None]:
    """(last.ckpt to resume, its MLflow run id), or (None, None) after telling `print_fn` what is
    damaged or does not fit `config`. Read-only: a fresh start's checkpoints replace them by name."""
    state_file, last = directory / STATE, directory / LAST
    if not state_file.exists():
        return None, None
    try:
        state = State.model_validate_json(state_file.read_bytes())
    except (OSError, ValidationError) as error:   # not JSON, or a value `record` never writes
        problem = f"damaged ({first_complaint(error)})" if isinstance(error, ValidationError) else "unreadable"
        print_fn(f"lmpipe: {state_file} is {problem}; starting afresh")
        return None, None
    if not last.exists():
        return None, None
    with torch.device("meta"):   # shapes only: no memory and no draw of the RNG
        model = RNNLM(config)
    for path in (path for path in (last, directory / BEST) if path.exists()):
        try:
            keys = ("state_dict", "optimizer_states", "loops", "lmpipe")   # Lightning's, LitLM's
            checkpoint = files.load_checkpoint(path, keys)
            problem = _unfit(path, checkpoint["state_dict"], model)
        except files.StateError as error:
            problem = error.problem
        if problem:
            print_fn(f"lmpipe: cannot resume, {problem}; starting afresh")
            return None, None
    return last, state.run_id


def record(directory: Path, run_id: str | None) -> None:
    files.write_text(directory / STATE, json.dumps({"run_id": run_id}, indent=2))
