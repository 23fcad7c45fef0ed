"""Split methods and text modes on the default corpus (the KJV): tokens per split, and the test
perplexity of the same Kneser-Ney trigram under each split method (how much an easy split
flatters a model), each prepared by the prepare stage's code (pipeline/text/chunked.py) into a
temporary folder. Params other than the ones varied are params.yaml's. Prints JSON lines.

    .venv/bin/python benchmarks/splits.py
"""

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import config, files  # noqa: E402
from pipeline.evaluation import scoring  # noqa: E402
from pipeline.ngram import counting, kneser_ney  # noqa: E402
from pipeline.text import chunked, splits  # noqa: E402
from pipeline.text.tokenizers import TOKENIZERS  # noqa: E402


def main() -> None:
    params = config.load()
    memory = files.parse_size(params.corpus.memory)
    with tempfile.TemporaryDirectory() as folder:
        for tokenizer in TOKENIZERS:
            for method in splits.METHODS:
                out = Path(folder) / f"{tokenizer}-{method}"
                chunked.prepare(params.model_copy(update={
                    "corpus": params.corpus.model_copy(update={"tokenizer": tokenizer}),
                    "split": params.split.model_copy(update={"method": method})}),
                    out, memory, progress=lambda line: None)
                stats = json.loads((out / "stats.json").read_text())
                row = {"tokenizer": tokenizer, "method": method,
                       **{f"{k}_tokens": stats[k]["tokens"] for k in splits.PARTS},
                       "test_oov_rate": round(stats["test"]["oov_rate"], 4)}
                if tokenizer == "words":
                    train, test = (np.load(out / f"{k}.npy") for k in ("train", "test"))
                    lm = kneser_ney.estimate(counting.count(train, stats["vocab_size"], 3))
                    row["kn3_test_ppl"] = round(math.exp(-float(np.mean(
                        scoring.ngram_logprobs(lm, test)))), 2)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
