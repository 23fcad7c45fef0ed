"""A repository moved (`mv repo repo2`) or copied with its embedded store (mlflow/mlflow#3144,
#4400: MLflow records artifact locations as absolute file URIs): evaluate, compare, promote and
`models:/lmpipe-gru@champion` all use the artifacts under the repository's new path, and the old
path is not created again. A store that other repositories' runs share keeps their locations."""
import multiprocessing
import os
import shutil
import sqlite3
from contextlib import closing

import mlflow
import pytest

from pipeline.cli.main import main
from pipeline.tracking import store

from .test_damaged_state import _stage, trained  # noqa: F401

COLUMNS = [("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"),
           ("model_versions", "storage_location"), ("logged_models", "artifact_location")]


def _locations(db) -> set[str]:
    """Every artifact location the store records (file URIs, and models:/ sources) but that of
    MLflow's Default experiment (<the cwd that created the store>/mlruns/0, which lmpipe never uses)."""
    with closing(sqlite3.connect(db)) as connection:
        return {value for table, column in COLUMNS for (value,) in connection.execute(
            f"SELECT {column} FROM {table}" + (" WHERE name != 'Default'" if table == "experiments" else ""))}


def _mlartifacts(root) -> str:
    return (root / "mlartifacts").resolve().as_uri()


@pytest.fixture
def moved(trained, tmp_path, monkeypatch):  # noqa: F811
    """A copy of the trained pipeline whose store was first used there (so it points at the
    copy), then moved: (old path, new path); the new one is the cwd."""
    for key in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "LMPIPE_DEBUG", "LMPIPE_VERBOSE"):
        monkeypatch.delenv(key, raising=False)
    old, new = tmp_path / "repo", tmp_path / "repo2"
    shutil.copytree(trained, old)
    monkeypatch.chdir(old)
    store.prepare(f"sqlite:///{old / 'mlflow.db'}")   # a copy's first use: its own mlartifacts
    assert {_mlartifacts(old)} == {u[:len(_mlartifacts(old))] for u in _locations(old / "mlflow.db")
                                  if u.startswith("file:")}
    old.rename(new)
    monkeypatch.chdir(new)
    monkeypatch.setenv("LMPIPE_CHECKPOINTS", str(new / "ckpt"))
    return old, new


def test_a_moved_repository_logs_compares_promotes_and_serves_from_its_new_path(moved, capsys):
    old, new = moved
    main(["compare"])   # the execution logged before the move: its report/pairs.json
    assert "warning" not in capsys.readouterr().err
    for stage in ("evaluate", "promote"):
        status, out, err = _stage(capsys, stage)
        assert status == 0, (stage, out, err)
    assert not old.exists()
    here = _mlartifacts(new)
    assert [u for u in _locations(new / "mlflow.db")
            if not (u.startswith(here + "/") or u == here or u.startswith("models:/"))] == []
    mlflow.set_tracking_uri(f"sqlite:///{new / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model("models:/lmpipe-gru@champion")
        assert len(model.predict(["the cat saw the fox ."])) == 1
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert not old.exists()


def test_locations_of_other_repositories_and_stores_outside_the_repository_stay(moved, tmp_path,
                                                                                 monkeypatch):
    """Only the store inside the repository is rewritten, and only the prefix whose runs' folders
    the repository's mlartifacts/ holds (another repository's runs logged into it stay)."""
    old, new = moved
    db = new / "mlflow.db"
    other = (tmp_path / "elsewhere" / "mlartifacts").as_uri()
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("INSERT INTO experiments (name, artifact_location, lifecycle_stage) "
                           "VALUES ('theirs', ?, 'active')", (other,))
    outside = tmp_path / "outside.db"
    shutil.copy(db, outside)
    before = _locations(outside)
    store.prepare(f"sqlite:///{outside}")   # not inside the repository (the cwd): left alone
    assert _locations(outside) == before
    store.prepare(f"sqlite:///{db}")
    after = _locations(db)
    assert other in after and not any(u.startswith(_mlartifacts(old)) for u in after)
    monkeypatch.setattr(store, "_prepared", set())   # another process: nothing left to do
    store.prepare(f"sqlite:///{db}")
    assert _locations(db) == after


def _prepare(uri: str, start, failures) -> None:
    try:
        start.wait()
        store.prepare(uri)
    except BaseException as error:
        failures.put(f"{type(error).__name__}: {error}")
        raise


def test_parallel_stages_of_a_moved_repository_rewrite_its_store_once(moved):
    """DVC's queue starts stages at once against one store: each rewrite is one transaction and
    finds nothing left to do after another's."""
    old, new = moved
    context = multiprocessing.get_context("fork")
    start, failures = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_prepare, args=(f"sqlite:///{new / 'mlflow.db'}", start, failures))
               for _ in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [failures.get() for _ in range(failures.qsize())] == []
    assert [p.exitcode for p in workers] == [0] * 4
    here = _mlartifacts(new)
    assert all(u.startswith((here, "models:/")) for u in _locations(new / "mlflow.db"))
    assert not any(u.startswith(_mlartifacts(old)) for u in _locations(new / "mlflow.db"))
