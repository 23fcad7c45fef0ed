"""`lmpipe` command line: user commands over the models of the last `dvc repro`.

    lmpipe score "I saw the soccer game" "Saw I the game of soccer"   # rank sentences, every model
    lmpipe score --model gru "..."                                     # one model
    lmpipe fill "they ___ everywhere ." --k 5                          # top fills, every model
    lmpipe generate --model gru --n 5 --temperature 0.8                # sampled sentences
    lmpipe compare [--markdown]                  # the comparison table of the newest MLflow run
    lmpipe preset medium                         # a configuration as `dvc exp run` -S flags
    lmpipe mlflow-server [--port 5000]           # tracking server over mlflow.db, on 127.0.0.1
    lmpipe retrain --base origin/main            # CI: repro what changed, reports/retrain.md
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
    """{name: tasks.LanguageModel} for the trained models found under models_dir."""
    import torch

    from pipeline import tasks
    from pipeline.kneser_ney import NGramLM
    from pipeline.rnn import RNNLM
    found = {}
    for path in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        if names and path.name not in names:
            continue
        if (path / "model.npz").is_file():
            found[path.name] = tasks.NgramModel(NGramLM.from_arrays(np.load(path / "model.npz")))
        elif (path / "model.pt").is_file():
            found[path.name] = tasks.RecurrentModel(RNNLM.from_checkpoint(
                torch.load(path / "model.pt", weights_only=True, map_location="cpu")))
    missing = set(names or []) - set(found)
    if missing or not found:
        raise SystemExit(f"lmpipe: error: no trained model {', '.join(sorted(missing)) or ''} in "
                         f"{models_dir}/; run `make repro` (or dvc repro) first")
    return found


def _tokenizer(data: Path):
    """(vocab, encode(text) -> ids) with the corpus settings of params.yaml."""
    from pipeline import config
    params = config.load()
    vocab = Vocab.from_json(json.loads((data / "vocab.json").read_text()))
    return vocab, lambda text: vocab.encode(corpus.tokenize(text, params.corpus.level,
                                                            params.corpus.lowercase))


def score(args) -> None:
    from pipeline import tasks
    _, encode = _tokenizer(args.data)
    models = load_models(args.models, args.model)
    sentences = [tasks.encode_probe_text(s, encode)[0] for s in args.sentences]
    for name, model in models.items():
        label = "pseudo-log-likelihood (cloze)" if model.kind == "cloze" else "log10 P(sentence)"
        print(f"{name}  [{label}]")
        logp = model.sentence_logprobs(sentences) / math.log(10)
        for rank, (value, text) in enumerate(sorted(zip(logp, args.sentences, strict=True),
                                                    reverse=True), start=1):
            print(f"  {rank}. {value:9.3f}  {text}")


def fill(args) -> None:
    from pipeline import tasks
    vocab, encode = _tokenizer(args.data)
    probe = {"text": args.text, "top": args.k, "open": args.open}
    if args.options:
        probe["options"] = args.options
    for name, model in load_models(args.models, args.model).items():
        side = "both sides" if model.kind == "cloze" else (
            "left context" if args.open else "whole sentence")
        print(f"{name}  [ln p, {side}]")
        for row in tasks.run_probe(model, probe, encode, vocab.tokens):
            print(f"  {row['logprob']:9.3f}  {row['text']}")


def generate(args) -> None:
    from pipeline import tasks
    vocab, _ = _tokenizer(args.data)
    for name, model in load_models(args.models, args.model).items():
        if model.kind != "causal":
            print(f"{name}: skipped (bidirectional models do not generate left to right)")
            continue
        print(f"{name}  [temperature {args.temperature}]")
        for ids in tasks.sample(model, args.n, args.temperature, args.max_length, args.seed):
            print("  " + " ".join(vocab.decode(ids)))


def mlflow_server(args) -> None:
    """`mlflow server` over this repository's store (mlflow.tracking_uri of params.yaml) and its
    mlartifacts/ folder, on 127.0.0.1 unless --host says otherwise. Workers then use
    MLFLOW_TRACKING_URI=http://HOST:PORT."""
    import os
    import shutil

    from pipeline import config
    root = config.repo_root()
    uri = config.tracking_uri(config.load(root / "params.yaml").mlflow, root)
    if uri.startswith("http"):
        raise ValueError(f"the tracking URI is already a server ({uri}); nothing to start")
    command = [shutil.which("mlflow") or "mlflow", "server", "--backend-store-uri", uri,
               "--artifacts-destination", str(root / "mlartifacts"),
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    print("lmpipe: " + " ".join(command), flush=True)
    os.execvp(command[0], command)


def retrain(args) -> None:
    """Reproduce what changed since the last run and write reports/retrain.md (CI entry point)."""
    from pipeline import config
    from pipeline import retrain as retraining
    root = config.repo_root()
    try:
        retraining.run(root, args.base, root / args.report)
    except RuntimeError as error:
        raise SystemExit(f"lmpipe: error: {error}") from None


def compare(args) -> None:
    """The comparison table of the newest pipeline run (or --run), from mlflow.search_runs."""
    from pipeline import config, report, tracking
    params = config.load()
    uri = args.tracking_uri or config.tracking_uri(params.mlflow, config.repo_root())
    parent, runs = tracking.latest_pipeline_runs(uri, args.experiment or params.mlflow.experiment,
                                                 args.parent_run)
    columns = ["tags.model_kind", "tags.objective", *[f"metrics.{k}" for k in report.KEYS]]
    table = runs.reindex(columns=columns)
    table.columns = ["model", "objective", *report.KEYS]
    table = table.sort_values("model", key=lambda m: m != "ngram", kind="stable")  # ngram first
    for key in ("test_tokens", "model_bytes"):
        table[key] = table[key].astype("Int64")
    if args.markdown:
        print(f"Pipeline run `{parent}`\n")
        print("| " + " | ".join(table.columns) + " |")
        print("|---|---|" + "---:|" * len(report.KEYS))
        for row in table.itertuples(index=False):
            print("| " + " | ".join(_cell(v) for v in row) + " |")
    else:
        print(f"pipeline run {parent}")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
    p = commands.add_parser("fill", help="top fills of a blank (___) by each model")
    p.add_argument("text", help='a sentence with one ___, e.g. "they ___ everywhere ."')
    p.add_argument("--model", action="append", help="model name (repeatable); default: all")
    p.add_argument("--k", type=int, default=5, help="how many fills (default 5)")
    p.add_argument("--options", nargs="+", help="only compare these words")
    p.add_argument("--open", action="store_true",
                   help="the text goes on after it ends: causal models use the left context only")
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("data/prepared"))
    p.set_defaults(run=fill)
    p = commands.add_parser("generate", help="sample sentences from causal models")
    p.add_argument("--model", action="append", help="model name (repeatable); default: all")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("data/prepared"))
    p.set_defaults(run=generate)
    p = commands.add_parser("retrain", help="dvc repro what changed, then reports/retrain.md: "
                                            "stages and why, params/metrics diff, promotion")
    p.add_argument("--base", help="revision to diff params and metrics against (e.g. origin/main)")
    p.add_argument("--report", type=Path, default=Path("reports/retrain.md"))
    p.set_defaults(run=retrain)
    p = commands.add_parser("mlflow-server", help="a local MLflow tracking server over this "
                                                  "repository's store (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this "
                   "machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(run=mlflow_server)
    p = commands.add_parser("compare", help="the comparison table of the newest pipeline run, "
                                            "from MLflow")
    p.add_argument("--run", dest="parent_run", help="a pipeline (parent) run id instead of the newest")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--experiment", help="default: mlflow.experiment of params.yaml")
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI or params.yaml")
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
