"""`lmpipe` command line: user commands over the models of the last `dvc repro`.

    lmpipe score "I saw the soccer game" "Saw I the game of soccer"   # rank sentences, every model
    lmpipe score --model gru "..."                                     # one model
    lmpipe compare                                                     # the comparison table
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from pipeline import corpus, scoring
from pipeline.vocab import Vocab


def load_models(models_dir: Path, names: list[str] | None):
    """{name: (kind, model)} for the trained models found under models_dir."""
    import torch

    from pipeline.kneser_ney import NGramLM
    from pipeline.rnn import RNNLM, RNNConfig
    found = {}
    for path in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        if names and path.name not in names:
            continue
        if (path / "model.npz").is_file():
            found[path.name] = ("ngram", NGramLM.from_arrays(np.load(path / "model.npz")))
        elif (path / "model.pt").is_file():
            checkpoint = torch.load(path / "model.pt", weights_only=True, map_location="cpu")
            model = RNNLM(RNNConfig(**checkpoint["config"]))
            model.load_state_dict(checkpoint["state_dict"])
            found[path.name] = ("cloze" if model.config.bidirectional else "causal", model)
    missing = set(names or []) - set(found)
    if missing or not found:
        raise SystemExit(f"lmpipe: error: no trained model {', '.join(sorted(missing)) or ''} in "
                         f"{models_dir}/; run `make repro` (or dvc repro) first")
    return found


def sentence_logprob(kind: str, model, stream: np.ndarray) -> float:
    if kind == "ngram":
        return float(scoring.ngram_logprobs(model, stream).sum())
    if kind == "cloze":
        return float(scoring.cloze_logprobs(model, stream).sum())
    return float(scoring.causal_logprobs(model, stream, num_columns=1).sum())


def score(args) -> None:
    vocab = Vocab.from_json(json.loads((args.data / "vocab.json").read_text()))
    models = load_models(args.models, args.model)
    sentences = [corpus.tokenize(s) for s in args.sentences]
    for name, (kind, model) in models.items():
        label = "pseudo-log-likelihood (cloze)" if kind == "cloze" else "log10 P(sentence)"
        print(f"{name}  [{label}]")
        scored = [(sentence_logprob(kind, model, vocab.stream([s])) / math.log(10), text)
                  for s, text in zip(sentences, args.sentences, strict=True)]
        for rank, (logp, text) in enumerate(sorted(scored, reverse=True), start=1):
            print(f"  {rank}. {logp:9.3f}  {text}")


def compare(args) -> None:
    path = args.metrics / "comparison.md"
    if not path.is_file():
        raise SystemExit(f"lmpipe: error: {path} not found; run `make repro` first")
    print(path.read_text(), end="")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lmpipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("score", help="rank sentences by probability under each model")
    p.add_argument("sentences", nargs="+")
    p.add_argument("--model", action="append", help="model name (repeatable); default: all")
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("data/prepared"))
    p.set_defaults(run=score)
    p = commands.add_parser("compare", help="print the comparison table of the last evaluate")
    p.add_argument("--metrics", type=Path, default=Path("metrics"))
    p.set_defaults(run=compare)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
