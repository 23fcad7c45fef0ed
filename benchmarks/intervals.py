"""What the bootstrap intervals and paired comparisons add to `evaluate`: the five models of the
last `dvc repro` are scored once (as evaluate scores them), then the interval part of evaluate
(one shared draw per split, every metric's interval, every pair) is timed --repeats times, for
the test set's own units (data/prepared/units.npz: KJV chapters by default) and for sentences
as units. Prints JSON lines: the median seconds and, for scale, the seconds scoring took.

    .venv/bin/python benchmarks/intervals.py [--repeats 5] [--resamples 1000]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import config  # noqa: E402
from pipeline.evaluation import bootstrap, report, scoring  # noqa: E402
from pipeline.neural.rnn import RNNLM  # noqa: E402
from pipeline.ngram.backoff import NGramLM  # noqa: E402
from pipeline.text import units  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    params = config.load()
    data, models = Path("data/prepared"), Path("models")
    splits = {s: np.load(data / f"{s}.npy") for s in ("valid", "test")}
    found = dict(np.load(data / units.FILE))
    started = time.perf_counter()
    scores = {"ngram": {s: scoring.ngram_scores(NGramLM.from_arrays(
        np.load(models / "ngram" / "model.npz")), x) for s, x in splits.items()}}
    objective = {"ngram": "causal"}
    for kind, spec in params.models.items():
        model = RNNLM.from_checkpoint(torch.load(models / kind / "model.pt", weights_only=True))
        score = scoring.cloze_scores if spec.bidirectional else scoring.causal_scores
        scores[kind] = {s: score(model, x) for s, x in splits.items()}
        objective[kind] = "cloze" if spec.bidirectional else "causal"
    scoring_seconds = time.perf_counter() - started
    sentences = {s: np.arange(int((x == 1).sum())) for s, x in splits.items()}   # <s> = id 1
    for name, unit_of in (("units.npz", {s: found[f"{s}_unit"] for s in splits}),
                          ("sentences", sentences)):
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            count = {s: int(unit_of[s].max()) + 1 for s in splits}
            sums = {m: {s: scoring.unit_sums(scores[m][s], splits[s], unit_of[s], count[s])
                        for s in splits} for m in scores}
            text = {f: np.bincount(unit_of["test"], minlength=count["test"]).astype(float)
                    for f in units.FIELDS}   # sizes do not change the cost; one per sentence
            replicates = {s: bootstrap.resample_sums(report.columns(sums, s, text if s == "test" else None),
                                                     args.resamples, i)
                          for i, s in enumerate(("test", "valid"))}
            fill = {m: np.ones(1000, dtype=bool) for m in scores}
            fill_drawn = bootstrap.resample_sums({**{m: f.astype(float) for m, f in fill.items()},
                                                  "blanks": np.ones(1000)}, args.resamples, 2)
            results = {m: report.metrics(m, sums[m], replicates, text, fill[m], fill_drawn,
                                         {"test": {"oov_rate": 0.0}}, 0, objective[m], 0.95)
                       for m in scores}
            report.comparisons(results, sums, replicates["test"], 0.95)
            timings.append(time.perf_counter() - started)
        print(json.dumps({"units": name, "test_units": count["test"], "models": len(scores),
                          "resamples": args.resamples, "repeats": args.repeats,
                          "median_seconds": round(statistics.median(timings), 4),
                          "scoring_seconds": round(scoring_seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
