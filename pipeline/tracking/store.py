"""The tracking store. In: a tracking URI and its source (MLFLOW_TRACKING_URI, params.yaml's
mlflow.tracking_uri, a command's argument). Out: tracking_uri, the URI in use; check_uri refuses
a store MLflow cannot use (StateError: one line naming the source, its value, the fix); prepare
switches an sqlite store to WAL once (https://www.sqlite.org/wal.html), so parallel DVC queue
workers and readers do not wait for each other. Why (MLflow's busy_timeout): docs/internals.md."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import warnings
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import MlflowParams
from pipeline.errors import StateError, first_line, server_down

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


ENV = "MLFLOW_TRACKING_URI"
PARAM = "mlflow.tracking_uri"
FORMS = ("sqlite:///PATH in an existing folder (the default: sqlite:///mlflow.db), "
         "http(s)://HOST:PORT of a running tracking server (`lmpipe mlflow-server`), a database "
         "URL whose driver is installed (postgresql://..., mysql://...) or databricks with its "
         "credentials")
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
           "pymysql": "PyMySQL"}   # module -> the package that provides it


def tracking_uri(params: MlflowParams, root: str | Path = ".") -> str:
    """The MLflow tracking URI: $MLFLOW_TRACKING_URI if set, else params, with a relative
    sqlite path made absolute against `root` (MLflow resolves relative paths against the cwd)."""
    uri = os.environ.get(ENV) or params.tracking_uri
    if uri.startswith(PREFIX) and not uri.startswith(PREFIX + "/"):
        uri = PREFIX + str((Path(root) / uri[len(PREFIX):]).resolve())
    return uri


def repo_root() -> Path:
    """The project root: DVC sets DVC_ROOT inside (queued) experiments; else the cwd."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def _origin(tracking_uri: str, source: str | None) -> tuple[str, str]:
    """(where the URI came from, its value as given there): MLFLOW_TRACKING_URI when set (it
    wins over params.yaml, tracking_uri), else params.yaml's mlflow.tracking_uri."""
    if source is None:
        source = ENV if os.environ.get(ENV) else PARAM
    given = os.environ[ENV] if source == ENV and os.environ.get(ENV) else tracking_uri
    return source, given


def _shown(source: str, value: str) -> str:
    """`source` and `value` as a user writes them, a password masked."""
    try:
        parts = urlsplit(value)
        if parts.password:
            value = value.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    if source.startswith("--"):
        return f"{source} {value}"
    return f"{source}={value}" if source == ENV else f"{source}={value!r} (params.yaml)"


def _another(source: str, what: str) -> str:
    """How to point lmpipe at `what` (another store) from `source`."""
    if source.startswith("--"):
        return f"give {source} {what}, or leave it out to use the store of params.yaml"
    if source == ENV:
        return f"unset {ENV} to use the embedded store sqlite:///mlflow.db, or set it to {what}"
    return f"set {PARAM} in params.yaml to {what}"


def _within(seconds: float, call, *args):
    """call(*args) in a daemon thread (a DNS lookup, a driver's connect: neither has a bound of
    its own): its result or its exception, or TimeoutError after `seconds`; a call that hangs
    is left behind and does not keep the process from exiting."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call(*args)
        except BaseException as error:   # handed to the caller
            outcome["error"] = error
    thread = threading.Thread(target=target, name="lmpipe-check-store", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def check_uri(tracking_uri: str, *, source: str | None = None, timeout: float = 10.0,
              writable: bool = True) -> None:
    """Check the form and the reach of a tracking URI before MLflow touches it (MLflow retries
    some for minutes, creates missing folders, or answers with a paragraph), in at most about
    `timeout` seconds. `source` names where the URI came from in the messages:
    "MLFLOW_TRACKING_URI", "mlflow.tracking_uri" (params.yaml) or a command's argument such as
    "--tracking-uri"; None: MLFLOW_TRACKING_URI when it is set, else mlflow.tracking_uri.
    `writable`: the caller writes runs (a stage); False for a reader (`lmpipe compare`), for
    which an sqlite store must exist and be readable (store.blocked).

    Raises StateError, one line naming the source, its value and the fix, for: an sqlite URI
    without a file path (`sqlite:///`, in-memory), a path that is a folder, a folder that does
    not exist, a store file or folder that cannot be written (`writable`) or a missing store (a
    reader); an http(s) URI without a host or with a bad port, or whose server does not answer
    its /health within `timeout` (errors.server_down); a database URL SQLAlchemy cannot parse,
    whose driver is not installed, or whose database refuses or does not answer a connection;
    `databricks` without credentials; any other scheme."""
    source, given = _origin(tracking_uri, source)

    def refuse(problem: str, first: str = "") -> StateError:
        fix = _another(source, FORMS)
        return StateError(f"{_shown(source, given)} {problem}; {first + ', or ' if first else ''}"
                          f"{fix}")

    lowered = tracking_uri.lower()
    if tracking_uri.startswith("sqlite:"):
        _check_sqlite(tracking_uri, given, source, writable, refuse)
        return
    if lowered.startswith(("http://", "https://")):
        _check_server(tracking_uri, source, timeout, refuse)
        return
    if lowered == "databricks" or lowered.startswith("databricks://"):
        _check_databricks(tracking_uri, timeout, refuse)
        return
    if urlsplit(lowered).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        _check_database(tracking_uri, timeout, refuse)
        return
    raise refuse("is not a tracking store lmpipe can use")


def _check_sqlite(tracking_uri: str, given: str, source: str, writable: bool, refuse) -> None:
    """An sqlite URI names a database file in an existing folder that SQLite can write
    (`writable`) or, for a reader, an existing store it can read; else StateError."""
    if not tracking_uri.startswith(PREFIX) or database(given) is None:
        raise refuse("names no database file (empty path or in-memory)")
    path = database(tracking_uri)
    if path.is_dir():
        raise refuse(f"names a folder, {path}, not a database file")
    if not path.parent.is_dir():
        raise refuse(f"names a file in {path.parent}: no such folder", f"`mkdir -p {path.parent}`")
    if not writable and not path.is_file():
        raise refuse(f"names no MLflow store: {path} does not exist")
    denied = blocked(path, writable)
    if denied:
        (why, paths), verb = denied, "written" if writable else "read"
        beside = f"{path.name}-wal, -shm, -journal" if writable else f"{path.name}-shm, even to read"
        other = _another(source, f"a{' writable' if writable else 'nother'} store")
        raise StateError(f"{path}: the MLflow store cannot be {verb} ({why}; SQLite writes "
                         f"{beside}): `chmod u+w {' '.join(map(str, paths))}`, or {other}")


def _check_server(tracking_uri: str, source: str, timeout: float, refuse) -> None:
    """A tracking server's URI has a host and a port 0..65535, and the server answers its
    /health within about `timeout` seconds; else StateError."""
    import requests  # here: 0.1 s at every lmpipe command's start, for http(s) stores only
    parts = urlsplit(tracking_uri)
    if not parts.hostname:
        raise refuse("names no host")
    try:
        parts.port   # noqa: B018 - raises ValueError for a port that is not a number 0..65535
    except ValueError:
        raise refuse("has a port that is not a number 0..65535") from None

    def health():
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    try:
        _within(timeout + 1, health)
    except (requests.RequestException, TimeoutError) as error:
        late = f"{type(error).__name__} within {timeout:g} s"
        raise StateError(server_down(tracking_uri, str(error) if isinstance(
            error, requests.HTTPError) else late, source)) from None


def _check_database(tracking_uri: str, timeout: float, refuse) -> None:
    """A database URL that SQLAlchemy parses, whose driver is installed and whose database
    accepts a connection within `timeout` seconds; else refuse(problem, fix)."""
    import sqlalchemy  # here: 0.3 s that an sqlite store (no SQLAlchemy URL) need not pay
    from sqlalchemy.pool import NullPool
    try:
        url = sqlalchemy.engine.make_url(tracking_uri)
        url.get_dialect().import_dbapi()
    except ImportError as error:
        name = error.name or str(error)
        raise refuse(f"needs the driver {name}", f"`pip install {DRIVERS.get(name, name)}`") from None
    except sqlalchemy.exc.ArgumentError as error:   # NoSuchModuleError among them
        raise refuse(f"is not a database URL SQLAlchemy can use ({_why(error)})") from None

    def connect():
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    try:
        _within(timeout, connect)
    except Exception as error:   # TimeoutError, or the driver's: refused, unknown host, password
        raise refuse(f"names a database that does not answer or refuses ({_why(error)})") from None


def _check_databricks(tracking_uri: str, timeout: float, refuse) -> None:
    """Databricks credentials for `tracking_uri` (MLflow's own lookup, its warning silenced),
    found within `timeout` seconds; else refuse(problem, fix)."""
    from mlflow.utils.databricks_utils import get_databricks_host_creds  # MLflow's 2 s import
    chatty = logging.getLogger("mlflow.utils.databricks_utils")
    level = chatty.level
    chatty.setLevel(logging.CRITICAL)
    try:
        _within(timeout, get_databricks_host_creds, tracking_uri)
    except Exception as error:   # MLflow's "Reading Databricks credential configuration failed"
        late = f" ({error})" if isinstance(error, TimeoutError) else ""
        raise refuse(f"finds no Databricks credentials{late}", "set DATABRICKS_HOST and "
                     "DATABRICKS_TOKEN, or a profile in ~/.databrickscfg") from None
    finally:
        chatty.setLevel(level)


def _why(error: BaseException) -> str:
    """An exception's first line (at most 160 characters), or its type's name."""
    return (first_line(error) or type(error).__name__)[:160]
