"""The embedded MLflow store under parallel writers (pipeline/tracking/store.py): WAL once, other
stores untouched, readers and writers that do not wait for each other, and four processes
writing runs, metrics and model versions into one store at once without losing or duplicating
any."""
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline.tracking import run_search, store

EXPERIMENT, MODEL = "lmpipe", "lmpipe-gru"


def journal_mode(uri: str) -> str | None:
    """The journal mode of an sqlite store's file, None for other stores or no file (none made;
    read-write: a read-only connection to a WAL store leaves -wal and -shm behind)."""
    path = store.database(uri)
    if path is None or not path.is_file():
        return None
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """An MLflow store (schema, experiment, registered model) as MLflow creates it: rollback
    journal. Copied per test: creating one takes seconds."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    client.create_experiment(EXPERIMENT)
    client.create_registered_model(MODEL)
    return path


@pytest.fixture
def fresh(template, tmp_path):
    """(URI, path) of a copy of the template that no process has opened yet, then prepared."""
    path = tmp_path / "mlflow.db"
    shutil.copy(template, path)
    uri = f"sqlite:///{path}"
    assert journal_mode(uri) == "delete"
    return store.prepare(uri), path


def test_prepare_switches_the_store_to_wal_once_and_keeps_the_uri(fresh, monkeypatch):
    uri, path = fresh
    assert journal_mode(uri) == "wal"
    with closing(sqlite3.connect(path)) as connection:   # the mode is in the file
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def connect(*args, **kwargs):
        raise AssertionError("a second prepare() of the same store opened it again")
    monkeypatch.setattr(store.sqlite3, "connect", connect)
    started = time.perf_counter()
    for _ in range(1000):
        assert store.prepare(uri) == uri
    assert time.perf_counter() - started < 0.1


def test_a_new_store_a_relative_path_and_a_query_string(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.prepare("sqlite:///sub/new.db?timeout=5") == "sqlite:///sub/new.db?timeout=5"
    assert journal_mode("sqlite:///sub/new.db") == "wal"
    assert (tmp_path / "sub" / "new.db").is_file()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://mlflow.internal",
                                 "postgresql://u:p@db/mlflow", "sqlite://", "sqlite:///:memory:",
                                 "databricks"])
def test_other_stores_are_left_alone(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.prepare(uri) == uri
    assert journal_mode(uri) is None
    assert list(tmp_path.iterdir()) == []


def test_a_store_sqlite_cannot_open_is_left_to_mlflow(tmp_path, recwarn):
    (tmp_path / "folder.db").mkdir()   # a folder where the file should be
    (tmp_path / "junk.db").write_bytes(b"this is not an sqlite database" * 100)
    for name in ("folder.db", "junk.db"):
        assert store.prepare(f"sqlite:///{tmp_path / name}") == f"sqlite:///{tmp_path / name}"
    assert len(recwarn) == 0
    assert (tmp_path / "junk.db").read_bytes() == b"this is not an sqlite database" * 100


def test_a_store_sqlite_will_not_switch_keeps_its_mode_with_a_warning(tmp_path, monkeypatch):
    class Declining:   # what SQLite answers where WAL is impossible: the mode it kept
        def execute(self, sql):
            return self

        def fetchone(self):
            return ("delete",)

        def close(self):
            pass
    monkeypatch.setattr(store.sqlite3, "connect", lambda *args, **kwargs: Declining())
    with pytest.warns(UserWarning) as warned:
        assert store.prepare(f"sqlite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"
    message = str(warned[0].message)
    assert all(named in message for named in (f"{tmp_path}/a.db", "delete", "WAL")), message


def test_blocked_passes_a_writable_store_and_creates_nothing(fresh, tmp_path):
    uri, path = fresh
    assert store.blocked(path) is None and store.blocked(path, write=False) is None
    assert store.blocked(tmp_path / "new.db") is None and not (tmp_path / "new.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="the superuser ignores file permissions")
def test_blocked_names_what_sqlite_cannot_write(fresh):
    """A read-only file, or a read-only folder (SQLite writes -wal, -shm, -journal there; a
    reader of a store in WAL mode writes -shm), as (why, the paths to make writable)."""
    uri, path = fresh
    folder = path.parent
    folder.chmod(0o555)
    try:
        why, paths = store.blocked(path)
        assert str(folder) in why and "read-only" in why and paths == [folder]
        why, paths = store.blocked(path, write=False)
        assert why.startswith("SQLite: ") and paths == [folder]
    finally:
        folder.chmod(0o755)
    path.chmod(0o444)
    why, paths = store.blocked(path)
    assert "read-only" in why and str(folder) not in why and paths == [path]
    assert store.blocked(path, write=False) is None   # a reader needs only the folder


def test_readers_and_a_writer_do_not_wait_for_each_other(fresh):
    """The rollback journal's two waits, gone in WAL: a reader during a writer's exclusive lock
    (a commit), and a commit while a reader holds its snapshot (the UI's or `lmpipe compare`'s
    query). Each connection waits at most 0.2 s: both fail with "database is locked" without
    prepare()."""
    uri, path = fresh
    with closing(sqlite3.connect(path, timeout=0.2, isolation_level=None)) as writer, \
            closing(sqlite3.connect(path, timeout=0.2, isolation_level=None)) as reader:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("UPDATE experiments SET last_update_time = 1")
        assert reader.execute("SELECT count(*) FROM experiments").fetchone()[0] == 2
        writer.execute("COMMIT")
        reader.execute("BEGIN")
        assert reader.execute("SELECT last_update_time FROM experiments WHERE name = ?",
                              (EXPERIMENT,)).fetchone()[0] == 1
        writer.execute("UPDATE experiments SET last_update_time = 2")   # autocommit
        assert reader.execute("SELECT last_update_time FROM experiments WHERE name = ?",
                              (EXPERIMENT,)).fetchone()[0] == 1     # its snapshot
        reader.execute("COMMIT")
    assert run_search.pipeline_runs(uri, EXPERIMENT) == []   # a reader of a WAL store


WORKERS, RUNS = 4, 6


def _worker(uri: str, worker: int, start, errors) -> None:
    """RUNS pipeline runs (params, metrics per step, tags) each registering a version of MODEL,
    as a queue worker's evaluate does; exceptions go to `errors`."""
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        start.wait()
        for k in range(RUNS):
            run = client.create_run(experiment, run_name=f"w{worker}-{k}",
                                    tags={run_search.ROLE: "pipeline", "worker": str(worker)})
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(f"p{j}", str(j)) for j in range(20)],
                             metrics=[Metric("loss", 1 / (s + 1), 0, s) for s in range(10)])
            client.log_metric(run_id, "test_ppl", 100.0 + k)
            version = client.create_model_version(MODEL, source=f"/w{worker}/{k}", run_id=run_id)
            client.set_model_version_tag(MODEL, version.version, "run", run_id)
            client.set_terminated(run_id, "FINISHED")
    except BaseException as error:
        errors.put(f"worker {worker}: {type(error).__name__}: {error}")
        raise


def test_four_processes_write_one_store_without_losing_or_duplicating(fresh):
    """Passes on the rollback journal too: MLflow's busy_timeout (20 s) serializes writers; WAL
    shortens their waits. The counts must be exact either way."""
    uri, _ = fresh
    context = multiprocessing.get_context("fork")   # mlflow already imported: fast starts
    start, errors = context.Barrier(WORKERS), context.Queue()
    workers = [context.Process(target=_worker, args=(uri, w, start, errors))
               for w in range(WORKERS)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    failures = [errors.get() for _ in range(errors.qsize())]
    assert failures == [] and [p.exitcode for p in workers] == [0] * WORKERS
    runs = run_search.pipeline_runs(uri, EXPERIMENT, limit=1000)   # every process has closed
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"w{w}-{k}" for w in range(WORKERS) for k in range(RUNS))
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(len(r.data.metrics) == 2 for r in runs)
    versions = MlflowClient(uri).search_model_versions(f"name = '{MODEL}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, WORKERS * RUNS + 1))
    assert sorted(v.tags["run"] for v in versions) == sorted(r.info.run_id for r in runs)
    assert journal_mode(uri) == "wal"


def test_a_store_of_a_newer_mlflow_is_named_with_advice_that_works(template, tmp_path, capsys):
    """mlflow/mlflow#6703: MLflow's own advice, `mlflow db upgrade`, fails there (Can't locate
    revision); lmpipe names the store, the revision, and a move that gives a new store."""
    from pipeline.cli.main import main
    from pipeline.tracking import mlflow_runs
    path, uri = tmp_path / "mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}"
    shutil.copy(template, path)
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    with pytest.raises(SystemExit) as exited:
        main(["compare", "--tracking-uri", uri, "--experiment", EXPERIMENT])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1, lines
    move = f"mv {path} {path}.newer"
    assert all(named in lines[0] for named in (f"--tracking-uri {uri}", "newer MLflow", "f00dfeedbeef",
                                                f"`{move}`")), lines[0]
    subprocess.run(move, shell=True, check=True)
    mlflow_runs.check_store(uri, EXPERIMENT)   # a new store
    assert MlflowClient(uri).get_experiment_by_name("Default") is not None


def test_a_store_of_an_older_mlflow_is_upgraded_by_mlflow_on_opening(template, tmp_path):
    """Each MLflow 3.17 migration past a store's adds a table, so MLflow upgrades it when it opens
    it (mlflow.store.db.utils._all_tables_exist): its advice, `mlflow db upgrade`, never shows."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    from pipeline.tracking import mlflow_runs
    path, uri = tmp_path / "mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}"
    shutil.copy(template, path)
    config = _get_alembic_config(uri)
    command.downgrade(config, "-1")
    with closing(sqlite3.connect(path)) as connection:
        older = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert older != _get_latest_schema_revision()
    mlflow_runs.check_store(uri, EXPERIMENT)
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == \
            _get_latest_schema_revision()
