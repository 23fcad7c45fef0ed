"""Stage evaluate: data/prepared + models/ -> metrics/ (metrics.json, mle.json, comparison.md,
plots/) and one MLflow run per model with the same metric keys.
Usage: python -m stages.evaluate data/prepared models metrics"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import config, kneser_ney, ngrams, report, scoring, tracking
from pipeline.rnn import RNNLM


def main(data_dir: str, models_dir: str, out_dir: str) -> None:
    params = config.load()
    data, models, out = Path(data_dir), Path(models_dir), Path(out_dir)
    vocab_size = len(json.loads((data / "vocab.json").read_text())["tokens"])
    stats = json.loads((data / "stats.json").read_text())
    splits = {name: np.load(data / f"{name}.npy") for name in ("valid", "test")}

    results, model_params, run_ids, histories = {}, {}, {}, {}
    lm = kneser_ney.NGramLM.from_arrays(np.load(models / "ngram" / "model.npz"))
    logprobs = {s: scoring.ngram_logprobs(lm, stream) for s, stream in splits.items()}
    results["ngram"] = report.metrics(logprobs, stats, lm.nbytes(), objective="causal")
    model_params["ngram"] = {"ngram.order": lm.order, "ngram.estimator": "interpolated modified Kneser-Ney",
                             "ngram.discounts": json.dumps(lm.discounts)}
    counts = ngrams.from_table(pd.read_parquet(models / "ngram" / "counts.parquet"), vocab_size)
    mle = {f"{name}_{split}": scoring.mle_summary(kneser_ney.mle_probs(counts, stream, n))
           for name, n in (("bigram", 2), ("trigram", 3)) for split, stream in splits.items()}
    print(f"evaluate: ngram {results['ngram']}", flush=True)

    for kind, spec in params.models.items():
        checkpoint = torch.load(models / kind / "model.pt", weights_only=True, map_location="cpu")
        model = RNNLM.from_checkpoint(checkpoint)
        if spec.bidirectional:
            logprobs = {s: scoring.cloze_logprobs(model, stream) for s, stream in splits.items()}
        else:
            logprobs = {s: scoring.causal_logprobs(model, stream) for s, stream in splits.items()}
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        results[kind] = report.metrics(logprobs, stats, param_bytes,
                                       objective="cloze" if spec.bidirectional else "causal")
        model_params[kind] = tracking.flatten({"model": checkpoint["config"]})
        run_ids[kind] = json.loads((models / kind / "run.json").read_text())["run_id"]
        histories[kind] = json.loads((models / kind / "history.json").read_text())
        print(f"evaluate: {kind} {results[kind]}", flush=True)

    memory = report.memory_rows(json.loads((models / "ngram" / "memory.json").read_text()),
                                {k: int(r["model_bytes"]) for k, r in results.items() if k != "ngram"})
    artifacts = report.write(out, results, mle, histories, memory)
    root = config.repo_root()
    uri = config.tracking_uri(params.mlflow, root)
    for name, result in results.items():
        tags = tracking.run_tags(name, params.corpus.source, stats["corpus_hash"], root)
        tags["objective"] = result["objective"]
        metrics = {k: v for k, v in result.items() if isinstance(v, int | float)}
        tracking.log_evaluation(uri, params.mlflow.experiment, name, run_ids.get(name),
                                {**model_params[name], "model_name": name}, metrics, tags, artifacts)
    print(f"evaluate: logged {len(results)} runs to {uri}", flush=True)


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
