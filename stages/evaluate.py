"""Stage evaluate: data/prepared + models/ -> metrics/ (metrics.json, mle.json, comparison.md,
memory.md, probes.md, samples.md, plots/) and, in MLflow, one parent run for this pipeline
execution with one nested run per model (same metric keys; the model as a registered pyfunc).
Usage: python -m stages.evaluate data/prepared models metrics"""

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import config, files
from pipeline.evaluation import bootstrap, inputs, report, scoring, tasks
from pipeline.ngram import counting, kneser_ney
from pipeline.text import units
from pipeline.text.tokenizers import tokenize
from pipeline.text.vocab import BOS_ID, check_ids, load_vocab
from pipeline.tracking import mlflow_runs, registry
from pipeline.tracking.promotion import UNIT_SCORES


def _best_step(history: list[dict] | None) -> int:
    """The training step of the epoch whose weights model.pt holds (lowest val_ppl); 0 without
    a history (the n-gram model)."""
    return min(history, key=lambda h: h["val_ppl"]).get("step", 0) if history else 0


def training_run(uri: str, path: Path) -> str | None:
    """The MLflow run id of models/KIND/run.json when the store still holds it (active), else
    None, saying so: the trained model is evaluated and logged to a new run, never discarded."""
    run_id = files.read_json(path, path.parent).get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        print(f"lmpipe: {path} is damaged (run_id is {json.dumps(run_id)[:40]}, not an MLflow run "
              "id); the model's results go to a new run", flush=True)
        return None
    if run_id and not mlflow_runs.run_exists(uri, run_id):
        print(f"lmpipe: {path} names MLflow run {run_id}, which {uri} no longer holds (deleted, "
              "or another store); the model's results go to a new run (`mlflow runs restore "
              "--run-id` brings a deleted one back for later runs)", flush=True)
        return None
    return run_id


def main(data_dir: str, models_dir: str, out_dir: str) -> None:
    params = config.load()
    settings, c = params.evaluate, params.corpus
    data, models, out = Path(data_dir), Path(models_dir), Path(out_dir)
    root = config.repo_root()
    uri = config.tracking_uri(params.mlflow, root)
    mlflow_runs.check_store(uri, params.mlflow.experiment)   # before minutes of scoring
    vocab = load_vocab(data)
    stats = inputs.read_stats(data)
    # memory-mapped: pages are read as scored and stay reclaimable (no private copy)
    splits = {name: files.load_array(data / f"{name}.npy", data, mmap_mode="r")
              for name in ("valid", "test")}
    train_stream = files.load_array(data / "train.npy", data, mmap_mode="r")
    for name, stream in (*splits.items(), ("train", train_stream)):
        check_ids(stream, len(vocab), data / f"{name}.npy", data)

    def encode(text: str) -> np.ndarray:
        return vocab.encode(tokenize(text, c.tokenizer, c.lowercase, c.unk))

    # every probe checked (options one token each) before any scoring
    probes = config.load_probes(root / settings.probes, encode, c.tokenizer)

    blanks = tasks.make_blanks(splits["test"], train_stream, vocab.tokens,
                               settings.blanks, params.seed, settings.distractors)
    lms, results, model_params, run_ids, histories, model_files = {}, {}, {}, {}, {}, {}

    if not (data / units.FILE).is_file():
        raise FileNotFoundError(f"{data / units.FILE}: missing (prepared before lmpipe measured "
                                "resampling units, or deleted); rerun `dvc repro prepare`")
    found = files.load_arrays(data / units.FILE, data,
                              tuple(f"{s}_{f}" for s in splits for f in ("unit", "chars")) +
                              tuple(f"test_{f}" for f in units.FIELDS))
    units.check(found, {s: int(np.count_nonzero(stream == BOS_ID)) for s, stream in splits.items()},
                data / units.FILE, data)
    unit_of = {s: found[f"{s}_unit"] for s in splits}
    text = {field: found[f"test_{field}"] for field in units.FIELDS}
    count = {s: len(found[f"{s}_chars"]) for s in splits}
    sums, fill, objective, model_bytes = {}, {}, {}, {}

    def scored(name: str, lm: tasks.LanguageModel, scores: dict, kind: str, size: int) -> None:
        lms[name], objective[name], model_bytes[name] = lm, kind, size
        sums[name] = {s: scoring.unit_sums(scores[s], splits[s], unit_of[s], count[s]) for s in splits}
        for s in splits:   # a model that loads but scores NaN: refused before anything is written
            inputs.check_finite(name, {f"{s} nll": float(sums[name][s]["nll"].sum())},
                             next(iter(model_files[name].values())))
        fill[name] = tasks.blank_correct(lm, blanks)

    # every model file read and checked before minutes of scoring
    lm = tasks.load_ngram(models / "ngram" / "model.npz", len(vocab))
    counts = counting.from_table(inputs.read_table(models / "ngram" / "counts.parquet"), len(vocab))
    recurrent = {}
    for kind in params.models:
        recurrent[kind] = tasks.load_recurrent(models / kind / "model.pt", len(vocab))
        histories[kind] = inputs.read_history(models / kind / "history.json")

    model_files["ngram"] = {"ngram": str(models / "ngram" / "model.npz")}
    scored("ngram", tasks.NgramModel(lm),
           {s: scoring.ngram_scores(lm, stream) for s, stream in splits.items()}, "causal", lm.nbytes())
    model_params["ngram"] = {"ngram.order": lm.order, "ngram.estimator": "interpolated modified Kneser-Ney",
                             "ngram.discounts": json.dumps(lm.discounts)}
    mle = {f"{name}_{split}": scoring.mle_summary(kneser_ney.mle_probs(counts, stream, n))
           for name, n in (("bigram", 2), ("trigram", 3)) for split, stream in splits.items()}

    for kind, spec in params.models.items():
        model, checkpoint = recurrent[kind]
        model_files[kind] = {"checkpoint": str(models / kind / "model.pt")}
        score = scoring.cloze_scores if spec.bidirectional else scoring.causal_scores
        scored(kind, tasks.RecurrentModel(model), {s: score(model, stream) for s, stream in splits.items()},
               "cloze" if spec.bidirectional else "causal",
               sum(p.numel() * p.element_size() for p in model.parameters()))
        model_params[kind] = mlflow_runs.flatten({"model": checkpoint["config"]})
        run_ids[kind] = training_run(uri, models / kind / "run.json")

    # one bootstrap draw per split, shared by every model and metric: intervals and paired verdicts
    started = time.perf_counter()
    level, resamples = settings.confidence_level, settings.bootstrap_resamples
    replicates = {s: bootstrap.resample_sums(report.columns(sums, s, text if s == "test" else None),
                                             resamples, params.seed + i)
                  for i, s in enumerate(("test", "valid"))}
    fill_replicates = bootstrap.resample_sums(
        {**{n: c.astype(np.float64) for n, c in fill.items()}, "blanks": np.ones(len(blanks))},
        resamples, params.seed + 2)
    for name in sums:
        results[name] = report.metrics(name, sums[name], replicates, text, fill[name],
                                       fill_replicates, stats, model_bytes[name], objective[name], level)
        inputs.check_finite(name, results[name], next(iter(model_files[name].values())))
        print(report.headline(name, results[name]), flush=True)
    pairs = report.comparisons(results, sums, replicates["test"], level)
    for pair in pairs:
        print(f"evaluate: {pair.sentence()}", flush=True)
    print(f"evaluate: {level:.0%} intervals from {resamples:,} bootstrap resamples of "
          f"{count['test']:,} test {stats.get('interval_unit', 'sentences')} in "
          f"{time.perf_counter() - started:.2f} s", flush=True)

    def unknown(text: str) -> list[str]:
        return vocab.unknown(tokenize(text, c.tokenizer, c.lowercase, c.unk))

    def answer(model, probe: dict) -> list[dict]:
        try:
            return tasks.run_probe(model, probe, encode, vocab.tokens, unknown)
        except tasks.ProbeNotApplicable as why:   # e.g. word options under corpus.tokenizer: chars
            return [{"skipped": str(why)}]

    answers = {name: [answer(m, probe) for probe in probes] for name, m in lms.items()}
    samples = {name: [" ".join(vocab.decode(s)) for s in
                      tasks.sample(m, settings.samples, settings.temperature, settings.max_length,
                                   params.seed)]
               for name, m in lms.items() if m.kind == "causal" and settings.samples}
    memory = report.memory_rows(files.read_json(models / "ngram" / "memory.json", models / "ngram", list),
                                {k: int(r["model_bytes"]) for k, r in results.items() if k != "ngram"})
    out.mkdir(parents=True, exist_ok=True)
    (out / "probes.json").write_text(json.dumps(answers, indent=2))
    (out / "samples.json").write_text(json.dumps(samples, indent=2))
    artifacts = report.write(out, results, mle, histories, memory,
                             report.probes_markdown(probes, answers),
                             report.samples_markdown(samples, settings.temperature),
                             len(blanks), settings.distractors + 1, pairs, level, resamples,
                             stats.get("interval_unit", "sentences"))

    scratch = Path(tempfile.mkdtemp())
    (scratch / "corpus.json").write_text(json.dumps(
        {"tokenizer": c.tokenizer, "lowercase": c.lowercase, "unk": c.unk}))
    shared_files = {"vocab": str(data / "vocab.json"), "corpus": str(scratch / "corpus.json")}
    test_set = report.test_set(stats, params.seed, config.as_dict(params.split), config.as_dict(c),
                               data)
    tags = {k: v for k, v in mlflow_runs.run_tags("", params.corpus.source, stats["corpus_hash"],
                                               root).items() if k != "model_kind"}
    tags["test_set"] = test_set["id"]
    for run in mlflow_runs.reap_orphans(uri, params.mlflow.experiment):
        print(f"lmpipe: MLflow run {run} was left RUNNING by a killed process; marked KILLED")
    parent = mlflow_runs.start_pipeline(uri, params.mlflow.experiment, root, config.as_dict(params),
                                        tags, mlflow_runs.execution_name(tags, c.source))
    registered = {}
    try:
        for name, result in results.items():
            tags = mlflow_runs.run_tags(name, params.corpus.source, stats["corpus_hash"], root)
            tags.update(objective=result["objective"], test_set=test_set["id"])
            metrics = {k: v for k, v in result.items() if isinstance(v, int | float)}
            weights = next(iter(model_files[name].values()))
            unit_scores = scratch / name / UNIT_SCORES   # the paired bootstrap of promotion reads it
            unit_scores.parent.mkdir()
            np.savez(unit_scores, nll=sums[name]["test"]["nll"], tokens=sums[name]["test"]["tokens"])
            run_id, version = registry.log_model_run(
                uri, params.mlflow.experiment, root, name, parent, run_ids.get(name),
                {**model_params[name], "model_name": name, "model_kind": name}, metrics, tags,
                {**model_files[name], **shared_files} if settings.register_models else None,
                register=settings.register_models,
                model_hash=hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16],
                test_set=test_set, step=_best_step(histories.get(name)),
                artifacts=[str(unit_scores)])
            if version is not None:
                registered[name] = {"model": f"lmpipe-{name}", "version": version, "run_id": run_id,
                                    "test_set": test_set}
                print(f"evaluate: {name}: registered as lmpipe-{name} v{version}", flush=True)
    except BaseException as error:   # a signal or Ctrl-C: KILLED; an error: FAILED
        mlflow_runs.finish_pipeline(uri, parent, [], status=mlflow_runs.end_status(error))
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (out / "registry.json").write_text(json.dumps(registered, indent=2))
    mlflow_runs.finish_pipeline(uri, parent, artifacts)
    print(f"evaluate: logged pipeline run {parent} and {len(results)} model runs to {uri}", flush=True)


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
