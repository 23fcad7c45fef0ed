"""The MLflow store and the resume state under hostile edits (issue 18), on copies of the one
small trained pipeline of test_damaged_state.py: a read-only store or folder, tracking URIs that
name no usable store, run ids that are not strings, a checkpoint of another architecture. Each
stage either recovers, saying so in one line, or stops with exit status 2 and one line
`lmpipe: error: ...` naming the thing and the fix: no traceback, no library's log, nothing
produced before lost, and no hang (every stage runs under a deadline)."""
import json
import os
import shutil
import signal
import sqlite3
import threading
from contextlib import closing, contextmanager

import pytest
import requests
import sqlalchemy
import torch
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.pool import NullPool

from pipeline import errors
from pipeline.neural import resume
from pipeline.tracking import mlflow_runs, store

from .conftest import checkpoint_folder, checkpoint_folders
from .test_damaged_state import _stage, trained  # noqa: F401

ROOT_USER = os.geteuid() == 0   # the superuser writes read-only files: nothing to refuse


class Hung(BaseException):
    """Raised by SIGALRM in a check that would otherwise hang: not an Exception, which MLflow's
    retry loops (and errors.guard) catch."""


@contextmanager
def deadline(seconds: int = 120):
    def alarm(signum, frame):
        raise Hung(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def repo(trained, tmp_path, monkeypatch):  # noqa: F811
    """A copy of the trained pipeline (test_damaged_state.py), the cwd, with its own mlflow.db."""
    copy = tmp_path / "repo"
    shutil.copytree(trained, copy)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("LMPIPE_CHECKPOINTS", str(copy / "ckpt"))
    for key in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "LMPIPE_DEBUG", "LMPIPE_VERBOSE"):
        monkeypatch.delenv(key, raising=False)
    return copy


def _outputs(repo):
    return {p: p.read_bytes() for folder in ("data", "models", "metrics", "ckpt")
            for p in (repo / folder).rglob("*") if p.is_file()}


def names(line: str, *things: str) -> None:
    """Each thing (a file, a URI, a variable, a word of the fix) stands in the line."""
    missing = [thing for thing in things if thing not in line]
    assert not missing, (missing, line)


def _refused(capsys, stage: str, repo, *named: str) -> str:
    """Run `stage` on `repo`: exit status 2, one line on stderr naming each of `named` (and no
    traceback: _stage), every file of data/, models/, metrics/ and the checkpoints unchanged."""
    before = _outputs(repo)
    with deadline():
        status, out, err = _stage(capsys, stage)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, (out, err)
    assert lines[0].startswith("lmpipe: error: "), lines[0]
    names(lines[0], *named)
    assert _outputs(repo) == before
    return lines[0]


# ---- 1. a store that cannot be written -------------------------------------------------------

@pytest.mark.skipif(ROOT_USER, reason="the superuser ignores file permissions")
@pytest.mark.parametrize("stage", ["train", "evaluate", "promote"])
def test_a_read_only_store_is_refused_before_any_work(repo, capsys, stage):
    (repo / "mlflow.db").chmod(0o444)
    assert (checkpoint_folder("gru") / "best.ckpt").is_file()
    _refused(capsys, stage, repo, "mlflow.db", "read-only", "chmod u+w", "mlflow.tracking_uri")
    assert sorted(p.name for p in checkpoint_folder("gru").iterdir()) == [
        "best.ckpt", "last.ckpt", "resume.json"]


@pytest.mark.skipif(ROOT_USER, reason="the superuser ignores file permissions")
def test_a_store_in_a_read_only_folder_is_refused(repo, capsys, monkeypatch):
    folder = repo / "store"
    folder.mkdir()
    (repo / "mlflow.db").rename(folder / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    folder.chmod(0o555)
    try:
        _refused(capsys, "train", repo, "store/mlflow.db", "mlflow.db-wal", f"chmod u+w {folder}",
                 "MLFLOW_TRACKING_URI")
        with pytest.raises(errors.StateError, match=r"mlflow\.db-shm"):
            mlflow_runs.check_store(f"sqlite:///{folder / 'mlflow.db'}", "lmpipe",
                                    source="--tracking-uri", writable=False)
    finally:
        folder.chmod(0o755)


def test_what_the_system_denies_is_named_and_the_checkpoints_are_kept(repo, capsys, monkeypatch):
    """As the tests above, for any user: os.access says no (a read-only mount, an ACL)."""
    denied, access = (repo / "mlflow.db").resolve(), os.access
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.realpath(path) != str(denied)
                        and access(path, mode))
    _refused(capsys, "train", repo, "mlflow.db", "read-only")
    assert (checkpoint_folder("gru") / "last.ckpt").is_file()


def test_a_store_that_fails_after_the_check_keeps_the_checkpoints(repo, capsys, monkeypatch):
    """The checkpoints of a finished training go only once the store has taken the new run."""
    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(repo / "mlflow.db"))
    monkeypatch.setattr(mlflow_runs, "setup", refused)
    _refused(capsys, "train", repo, "mlflow.db", "Permission denied")
    assert (checkpoint_folder("gru") / "best.ckpt").is_file()


def test_the_store_check_writes_nothing_and_blocked_judges_a_writable_store(tmp_path):
    path = tmp_path / "mlflow.db"
    assert store.blocked(path) is None and not path.exists()   # a new store: its folder is open
    store.prepare(f"sqlite:///{path}")
    assert store.blocked(path) is None and store.blocked(path, write=False) is None


# ---- 2. tracking URIs that name no usable store ------------------------------------------------

URIS = [   # (the URI, what else the line names)
    ("sqlite:///", ("database file",)),
    ("sqlite:///:memory:", ("database file",)),
    ("sqlite:///data", ("/data", "folder")),
    ("sqlite:///nonexistent/dir/x.db", ("/nonexistent/dir", "mkdir -p")),
    ("foo://x", ()),
    ("./mlruns", ()),
    ("http://", ("host",)),
    ("http://localhost:99999", ("port",)),
    ("postgresql+nosuch://u@h/db", ("SQLAlchemy",)),
    ("databricks", ("DATABRICKS_HOST", "DATABRICKS_TOKEN")),
]


@pytest.mark.parametrize("uri,named", URIS, ids=[u for u, _ in URIS])
def test_a_tracking_uri_that_names_no_usable_store_gets_one_line(repo, capsys, monkeypatch, uri,
                                                                  named):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HOME", str(repo))   # no ~/.databrickscfg
    for key in [k for k in os.environ if k.startswith("DATABRICKS_")]:
        monkeypatch.delenv(key)
    line = _refused(capsys, "promote", repo, f"MLFLOW_TRACKING_URI={uri}", *named)
    names(line, "unset MLFLOW_TRACKING_URI", "sqlite:///mlflow.db", "databricks")   # the forms that work
    assert not (repo / "nonexistent").exists()   # nothing created


def test_a_database_url_without_its_driver_names_it_and_hides_the_password(repo, capsys,
                                                                           monkeypatch):
    import importlib.util
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u:secret@h/db")
    line = _refused(capsys, "promote", repo, "MLFLOW_TRACKING_URI=postgresql://u:***@h/db", "psycopg",
                    "pip install psycopg[binary]")
    assert "secret" not in line


def test_the_source_of_the_uri_is_named(repo, monkeypatch, capsys):
    """An argument (lmpipe compare --tracking-uri) or params.yaml, not MLFLOW_TRACKING_URI."""
    with pytest.raises(errors.StateError, match=r"^--tracking-uri foo://x ") as raised:
        mlflow_runs.check_store("foo://x", "lmpipe", source="--tracking-uri")
    names(str(raised.value), "--tracking-uri sqlite:///PATH")
    with pytest.raises(errors.StateError, match=r"^--tracking-uri sqlite:///nope\.db .*nope\.db"):
        mlflow_runs.check_store("sqlite:///nope.db", "lmpipe", source="--tracking-uri",
                                writable=False)
    assert not (repo / "nope.db").exists()
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("sqlite:///mlflow.db", "sqlite:///data"))
    line = _refused(capsys, "evaluate", repo, "mlflow.tracking_uri='sqlite:///", "/data'", "params.yaml",
                    "folder", "sqlite:///PATH")
    assert line.startswith("lmpipe: error: mlflow.tracking_uri=")


def test_a_server_that_never_answers_is_given_up_in_bounded_time(monkeypatch):
    """requests' timeout bounds each socket operation, not a DNS lookup or a trickling answer:
    the check as a whole is bounded."""
    import time

    import requests
    monkeypatch.setattr(requests, "get", lambda *args, **kwargs: time.sleep(30))
    with deadline(20), pytest.raises(errors.StateError) as raised:
        mlflow_runs.check_store("http://mlflow.internal:5000", "lmpipe", timeout=1)
    names(str(raised.value), "http://mlflow.internal:5000", "TimeoutError", "lmpipe mlflow-server")


# ---- 3. run ids that are not strings -------------------------------------------------------------

def test_a_resume_json_whose_run_id_is_not_a_string_starts_afresh(repo, capsys):
    state_file = checkpoint_folder("gru") / "resume.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "run_id": 5}))
    with deadline():
        status, out, err = _stage(capsys, "train")
    assert status == 0 and err == "", err
    names(out, str(state_file), "run_id is 5", "afresh")
    assert checkpoint_folders("gru") == []   # the training completed: its folder is gone


@pytest.mark.parametrize("run_id", [5, ["a", "b"]])
def test_a_run_json_whose_run_id_is_not_a_string_goes_to_a_new_run(repo, capsys, run_id):
    (repo / "models" / "gru" / "run.json").write_text(json.dumps({"run_id": run_id}))
    with deadline():
        status, out, err = _stage(capsys, "evaluate")
    assert status == 0 and err == "", err
    names(out, "models/gru/run.json", "run_id", "new run")


# ---- 4. a checkpoint of another architecture ---------------------------------------------------

def _resume_edited(repo, capsys, edit) -> tuple[str, str]:
    """Edit the state_dict of gru's last.ckpt (edit(state_dict) -> the key changed), run train;
    (the key, its stdout). Train must start afresh once, saying so, and finish (not stuck
    resuming the same checkpoint at every rerun)."""
    folder = checkpoint_folder("gru")
    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    key = edit(checkpoint["state_dict"])
    torch.save(checkpoint, folder / "last.ckpt")
    with deadline():
        status, out, err = _stage(capsys, "train")
    assert status == 0 and err == "", err
    assert checkpoint_folders("gru") == []   # finished, its folder removed: not stuck
    return key, out


def test_a_checkpoint_of_another_architecture_starts_afresh_once(repo, capsys):
    shapes = {}

    def wider(state_dict):
        key = next(k for k in state_dict if k.startswith("model.") and state_dict[k].dim() == 2)
        shapes["old"] = list(state_dict[key].shape)
        state_dict[key] = torch.zeros(shapes["old"][0] * 2, shapes["old"][1])   # another hidden size
        return key
    key, out = _resume_edited(repo, capsys, wider)
    rows, columns = shapes["old"]
    names(out, "/last.ckpt", key, f"[{rows * 2}, {columns}]", f"[{rows}, {columns}]",
          "params.yaml", "afresh")


def test_a_checkpoint_with_nan_weights_starts_afresh_once(repo, capsys):
    """A NaN resumed from last.ckpt would be blamed on train.lr, and every rerun would resume it
    again; the checkpoint is judged damaged instead."""
    def poisoned(state_dict):
        key = next(k for k in state_dict if k.startswith("model."))
        state_dict[key].view(-1)[0] = float("nan")
        return key
    key, out = _resume_edited(repo, capsys, poisoned)
    names(out, "/last.ckpt", "NaN", key, "afresh")


def test_a_params_change_starts_afresh_without_judging_the_old_checkpoints(repo, capsys):
    folder = checkpoint_folder("gru")   # an interrupted training's
    params = (repo / "params.yaml").read_text()
    assert "hidden_dim: 8" in params
    (repo / "params.yaml").write_text(params.replace("hidden_dim: 8", "hidden_dim: 12"))
    with deadline():
        status, out, err = _stage(capsys, "train")
    assert status == 0 and err == "", err
    assert "cannot resume" not in out and "resuming" not in out, out
    assert checkpoint_folders("gru") == [folder]   # the other training's kept, the new one's gone


# ---- 5. one parser, one message ----------------------------------------------------------------

def test_one_parser_of_sqlite_uris_and_one_server_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.database("sqlite:///a/b.db?timeout=5") == store.database("sqlite:///a/b.db")
    with pytest.raises(errors.StateError) as raised:   # a reader's store is never created
        mlflow_runs.check_store("sqlite:///a/b.db?timeout=5", "lmpipe", source="--tracking-uri",
                                writable=False)
    names(str(raised.value), "a/b.db", "no such folder")
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    line, status = errors.one_line(requests.ConnectionError("Max retries exceeded with url: /api"))
    assert status == 2
    assert line == errors.server_down("http://127.0.0.1:1", "ConnectionError: Max retries "
                                                            "exceeded with url: /api")


def _wrapped(url: str, sql: str) -> MlflowException:
    """What SQLAlchemy raises for `sql` on `url`, wrapped as MLflow's store does (`from e`) in a
    message that names nothing."""
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 0}, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    except sqlalchemy.exc.DBAPIError as error:
        wrapped = MlflowException("the store failed")
        wrapped.__cause__ = error
        return wrapped
    raise AssertionError(f"{sql} on {url} did not fail")


def test_tracking_failures_are_told_by_the_types_along_the_chain(tmp_path, monkeypatch):
    """A server that does not answer (MLflow's REST client keeps requests' error as the context)
    and SQLite's BUSY, READONLY, CANTOPEN and NOTADB (SQLAlchemy's .orig) each get their line."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as raised:
        MlflowClient("http://127.0.0.1:1").search_experiments()
    line, status = errors.one_line(raised.value)
    assert status == 2 and line.startswith("the MLflow tracking server http://127.0.0.1:1 "), line
    path, garbage = tmp_path / "s.db", tmp_path / "garbage.db"
    garbage.write_bytes(b"not an sqlite database" * 100)
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE t (x)")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
        for url, sql, named in [
            (f"sqlite:///file:{path}?mode=ro&uri=true", "INSERT INTO t VALUES (1)", "chmod u+w"),
            (f"sqlite:///file:{tmp_path}/none.db?mode=ro&uri=true", "SELECT 1", "chmod u+w"),
            (f"sqlite:///{garbage}", "SELECT * FROM sqlite_master", "damaged"),
        ]:
            line, status = errors.one_line(_wrapped(url, sql))
            names(line, f"sqlite:///{path}", named)
            assert status == 2
        holder.execute("BEGIN EXCLUSIVE")
        line, status = errors.one_line(_wrapped(f"sqlite:///{path}", "SELECT * FROM t"))
        names(line, "mlflow.db", "dvc queue start -j")


# ---- 6. checkpoint folders outside the repository ------------------------------------------------

def test_old_checkpoint_folders_go_beyond_three_but_never_a_held_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPIPE_CHECKPOINTS", str(tmp_path))
    folders = [resume.folder("gru", f"{k:016x}") for k in range(6)]   # oldest first
    other = resume.folder("birnn", "0" * 16)
    for age, folder in enumerate([other, *folders]):
        folder.mkdir(parents=True)
        os.utime(folder, (age, age))
    held = FileLock(f"{folders[0]}.lock")
    with held:   # a live training's
        resume.prune(folders[-1])
    assert sorted(checkpoint_folders("gru")) == [folders[0], *folders[3:]]
    assert other.is_dir()


def test_a_second_training_of_one_fingerprint_waits_for_the_first(tmp_path):
    folder, said = tmp_path / "gru-0123456789abcdef", []
    with resume.hold(folder, print):
        waiter = threading.Thread(target=lambda: resume.hold(folder, said.append).__enter__())
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and len(said) == 1, said
        names(said[0], f"{folder}.lock", "waiting")
    waiter.join(10)
    assert not waiter.is_alive()
