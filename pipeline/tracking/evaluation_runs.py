"""Evaluate, logged. In: params, data/prepared, models/ (evaluation/run.py scores them into
metrics/). Out: in MLflow, one parent run for this pipeline execution with one nested run per
model (its metrics, unit_scores.npz, the model as a registered pyfunc); metrics/registry.json.
An unusable store or models/KIND/run.json is refused before any scoring."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from pipeline import config, files
from pipeline.evaluation import report, run
from pipeline.tracking import mlflow_runs, registry, store
from pipeline.tracking.promotion import UNIT_SCORES


def _best_step(history: list[dict] | None) -> int:
    """The training step of model.pt's epoch (lowest val_ppl); 0 without a history (n-gram)."""
    return min(history, key=lambda h: h["val_ppl"]).get("step", 0) if history else 0


def training_run(uri: str, path: Path) -> str | None:
    """The run id of models/KIND/run.json if the store holds it, else None, saying so (new run)."""
    run_id = files.read_json(path, path.parent).get("run_id")
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


def evaluate(params: config.Params, data: Path, models: Path, out: Path) -> None:
    """Check the store, read every input, score and write metrics/, then log it all."""
    root = store.repo_root()
    uri = store.tracking_uri(params.mlflow, root)
    mlflow_runs.check_store(uri, params.mlflow.experiment)   # before minutes of scoring
    found = run.load(params, data, models, root)
    run_ids = {kind: training_run(uri, models / kind / "run.json") for kind in params.models}
    done = run.evaluate(params, found, models, out)
    with tempfile.TemporaryDirectory() as scratch:
        log(params, data, out, uri, root, done, run_ids, Path(scratch))


def log(params: config.Params, data: Path, out: Path, uri: str, root: Path, done: run.Evaluation,
        run_ids: dict[str, str | None], scratch: Path) -> None:
    """The pipeline run and its model runs; metrics/registry.json names the versions registered."""
    c, experiment = params.corpus, params.mlflow.experiment
    (scratch / "corpus.json").write_text(json.dumps(
        {"tokenizer": c.tokenizer, "lowercase": c.lowercase, "unk": c.unk}))
    shared_files = {"vocab": str(data / "vocab.json"), "corpus": str(scratch / "corpus.json")}
    test_set = report.test_set(done.stats, params.seed, params.split.model_dump(),
                               c.model_dump(), data)
    tags = {"corpus": c.source, "corpus_hash": done.stats["corpus_hash"],
            **mlflow_runs.git_tags(root), "test_set": test_set["id"]}
    mlflow_runs.reap_orphans(uri, experiment, print)
    parent = mlflow_runs.start_pipeline(uri, experiment, root, params.model_dump(), tags,
                                        mlflow_runs.execution_name(tags, c.source))
    registered = {}
    try:
        for name, result in done.results.items():
            run_id, version = _log_model(params, uri, root, parent, name, result, done, run_ids.get(name),
                                         shared_files, test_set, tags, scratch)
            if version is not None:
                registered[name] = {"model": f"lmpipe-{name}", "version": version, "run_id": run_id,
                                    "test_set": test_set}
                print(f"evaluate: {name}: registered as lmpipe-{name} v{version}", flush=True)
    except BaseException as error:   # a signal or Ctrl-C: KILLED; an error: FAILED
        mlflow_runs.finish_pipeline(uri, parent, [], status=mlflow_runs.end_status(error))
        raise
    (out / "registry.json").write_text(json.dumps(registered, indent=2))
    mlflow_runs.finish_pipeline(uri, parent, done.artifacts)
    print(f"evaluate: logged pipeline run {parent} and {len(done.results)} model runs to {uri}",
          flush=True)


def _log_model(params: config.Params, uri: str, root: Path, parent: str, name: str, result: dict,
               done: run.Evaluation, training: str | None, shared_files: dict[str, str],
               test_set: dict, tags: dict, scratch: Path) -> tuple[str, str | None]:
    """One model's nested run (the pipeline run's `tags` and its own): (run id, version or None)."""
    scored, register = done.scored[name], params.evaluate.register_models
    weights = scored.lm.path
    tags = {"model_kind": name, **tags, "objective": result["objective"]}
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float)}
    unit_scores = scratch / name / UNIT_SCORES   # the paired bootstrap of promotion reads it
    unit_scores.parent.mkdir()
    np.savez(unit_scores, nll=scored.sums["test"]["nll"], tokens=scored.sums["test"]["tokens"])
    return registry.log_model_run(
        uri, params.mlflow.experiment, root, name, parent, training,
        {**scored.lm.params(), "model_name": name, "model_kind": name}, metrics, tags,
        {scored.lm.artifact: str(weights), **shared_files} if register else None, register=register,
        model_hash=hashlib.sha256(weights.read_bytes()).hexdigest()[:16],
        test_set=test_set, step=_best_step(done.histories.get(name)), artifacts=[str(unit_scores)])
