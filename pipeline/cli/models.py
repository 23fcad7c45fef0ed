"""`lmpipe score`, `fill` and `generate`: the models of the last `dvc repro` (models/<kind>/),
with the corpus's own normalisation and tokenisation (params.yaml, data/prepared/vocab.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.text.tokenizers import tokenize
from pipeline.text.vocab import Vocab


def load_models(models_dir: Path, names: list[str] | None):
    """{name: tasks.LanguageModel} for the trained models found under models_dir."""
    import torch

    from pipeline.evaluation import tasks
    from pipeline.neural.rnn import RNNLM
    from pipeline.ngram.kneser_ney import NGramLM
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
    """(vocab, encode(text) -> ids, unknown(text) -> out-of-vocabulary words) with the corpus
    settings of params.yaml."""
    from pipeline import config
    params = config.load()
    vocab = Vocab.from_json(json.loads((data / "vocab.json").read_text()))
    c = params.corpus

    def tokens(text: str) -> list[str]:
        return tokenize(text, c.tokenizer, c.lowercase, c.unk)
    return vocab, lambda text: vocab.encode(tokens(text)), lambda text: vocab.unknown(tokens(text))


def _oov_note(words: list[str]) -> str:
    return f"  [out of vocabulary, scored as <unk>: {', '.join(words)}]" if words else ""


def score(args) -> None:
    """Each sentence's ln P (natural log, like fill, the probes and the pyfunc), best first."""
    from pipeline.evaluation import tasks
    _, encode, unknown = _tokenizer(args.data)
    models = load_models(args.models, args.model)
    sentences = [tasks.encode_probe_text(s, encode)[0] for s in args.sentences]
    for name, model in models.items():
        label = "pseudo-log-likelihood, ln (cloze)" if model.kind == "cloze" else "ln P(sentence)"
        print(f"{name}  [{label}]")
        logp = model.sentence_logprobs(sentences)
        for rank, (value, text) in enumerate(sorted(zip(logp, args.sentences, strict=True),
                                                    reverse=True), start=1):
            print(f"  {rank}. {value:9.3f}  {text}{_oov_note(unknown(text))}")


def fill(args) -> None:
    from pipeline.evaluation import tasks
    vocab, encode, unknown = _tokenizer(args.data)
    probe = {"text": args.text, "top": args.k, "open": args.open}
    if args.options:
        probe["options"] = args.options
    context = unknown(args.text.replace(tasks.BLANK, " "))
    if context:
        print(f"(out of vocabulary in the text, scored as <unk>: {', '.join(context)})")
    for name, model in load_models(args.models, args.model).items():
        side = "both sides" if model.kind == "cloze" else (
            "left context" if args.open else "whole sentence")
        print(f"{name}  [ln p, {side}]")
        for row in tasks.run_probe(model, probe, encode, vocab.tokens, unknown):
            print(f"  {row['logprob']:9.3f}  {row['text']}{_oov_note(row['oov'])}")


def generate(args) -> None:
    from pipeline.evaluation import tasks
    vocab, _, _ = _tokenizer(args.data)
    for name, model in load_models(args.models, args.model).items():
        if model.kind != "causal":
            print(f"{name}: skipped (bidirectional models do not generate left to right)")
            continue
        print(f"{name}  [temperature {args.temperature}]")
        for ids in tasks.sample(model, args.n, args.temperature, args.max_length, args.seed):
            print("  " + " ".join(vocab.decode(ids)))
