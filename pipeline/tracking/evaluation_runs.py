"""Evaluate, logged. In: params, data/prepared, models/ (evaluation/run.py scores them into
metrics/). Out: an MLflow parent run per pipeline execution, a nested run per model; metrics/
registry.json. Errors: an unusable store or models/KIND/run.json, before any scoring."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from pipeline import config, files
from pipeline.evaluation import run
from pipeline.tracking import mlflow_runs, registry, run_search, store
from pipeline.tracking.promotion import UNIT_SCORES


def training_run(uri: str, path: Path) -> str | None:
    """The run id of models/KIND/run.json if the store holds it, else None, saying so (new run)."""
    run_id = files.read_json(path).get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        print(f"lmpipe: {path} is damaged (run_id is {json.dumps(run_id)[:40]}, not an MLflow run "
              "id); the model's results go to a new run", flush=True)
        return None
    if run_id and mlflow_runs.active_run(uri, run_id) is None:
        print(f"lmpipe: {path} names MLflow run {run_id}, which {uri} no longer holds (deleted, "
              "or another store); the model's results go to a new run (`mlflow runs restore "
              "--run-id` brings a deleted one back for later runs)", flush=True)
        return None
    return run_id


def test_set_of(params: config.Params, stats: dict, data: Path) -> dict[str, str]:
    """What a test perplexity is of: corpus hash, split, tokenizer, SHA-256 (12 hex digits) of
    vocab.json and test.npy, and "id" of them all; numbers compare only under equal ids."""
    s, c = params.split, params.corpus
    method = stats.get("split_method", s.method)
    fields = {
        "corpus": stats["corpus_hash"],
        "split": "given" if method == "given" else (   # contiguous draws nothing: no seed
            f"{method}{'' if method == 'contiguous' else f' seed={params.seed}'} "
            f"train={s.train:g} valid={s.valid:g} test={s.test:g}"),
        "tokenizer": f"{c.tokenizer} lowercase={str(c.lowercase).lower()} unk={c.unk or 'none'}",
        "vocab": files.sha256(data / "vocab.json", 12), "test_tokens": files.sha256(data / "test.npy", 12)}
    return {**fields, "id": hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]}


def mixture_metrics(mixed: dict[str, dict]) -> dict[str, float]:
    """The parent run's metrics of interpolation.json's entries (run_search.mixtures reads them;
    MLflow's metric names allow no "+")."""
    return {f"{run_search.MIXTURE}{result['rnn']}.{key}": float(value) for result in mixed.values()
            for key, value in result.items() if isinstance(value, int | float)}


def evaluate(params: config.Params, data: Path, models: Path, out: Path) -> None:
    """Score into `out`; each model run: metrics at model.pt's step, UNIT_SCORES, the pyfunc."""
    root, c, experiment = files.repo_root(), params.corpus, params.mlflow.experiment
    uri = store.tracking_uri(params.mlflow, root)
    mlflow_runs.check_store(uri, experiment)   # before minutes of scoring
    found = run.load(params, data, models, root)
    run_ids = {kind: training_run(uri, models / kind / "run.json") for kind in params.models}
    done = run.evaluate(params, found, out)
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.json"
        corpus.write_text(json.dumps({"tokenizer": c.tokenizer, "lowercase": c.lowercase, "unk": c.unk}))
        shared_files = {"vocab": str(data / "vocab.json"), "corpus": str(corpus)}
        test_set = test_set_of(params, found.stats, data)
        tags = {"corpus": c.source, "corpus_hash": found.stats["corpus_hash"],
                **mlflow_runs.git_tags(root), "test_set": test_set["id"]}
        mlflow_runs.reap_orphans(uri, experiment, print)
        parent = mlflow_runs.start_pipeline(uri, experiment, root, params.model_dump(), tags,
                                            mlflow_runs.execution_name(tags, c.source))
        registered = {}
        try:
            for name, result in done.results.items():
                scored, history = done.scored[name], found.histories.get(name)
                unit_scores = Path(scratch) / name / UNIT_SCORES   # promotion's paired bootstrap
                unit_scores.parent.mkdir()
                np.savez(unit_scores, nll=scored.sums["test"]["nll"],
                         tokens=scored.sums["test"]["tokens"])
                run_id, version = registry.log_model_run(
                    uri, experiment, root, name, parent, run_ids.get(name),
                    {**scored.lm.params(), "model_name": name, "model_kind": name},
                    {k: v for k, v in result.items() if isinstance(v, int | float)},
                    {"model_kind": name, **tags, "objective": result["objective"]},
                    {scored.lm.artifact: str(scored.lm.path), **shared_files}
                    if params.evaluate.register_models else None,
                    model_hash=files.sha256(scored.lm.path, 16),
                    test_set=test_set, artifacts=(str(unit_scores),),   # n-gram: no history, step 0
                    step=min(history, key=lambda h: h["val_ppl"]).get("step", 0) if history else 0)
                if version is not None:
                    registered[name] = {"model": f"lmpipe-{name}", "version": version,
                                        "run_id": run_id, "test_set": test_set}
                    print(f"evaluate: {name}: registered as lmpipe-{name} v{version}", flush=True)
        except BaseException as error:   # a signal or Ctrl-C: KILLED; an error: FAILED
            mlflow_runs.end_run(uri, parent, mlflow_runs.end_status(error))
            raise
    (out / "registry.json").write_text(json.dumps(registered, indent=2))
    mlflow_runs.finish_pipeline(uri, parent, done.artifacts, mixture_metrics(done.mixed))
    print(f"evaluate: logged pipeline run {parent} and {len(done.results)} model runs to {uri}",
          flush=True)
