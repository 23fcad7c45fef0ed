"""Split methods and text modes on the default corpus (the KJV): tokens per split, and the test
perplexity of the same Kneser-Ney trigram under each split method (how much an easy split
flatters a model). Params other than the ones varied are params.yaml's. Prints JSON lines.

    .venv/bin/python benchmarks/splits.py
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import config  # noqa: E402
from pipeline.evaluation import scoring  # noqa: E402
from pipeline.ngram import counting, kneser_ney  # noqa: E402
from pipeline.text import corpus, splits  # noqa: E402
from pipeline.text.vocab import Vocab, split_stats  # noqa: E402


def main() -> None:
    params = config.load()
    s = params.split
    wanted = {"train": s.train, "valid": s.valid, "test": s.test}
    text = corpus.read(params.corpus.source)
    for tokenizer in ("words", "whitespace", "chars"):
        sentences, line_of = corpus.sentences(text.lines, tokenizer, params.corpus.lowercase)
        for method in splits.METHODS:
            parts = splits.split(method, np.fromiter(map(len, sentences), np.int64),
                                 text.documents[line_of], wanted, params.seed)
            train = [sentences[i] for i in parts["train"]]
            vocab = Vocab.build(train, params.vocab.min_count, params.vocab.max_size)
            streams = {k: vocab.stream([sentences[i] for i in v]) for k, v in parts.items()}
            row = {"tokenizer": tokenizer, "method": method,
                   **{f"{k}_tokens": split_stats(v)["tokens"] for k, v in streams.items()},
                   "test_oov_rate": round(split_stats(streams["test"])["oov_rate"], 4)}
            if tokenizer == "words":
                lm = kneser_ney.estimate(counting.count(streams["train"], len(vocab), 3))
                row["kn3_test_ppl"] = round(math.exp(-float(np.mean(
                    scoring.ngram_logprobs(lm, streams["test"])))), 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
