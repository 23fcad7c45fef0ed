"""One error path for stages and `lmpipe`: whatever stops them is one line on stderr,
`lmpipe: error: <what is wrong, the file, key or argument, the fix>`, never a traceback unless
LMPIPE_DEBUG=1. Exit status 2: bad input or damaged state (ValueError, OSError); 1: the
unforeseen; 130 Ctrl-C, 143 SIGTERM (stages.run_stage). quiet_libraries silences their chatter."""

from __future__ import annotations

import logging
import os
import sys
import warnings

DEBUG = "LMPIPE_DEBUG"


class StateError(ValueError):
    """State that lmpipe relies on and that was changed or damaged behind its back (a file of
    data/prepared or models/, a checkpoint, an MLflow experiment, run or registered model); the
    message names the state and the command that restores it."""


def debug() -> bool:
    """Whether LMPIPE_DEBUG=1 asks for tracebacks instead of one-line errors."""
    return os.environ.get(DEBUG, "").strip().lower() in ("1", "true", "yes", "on")


def first_line(text) -> str:
    """The first non-blank line of `text` (an exception's message), stripped; "" if none."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def server_down(uri: str, why: str, source: str | None = None) -> str:
    """The one line for an MLflow tracking server that does not answer: `uri` (may be empty: then
    unnamed), `why` (e.g. "ConnectionError within 10 s"), and the fix; `source` names where the
    URI came from (MLFLOW_TRACKING_URI unless "--tracking-uri" or "mlflow.tracking_uri")."""
    where = f" {uri}" if uri else ""
    if source and source.startswith("--"):
        other = f"give {source} of another store"
    elif source == "mlflow.tracking_uri":
        other = "set mlflow.tracking_uri in params.yaml to sqlite:///mlflow.db (the embedded store)"
    else:
        other = "unset MLFLOW_TRACKING_URI to use the embedded store mlflow.db"
    return (f"the MLflow tracking server{where} does not answer ({why}); start it "
            f"(`lmpipe mlflow-server`, or your team's server) or {other}, then rerun")


def _tracking_failure(error: BaseException) -> str | None:
    """One line for an MLflow store that cannot be reached or written, or None (a fallback:
    mlflow_runs.check_store finds these before any work)."""
    text = f"{type(error).__name__}: {error}"
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if "Max retries exceeded" in text or "Connection refused" in text or "timed out" in text.lower():
        return server_down(uri, first_line(text)[:160])
    if "database is locked" in text:
        return ("the MLflow store mlflow.db stayed locked by other writers; run fewer parallel "
                "workers (`dvc queue start -j 2`) or a tracking server (`lmpipe mlflow-server`, "
                "docs/scaling.md)")
    if "readonly database" in text or "unable to open database file" in text:
        store = uri or "sqlite:///mlflow.db"
        why = ("attempt to write a readonly database" if "readonly database" in text
               else "unable to open database file")
        return (f"the MLflow store {store} cannot be written ({why}); make "
                "the file and its folder writable (`chmod u+w`), or point MLFLOW_TRACKING_URI at "
                "a writable store")
    return None


def one_line(error: BaseException) -> tuple[str, int]:
    """(the one-line message, exit status) for an exception that stopped a stage or command."""
    tracking = _tracking_failure(error)
    if tracking:
        return tracking, 2
    if isinstance(error, MemoryError):   # numpy's message names the array it could not allocate
        detail = f" ({first_line(error)})" if first_line(error) else ""
        return (f"out of memory{detail}: the input is too large for this "
                "machine's memory; use less text (for n-grams also a lower order), or a machine "
                "with more memory", 2)
    if isinstance(error, OSError) and error.errno is not None:
        # no such file, permissions, a folder where a file should be, a full disk
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}", 2
    if isinstance(error, ValueError | OSError) and not type(error).__module__.startswith(
            ("mlflow", "sqlalchemy", "requests", "urllib3")):   # ours: already one line
        return " ".join(str(error).split()).strip() or type(error).__name__, 2
    if type(error).__module__.startswith("mlflow"):
        return f"MLflow: {first_line(error)}", 2
    return (f"{type(error).__name__}: {first_line(error)} (unexpected; rerun with "
            f"{DEBUG}=1 for the traceback and report it)", 1)


def guard(call, *args) -> int:
    """Run call(*args); return 0, or print one line (one_line) and return its exit status.
    KeyboardInterrupt and SystemExit pass through (the caller decides what an interruption
    means); with LMPIPE_DEBUG=1 every exception passes through, traceback and all."""
    try:
        call(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:
        if debug():
            raise
        message, status = one_line(error)
        print(f"lmpipe: error: {message}", file=sys.stderr, flush=True)
        return status
    return 0


VERBOSE = "LMPIPE_VERBOSE"


def verbose() -> bool:
    """Whether LMPIPE_VERBOSE=1 asks for the libraries' own messages (see quiet_libraries)."""
    return os.environ.get(VERBOSE, "") not in ("", "0")


def quiet_libraries() -> None:
    """Silence third-party chatter at its source, unless LMPIPE_VERBOSE=1: Lightning's info
    messages (adverts, "GPU available", "Seed set", "`Trainer.fit` stopped") are logger records
    of lightning.pytorch.utilities.rank_zero and friends, set to WARNING; two warnings that say
    nothing to a user (our checkpoint directory holds resume.json by design; torch's pytree
    deprecation raised inside Lightning) are ignored by message; MLflow's artifact progress bars
    are off (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR) and its INFO records go. Warnings that might
    matter stay."""
    if verbose():
        return
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed", "lightning.fabric.utilities.rank_zero",
                 "mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)   # the CloudPickle notice
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
