"""`lmpipe` command line: user commands over the models of the last `dvc repro`.

    lmpipe score "I saw the soccer game" "Saw I the game of soccer"   # rank sentences, every model
    lmpipe score --model gru "..."                                     # one model
    lmpipe compare                                                     # the comparison table
    lmpipe ngram build TEXT --order 5 --arpa OUT.arpa [--discount-fallback]   # like lmplz
    lmpipe ngram query MODEL.arpa TEXT [--json] [--per-sentence]               # like query
TEXT is one sentence per line, whitespace-separated tokens (no normalisation), as for KenLM.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from pipeline import corpus
from pipeline.vocab import Vocab, encode_text


def load_models(models_dir: Path, names: list[str] | None):
    """{name: (kind, model)} for the trained models found under models_dir."""
    import torch

    from pipeline.kneser_ney import NGramLM
    from pipeline.rnn import RNNLM
    found = {}
    for path in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        if names and path.name not in names:
            continue
        if (path / "model.npz").is_file():
            found[path.name] = ("ngram", NGramLM.from_arrays(np.load(path / "model.npz")))
        elif (path / "model.pt").is_file():
            model = RNNLM.from_checkpoint(torch.load(path / "model.pt", weights_only=True,
                                                     map_location="cpu"))
            found[path.name] = ("cloze" if model.config.bidirectional else "causal", model)
    missing = set(names or []) - set(found)
    if missing or not found:
        raise SystemExit(f"lmpipe: error: no trained model {', '.join(sorted(missing)) or ''} in "
                         f"{models_dir}/; run `make repro` (or dvc repro) first")
    return found


def sentence_logprob(kind: str, model, stream: np.ndarray) -> float:
    from pipeline import scoring  # imports torch: only for the commands that need it
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


def ngram_build(args) -> None:
    from pipeline import arpa, kneser_ney, ngrams
    def progress(message):
        print(f"lmpipe ngram: {message}", file=sys.stderr, flush=True)
    tokens, stream, _ = encode_text("\n".join(corpus.read_lines(args.text)))
    progress(f"{int(np.sum(stream == 1)):,} sentences, {len(tokens):,} words in the vocabulary")
    counts = ngrams.count(stream, len(tokens), args.order, progress)
    del stream
    model = kneser_ney.estimate(counts, fallback=args.discount_fallback, progress=progress)
    counts = ngrams.NgramCounts(counts.vocab_size, counts.keys, [], [], [])  # writing needs keys only
    with open(args.arpa, "wb") as handle:
        arpa.write(model, counts, tokens, handle)
    progress(f"wrote {args.arpa}")


def query_summary(model, tokens: tuple[str, ...], text: str) -> dict:
    """KenLM `query -v summary` figures, plus per-sentence log10 totals and OOV counts."""
    _, stream, oov = encode_text(text, tokens)
    logp = model.log10_probs(stream)
    sentence = np.cumsum(stream == 1)[stream != 1] - 1
    num_sentences = int(np.sum(stream == 1))
    total, count = float(logp.sum()), len(logp)
    inside = float(logp[~oov].sum())
    return {"perplexity_including_oovs": 10 ** (-total / count),
            "perplexity_excluding_oovs": 10 ** (-inside / max(count - int(oov.sum()), 1)),
            "oovs": int(oov.sum()), "tokens": count,
            "sentence_totals": np.bincount(sentence, logp, minlength=num_sentences).tolist(),
            "sentence_oovs": np.bincount(sentence, oov, minlength=num_sentences).astype(int).tolist()}


def ngram_query(args) -> None:
    from pipeline import arpa
    model, tokens = arpa.read(args.model)
    summary = query_summary(model, tokens, "\n".join(corpus.read_lines(args.text)))
    if args.json:
        if not args.per_sentence:
            summary = {k: v for k, v in summary.items() if not k.startswith("sentence_")}
        print(json.dumps(summary))
        return
    if args.per_sentence:
        for total, oovs in zip(summary["sentence_totals"], summary["sentence_oovs"], strict=True):
            print(f"Total: {total:.6f} OOV: {oovs}")
    print(f"Perplexity including OOVs:\t{summary['perplexity_including_oovs']}")
    print(f"Perplexity excluding OOVs:\t{summary['perplexity_excluding_oovs']}")
    print(f"OOVs:\t{summary['oovs']}")
    print(f"Tokens:\t{summary['tokens']}")


def preset(args) -> None:
    """Print a preset as `-S key=value` flags for `dvc exp run` (or its description)."""
    import shlex

    from pipeline import config
    overrides = config.preset_overrides(args.name, args.params, args.presets)
    flags = []
    for key, value in overrides.items():
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        flags += ["-S", f"{key}={text}"]
    print(" ".join(shlex.quote(f) for f in flags))


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
    p = commands.add_parser("preset", help="print a named configuration (configs/presets.yaml) "
                                           "as `dvc exp run` -S flags")
    p.add_argument("name", help="medium | full | any preset in the file")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--presets", type=Path, default=Path("configs/presets.yaml"))
    p.set_defaults(run=preset)
    ngram = commands.add_parser("ngram", help="KenLM-style n-gram build and query").add_subparsers(
        dest="ngram_command", required=True)
    p = ngram.add_parser("build", help="estimate modified Kneser-Ney from TEXT, write ARPA")
    p.add_argument("text")
    p.add_argument("--order", type=int, required=True)
    p.add_argument("--arpa", required=True)
    p.add_argument("--discount-fallback", nargs="*", type=float, metavar="D",
                   help="discounts to use when they cannot be estimated (default 0.5 1 1.5, as lmplz)")
    p.set_defaults(run=ngram_build)
    p = ngram.add_parser("query", help="score TEXT with an ARPA model (perplexity, OOVs, totals)")
    p.add_argument("model")
    p.add_argument("text")
    p.add_argument("--json", action="store_true")
    p.add_argument("--per-sentence", action="store_true")
    p.set_defaults(run=ngram_query)
    args = parser.parse_args(argv)
    if getattr(args, "discount_fallback", None) == []:
        args.discount_fallback = (0.5, 1.0, 1.5)
    try:
        args.run(args)
    except ValueError as error:   # bad input: one line naming the file and the fix
        raise SystemExit(f"lmpipe: error: {error}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
