"""One error path for stages and `lmpipe`: a failure is one stderr line, `lmpipe: error: <what is
wrong, the file, key or argument, the fix>` (LMPIPE_DEBUG=1: the traceback). Exit status 2 for bad
input or damaged state (ValueError, OSError, Lightning's MisconfigurationException), 1 for the
unforeseen."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import warnings

DEBUG = "LMPIPE_DEBUG"


class StateError(ValueError):
    """Outputs or tracking state damaged behind lmpipe's back; names it and the restoring command."""


def debug() -> bool:
    return os.environ.get(DEBUG, "").strip().lower() in ("1", "true", "yes", "on")


def first_line(text) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def server_down(uri: str, why: str, source: str | None = None) -> str:
    """The line for a tracking server that does not answer; `source`: where `uri` came from."""
    where = f" {uri}" if uri else ""
    other = (f"give {source} of another store" if source and source.startswith("--") else
             "set mlflow.tracking_uri in params.yaml to sqlite:///mlflow.db (the embedded store)"
             if source == "mlflow.tracking_uri" else "unset MLFLOW_TRACKING_URI to use the embedded store mlflow.db")
    return (f"the MLflow tracking server{where} does not answer ({why}); start it "
            f"(`lmpipe mlflow-server`, or your team's server) or {other}, then rerun")


def damaged_store(name) -> str:
    """The line for an MLflow store file that is not an intact sqlite database (NOTADB, CORRUPT)."""
    return (f"{name}: the MLflow store is damaged, not an sqlite database; restore it from a "
            "backup, or move it aside and rerun (a new one is created)")


def _tracking_failure(error: BaseException) -> str | None:
    """The line when `error` or a cause is an MLflow store down, locked, read-only or damaged; else None."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    # a library not imported raised nothing: none is imported here
    requests, urllib3 = map(sys.modules.get, ("requests", "urllib3"))
    down = (*((requests.ConnectionError, requests.Timeout) if requests else ()),
            *((urllib3.exceptions.MaxRetryError, urllib3.exceptions.TimeoutError) if urllib3 else ()))
    cause, seen = error, []
    while isinstance(cause, BaseException) and all(cause is not earlier for earlier in seen):
        seen.append(cause)
        if isinstance(cause, down):
            return server_down(uri, first_line(f"{type(error).__name__}: {error}")[:160])
        code = getattr(cause, "sqlite_errorcode", 0) & 0xFF   # sqlite3.Error's primary code (else 0)
        if code == sqlite3.SQLITE_BUSY:
            return ("the MLflow store mlflow.db stayed locked by other writers; run fewer parallel "
                    "workers (`dvc queue start -j 2`) or a tracking server (`lmpipe mlflow-server`, "
                    "docs/scaling.md)")
        if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
            return (f"the MLflow store {uri or 'sqlite:///mlflow.db'} cannot be written "
                    f"({first_line(cause)}); make the file and its folder writable (`chmod u+w`), "
                    "or point MLFLOW_TRACKING_URI at a writable store")
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return damaged_store(uri or "sqlite:///mlflow.db")
        cause = cause.__cause__ or getattr(cause, "orig", None) or (
            None if cause.__suppress_context__ else cause.__context__)
    return None


def one_line(error: BaseException) -> tuple[str, int]:
    """(the one-line message, exit status) for the exception that stopped a stage or command."""
    if tracking := _tracking_failure(error):
        return tracking, 2
    if isinstance(error, MemoryError):   # numpy's message names the array it could not allocate
        detail = f" ({first_line(error)})" if first_line(error) else ""
        return (f"out of memory{detail}: the input is too large for this "
                "machine's memory; use less text (for n-grams also a lower order), or a machine "
                "with more memory", 2)
    if isinstance(error, OSError) and error.errno is not None:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}", 2
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")   # not imported: not raised
    if lightning and isinstance(error, lightning.MisconfigurationException):   # it names the argument
        return (f"Lightning refuses a train.* setting of params.yaml (each is its Trainer's argument of "
                f"that name): {first_line(error)}", 2)
    if isinstance(error, ValueError | OSError) and not type(error).__module__.startswith(
            ("mlflow", "sqlalchemy", "requests", "urllib3")):   # ours: already one line
        return " ".join(str(error).split()).strip() or type(error).__name__, 2
    if type(error).__module__.startswith("mlflow"):
        return f"MLflow: {first_line(error)}", 2
    return (f"{type(error).__name__}: {first_line(error)} (unexpected; rerun with "
            f"{DEBUG}=1 for the traceback and report it)", 1)


def guard(call, *args, stopped: str) -> int:
    """Run call(*args) with the libraries quiet: 0, or print its one line and return its exit
    status; Ctrl-C: `lmpipe: interrupted{stopped}`, 130 (debug: reraise)."""
    quiet_libraries()
    try:
        call(*args)
    except (KeyboardInterrupt, SystemExit) as error:
        # inside fit, Lightning turns Ctrl-C (and so a stage's SIGTERM) into sys.exit(1)
        if debug() or isinstance(error, SystemExit) and not isinstance(error.__context__, KeyboardInterrupt):
            raise
        print(f"lmpipe: interrupted{stopped}", file=sys.stderr, flush=True)
        return 130
    except Exception as error:
        if debug():
            raise
        message, status = one_line(error)
        print(f"lmpipe: error: {message}", file=sys.stderr, flush=True)
        return status
    return 0


def verbose() -> bool:
    return os.environ.get("LMPIPE_VERBOSE", "") not in ("", "0")


def quiet_libraries() -> None:
    """Silence Lightning's and MLflow's info chatter and two empty warnings (LMPIPE_VERBOSE=1: keep)."""
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


class ParamsError(ValueError):
    """A bad value in params.yaml (or a file it names), naming the key and the fix."""
