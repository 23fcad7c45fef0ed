"""The tracking store (docs/internals.md). In: a URI from MLFLOW_TRACKING_URI, params.yaml's
mlflow.tracking_uri or an argument. Out: tracking_uri, the URI in use; prepare: sqlite in WAL, its
artifacts at the repository's place. Errors: check_uri's StateError for a store MLflow cannot use
(a newer MLflow's included), naming the source, value and fix."""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import logging
import os
import re
import sqlite3
import threading
import warnings
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from pipeline import files
from pipeline.config import MlflowParams
from pipeline.errors import StateError, damaged_store, first_line, server_down

PREFIX = "sqlite:///"
WAIT_S = 20.0          # for the switch's own lock, as long as MLflow's busy_timeout
ENV, PARAM = "MLFLOW_TRACKING_URI", "mlflow.tracking_uri"
FORMS = ("sqlite:///PATH in an existing folder (the default: sqlite:///mlflow.db), "
         "http(s)://HOST:PORT of a running tracking server (`lmpipe mlflow-server`), a database "
         "URL whose driver is installed (postgresql://..., mysql://...) or databricks with its "
         "credentials")
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
           "pymysql": "PyMySQL"}   # module -> the package that provides it
DATABRICKS = "set DATABRICKS_HOST and DATABRICKS_TOKEN, or a profile in ~/.databrickscfg"
ARTIFACTS = "mlartifacts"   # the embedded store's artifacts: <repository>/mlartifacts
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"),
             ("model_versions", "storage_location"), ("logged_models", "artifact_location"))
_prepared: set[str] = set()


def database(tracking_uri: str) -> Path | None:
    """The file of a `sqlite:///PATH[?query]` URI (relative: to the cwd); None for other stores."""
    if not tracking_uri.startswith(PREFIX):
        return None
    path = tracking_uri[len(PREFIX):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def tracking_uri(params: MlflowParams, root: str | Path = ".") -> str:
    """$MLFLOW_TRACKING_URI if set, else params', a relative sqlite path made absolute at `root`."""
    uri = os.environ.get(ENV) or params.tracking_uri
    if uri.startswith(PREFIX) and not uri.startswith(PREFIX + "/"):
        uri = PREFIX + str((Path(root) / uri[len(PREFIX):]).resolve())
    return uri


def artifact_location(root: str | Path) -> str:
    """The file URI of the embedded store's artifacts in the repository `root`."""
    return (Path(root) / ARTIFACTS).resolve().as_uri()


def prepare(tracking_uri: str) -> str:
    """Once per process, for an sqlite store: switch it to WAL (else a warning; one SQLite cannot
    open is left to MLflow) and follow the repository's move (_follow); returns the URI."""
    path = database(tracking_uri)
    if path is None or tracking_uri in _prepared:
        return tracking_uri
    _prepared.add(tracking_uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)   # as MLflow does before creating it
        with closing(sqlite3.connect(path, timeout=WAIT_S, isolation_level=None)) as connection:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            _follow(connection, path.resolve())
    except (OSError, sqlite3.Error):
        return tracking_uri
    if mode != "wal":   # SQLite answers with the mode it kept
        warnings.warn(f"lmpipe: the MLflow store {path} stays in journal mode {mode}, not WAL: "
                      "parallel workers writing to it wait longer for each other", stacklevel=2)
    return tracking_uri


def _follow(connection: sqlite3.Connection, path: Path) -> None:
    """In one transaction, rewrite the absolute artifact URIs (LOCATIONS; mlflow/mlflow#3144) that
    the store `path`, inside the repository, recorded under another .../mlartifacts whose runs'
    folders are in this repository's: it was moved or copied. Stores outside it are left alone."""
    root = files.repo_root()
    if not path.is_relative_to(root):
        return
    here = artifact_location(root)
    tables = {name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "experiments" not in tables:   # a new store
        return

    def moved() -> list[str]:
        return [old for (old,) in connection.execute("SELECT DISTINCT artifact_location FROM experiments")
                if old != here and old.endswith("/" + ARTIFACTS) and any(
                    (root / ARTIFACTS / run).is_dir() for (run,) in connection.execute(
                        "SELECT run_uuid FROM runs WHERE substr(artifact_uri, 1, ?) = ?",
                        (len(old) + 1, old + "/")))]
    if not moved():
        return
    connection.execute("BEGIN IMMEDIATE")
    for old in moved():   # again under the write lock: a parallel stage may have done it
        for table, column in (t for t in LOCATIONS if t[0] in tables):
            connection.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE "
                               f"{column} = ? OR substr({column}, 1, ?) = ?",
                               (here, len(old) + 1, old, len(old) + 1, old + "/"))
    connection.execute("COMMIT")


def blocked(path: Path, write: bool = True) -> tuple[str, list[Path]] | None:
    """(why, paths to make writable) when SQLite cannot write (`write`) or read the store `path`
    (and its -wal, -shm, -journal), else None; creates none. StateError: not an intact database."""
    folder = path.parent
    denied = [p for p, mode in ((path, os.R_OK | os.W_OK), (folder, os.W_OK | os.X_OK))
              if write and p.exists() and not os.access(p, mode)]
    if denied:
        return " and ".join("the file" if p == path else f"its folder {p}" for p in denied) + \
            " read-only", denied
    if not path.is_file():
        return None
    try:   # waits at most as long as a writer would for another writer (busy timeout)
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode={'rw' if write else 'ro'}",
                                     uri=True, timeout=WAIT_S, isolation_level=None)) as connection:
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            connection.execute("ROLLBACK")
    except sqlite3.OperationalError as error:   # read-only, cannot open; busy: MLflow waits
        if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            return f"SQLite: {error}", [path, folder] if write else [folder]
    except sqlite3.DatabaseError:   # SQLITE_NOTADB, SQLITE_CORRUPT: overwritten, a partial copy
        raise StateError(damaged_store(path)) from None
    return None


def check_uri(tracking_uri: str, *, source: str | None = None, timeout: float = 10.0,
              writable: bool = True) -> None:
    """StateError within about `timeout` s for a store MLflow cannot use (not `writable`: missing),
    naming `source` (None: MLFLOW_TRACKING_URI if set, else mlflow.tracking_uri), value and fix."""
    source = source or (ENV if os.environ.get(ENV) else PARAM)
    given = (os.environ.get(ENV) or tracking_uri) if source == ENV else tracking_uri
    lowered = tracking_uri.lower()
    check = CHECKS.get(urlsplit(lowered).scheme.split("+")[0] or lowered)
    found = check(tracking_uri, given, source, writable, timeout) if check else (
        "is not a tracking store lmpipe can use", "")
    if found is None:
        return
    shown = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", given)   # a password masked
    where, other = {
        ENV: (f"{ENV}={shown}", f"unset {ENV} to use the embedded store sqlite:///mlflow.db, or "
                                f"set it to {FORMS}"),
        PARAM: (f"{PARAM}={shown!r} (params.yaml)", f"set {PARAM} in params.yaml to {FORMS}"),
    }.get(source, (f"{source} {shown}", f"give {source} {FORMS}, or leave it out to use params.yaml's"))
    problem, fix = found
    raise StateError(f"{where} {problem}; {fix + ', or ' if fix else ''}{other}")


def _sqlite(uri: str, given: str, source: str, writable: bool, timeout: float):
    """(problem, fix) of an sqlite URI that names no usable store file, or None."""
    path = database(uri)
    if database(given) is None:
        return "names no database file (empty path or in-memory)", ""
    if path.is_dir():
        return f"names a folder, {path}, not a database file", ""
    if not path.parent.is_dir():
        return f"names a file in {path.parent}: no such folder", f"`mkdir -p {path.parent}`"
    if not writable and not path.is_file():
        return (f"names no MLflow store: {path} does not exist",
                "`dvc repro -f -s evaluate` logs the last results into a new one")
    denied = blocked(path, writable)
    if denied is None:
        return _newer(path)
    beside = f"{path.name}-wal, -shm, -journal" if writable else f"{path.name}-shm, even to read"
    return (f"names {path}, which SQLite cannot {'write' if writable else 'read'} ({denied[0]}; "
            f"it writes {beside})", f"`chmod u+w {' '.join(map(str, denied[1]))}`")


def _newer(path: Path):
    """(problem, fix) of a store whose schema revision this MLflow lacks (its migrations are
    files <revision>_*.py): a newer MLflow wrote it (mlflow/mlflow#6703); else None."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=WAIT_S)) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:   # no such table: a new store, or not MLflow's (MLflow says)
        return None
    migrations = Path(importlib.util.find_spec("mlflow").submodule_search_locations[0], "store",
                      "db_migrations", "versions")
    if row is None or any(migrations.glob(f"{glob.escape(row[0])}_*.py")):
        return None
    wal = Path(f"{path}-wal")   # commits not yet in the file: they go with it
    move = f"mv {path} {path}.newer" + (f" && mv {wal} {path}.newer-wal" if wal.exists() else "")
    return (f"names {path}, which a newer MLflow wrote (schema revision {row[0]}, unknown to "
            f"MLflow {importlib.metadata.version('mlflow')}; `mlflow db upgrade` cannot downgrade "
            f"it)", f"move it aside for a new store (`{move}`) and open it with the MLflow that "
            "wrote it")


def _server(uri: str, given: str, source: str, writable: bool, timeout: float):
    """(problem, fix) of a bad host or port, or None; StateError (server_down) without /health."""
    import requests  # here: 0.1 s at every lmpipe command's start, for http(s) stores only
    parts = urlsplit(uri)
    if not parts.hostname:
        return "names no host", ""
    try:
        parts.port   # noqa: B018 - raises ValueError for a port that is not a number 0..65535
    except ValueError:
        return "has a port that is not a number 0..65535", ""

    def health():
        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    error = _failure(timeout + 1, health)
    if error is not None:
        why = str(error) if isinstance(error, requests.HTTPError) else \
            f"{type(error).__name__} within {timeout:g} s"
        raise StateError(server_down(uri, why, source))
    return None


def _database(uri: str, given: str, source: str, writable: bool, timeout: float):
    """(problem, fix) of a database URL SQLAlchemy cannot parse or connect within `timeout`, or
    of databricks without credentials (MLflow's lookup); None when usable."""
    if uri.lower().startswith("databricks"):
        from mlflow.utils.databricks_utils import get_databricks_host_creds as probe  # 2 s import
        chatty = logging.getLogger("mlflow.utils.databricks_utils")
        level = chatty.level
        chatty.setLevel(logging.CRITICAL)   # its warning says what the refusal says
        error = _failure(timeout, probe, uri)
        chatty.setLevel(level)
        return None if error is None else (f"finds no Databricks credentials ({_why(error)})", DATABRICKS)
    import sqlalchemy  # here: 0.3 s that an sqlite store (no SQLAlchemy URL) need not pay
    from sqlalchemy.pool import NullPool

    def connect():
        with sqlalchemy.create_engine(uri, poolclass=NullPool).connect():
            pass
    error = _failure(timeout, connect)
    if isinstance(error, ImportError):
        name = error.name or str(error)
        return f"needs the driver {name}", f"`pip install {DRIVERS.get(name, name)}`"
    return None if error is None else (f"is not a database SQLAlchemy can reach ({_why(error)})", "")


CHECKS = {"sqlite": _sqlite, "http": _server, "https": _server, "databricks": _database,
          "postgresql": _database, "mysql": _database, "mssql": _database}   # by URI scheme


def _failure(seconds: float, call, *args) -> Exception | None:
    """What call(*args) raised in a daemon thread, a TimeoutError after `seconds`, or None."""
    outcome: list[Exception | None] = [TimeoutError(f"no answer within {seconds:g} s")]

    def target():
        try:
            call(*args)
            outcome[0] = None
        except Exception as error:   # handed to the caller
            outcome[0] = error
    thread = threading.Thread(target=target, name="lmpipe-check-store", daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0]


def _why(error: BaseException) -> str:
    return (first_line(error) or type(error).__name__)[:160]
