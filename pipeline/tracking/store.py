"""The embedded MLflow store (`sqlite:///mlflow.db`) under parallel writers: DVC queue workers
(`dvc queue start -j N`), each stage a process of its own, Lightning's MLFlowLogger among them.
In: a tracking URI. Out: the same URI; a sqlite store file switched to WAL journal mode, once.

What MLflow 3.17 already does, and lmpipe relies on (mlflow/store/db/utils.py,
_get_managed_session_maker): every store session starts with `PRAGMA busy_timeout = 20000`, so a
writer that finds the file locked waits up to 20 s for its turn instead of failing with
"database is locked" (added for exactly that error: https://github.com/mlflow/mlflow/pull/6490).
Python's sqlite3 opens a transaction only at the first INSERT/UPDATE/DELETE, and a transaction
that starts with a write waits in that busy handler; the deadlock case in which SQLite returns
SQLITE_BUSY at once (a reader upgrading to writer, https://www.sqlite.org/c3ref/busy_handler.html)
does not arise. The registry needs no retry of ours either: create_model_version
(mlflow/store/model_registry/sqlalchemy_store.py) dirties the registered model before it reads
max(version), so the autoflush takes the write lock first and two workers registering
lmpipe-gru at once get consecutive versions (and it retries three times on IntegrityError).
A `?timeout=` in the URI does reach sqlite3.connect (SQLAlchemy's pysqlite dialect), but the
session PRAGMA above overrides it, and run_search.py reads the path from the URI, so lmpipe
leaves the URI alone.

What this module adds: WAL (https://www.sqlite.org/wal.html). In the default rollback-journal
mode a commit waits until no reader holds the file, and readers wait during a commit: a reader
that keeps a transaction open for 20 s (a UI query, an sqlite3 shell) makes writers fail. In
WAL, readers (`lmpipe compare`, the MLflow UI, the workers' own lookups) and the one writer do
not wait for each other. benchmarks/parallel_workers.py measures 4 queue workers either way. The mode is stored in the file
(https://www.sqlite.org/pragma.html#pragma_journal_mode), so prepare() checks each store once per
process and switches it at most once in its lifetime. MLflow's own tests switched to WAL
against "database is locked" (https://github.com/mlflow/mlflow/pull/20014), and its file-store
migration (mlflow/store/fs2db) writes in WAL. WAL assumes every process runs on one host
(shared memory), never a network filesystem. While a process holds the store open, recent commits
sit in mlflow.db-wal, beside mlflow.db-shm. Copy the store with `sqlite3 mlflow.db ".backup
copy.db"` or when no process holds it. More writers, or writers on several machines, belong on a
tracking server (`lmpipe mlflow-server`).
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path

PREFIX = "sqlite:///"
WAIT_S = 20.0          # for the switch's own lock, as long as MLflow's busy_timeout
_prepared: set[str] = set()


def database(tracking_uri: str) -> Path | None:
    """The file of a `sqlite:///PATH[?query]` URI (relative to the cwd, as SQLAlchemy opens it);
    None for other stores and for in-memory databases."""
    if not tracking_uri.startswith(PREFIX):
        return None
    path = tracking_uri[len(PREFIX):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def blocked(path: Path, write: bool = True) -> tuple[str, list[Path]] | None:
    """(why, the paths to make writable) when SQLite cannot write (`write`) or read the store
    file `path`, else None. SQLite writes the file and, beside it in its folder, PATH-wal and
    PATH-shm (WAL) or PATH-journal (a rollback journal), so both must be writable; even a reader
    of a store in WAL mode creates PATH-shm. A writer's paths are checked with the system first
    (os.access: modes, ACLs, a read-only mount; the superuser passes), then SQLite itself tries:
    an empty write transaction (BEGIN IMMEDIATE, ROLLBACK), or a read. Creates no store (a
    reader of a read-only WAL file leaves empty PATH-wal and PATH-shm behind, as every reader
    does); a file that is not a database is not judged here (MLflow's open reports it)."""
    folder = path.parent
    if write:
        denied = [p for p, mode in ((path, os.R_OK | os.W_OK), (folder, os.W_OK | os.X_OK))
                  if p.exists() and not os.access(p, mode)]
        if denied:
            what = {1: "its folder {} is" if folder in denied else "the file is",
                    2: "the file and its folder {} are"}[len(denied)]
            return f"{what.format(folder)} read-only", denied
    if not path.is_file():
        return None
    try:   # waits at most as long as a writer would for another writer (busy timeout)
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode={'rw' if write else 'ro'}",
                                     uri=True, timeout=WAIT_S, isolation_level=None)) as connection:
            if write:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("ROLLBACK")
            else:
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        if "readonly" in str(error) or "unable to open" in str(error):
            return f"SQLite: {error}", [path, folder] if write else [folder]
    return None


def prepare(tracking_uri: str) -> str:
    """Switch the store of `tracking_uri` to WAL journal mode unless it is already in it (one
    check per URI and process; other URIs are left alone); returns `tracking_uri` unchanged. A
    store that SQLite will not switch keeps its mode, with a warning: it works as before, its
    writers wait longer. One it cannot open (not a database, no such folder) is left to MLflow,
    whose error says what is wrong."""
    path = database(tracking_uri)
    if path is None or tracking_uri in _prepared:
        return tracking_uri
    _prepared.add(tracking_uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)   # as MLflow does before creating it
        with closing(sqlite3.connect(path, timeout=WAIT_S)) as connection:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except (OSError, sqlite3.Error):
        return tracking_uri
    if mode != "wal":   # SQLite answers with the mode it kept
        warnings.warn(f"lmpipe: the MLflow store {path} stays in journal mode {mode}, not WAL: "
                      "parallel workers writing to it wait longer for each other", stacklevel=2)
    return tracking_uri


def journal_mode(tracking_uri: str) -> str | None:
    """The journal mode of the store of `tracking_uri` ("wal", "delete", ...); None for other
    stores or a file that does not exist (it is not created)."""
    path = database(tracking_uri)
    if path is None or not path.is_file():
        return None
    # read-write (never creating it): a read-only connection to a WAL store leaves empty
    # mlflow.db-wal and mlflow.db-shm behind, which only a writer's close removes
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]
