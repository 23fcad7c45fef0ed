"""Resuming an interrupted training (I/O helper). In: a checkpoint directory (a DVC out declared
`persist: true`, so DVC keeps it between runs) and a fingerprint of everything that defines the
training. Out: the checkpoint to resume from and the MLflow run to continue, or a clean start.

The directory holds Lightning's `last.ckpt` (every few steps) and `best.ckpt` (lowest validation
perplexity), and `resume.json`: {"fingerprint", "run_id", "finished"}. A run resumes only from an
unfinished training with the same fingerprint: after a params or data change, or once a training
has finished, the next run starts afresh (old checkpoints removed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

LAST = "last.ckpt"
BEST = "best.ckpt"
STATE = "resume.json"
CHECKPOINT_KEYS = ("state_dict", "optimizer_states", "loops")   # what Lightning resumes from


def fingerprint(*parts) -> str:
    """A stable hash of JSON-serialisable parts (params, model config, data hash)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan(directory: Path, print_fn=print) -> tuple[dict, Path | None]:
    """(state, checkpoint to resume from or None). Call `start` with the fingerprint next. A
    resume.json or checkpoint that cannot be read (a disk that filled up, a partial copy, an
    edit) is reported with `print_fn` and the training starts afresh: a damaged checkpoint
    costs the steps since the start, never the run."""
    state_file = directory / STATE
    if not state_file.exists():
        return {}, None
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict):
        print_fn(f"lmpipe: {state_file} is unreadable; starting afresh")
        return {}, None
    last = directory / LAST
    if not last.exists() or state.get("finished"):
        return state, None
    from pipeline import files
    for path in (last, directory / BEST):
        if path.exists():
            try:
                files.load_checkpoint(path, directory, CHECKPOINT_KEYS)
            except files.StateError as error:
                print_fn(f"lmpipe: cannot resume, {error.problem}; starting afresh")
                return {}, None
    return state, last


def existing(directory: Path, fp: str, print_fn=print) -> tuple[Path | None, str | None]:
    """(the checkpoint of an unfinished training with this fingerprint, its MLflow run id), or
    (None, None). Read-only: ranks > 0 under DDP call only this."""
    state, last = plan(directory, print_fn)
    if last is not None and state.get("fingerprint") == fp and not state.get("finished"):
        return last, state.get("run_id")
    return None, None


def start(directory: Path, fp: str, print_fn=print) -> tuple[Path | None, str | None]:
    """(checkpoint to resume, MLflow run id to continue); clears the directory when not resuming."""
    last, run_id = existing(directory, fp, print_fn)
    if last is not None:
        print_fn(f"lmpipe: resuming from {last} (MLflow run {run_id})")
        return last, run_id
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return None, None


def record(directory: Path, fp: str, run_id: str | None, finished: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fp, "run_id": run_id, "finished": finished}, indent=2))
    tmp.replace(directory / STATE)
