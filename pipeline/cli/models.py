"""`lmpipe score`, `fill` and `generate`: the models of the last `dvc repro` (models/<kind>/),
with the corpus's own normalisation and tokenisation (params.yaml, data/prepared/vocab.json)."""

from __future__ import annotations

from pathlib import Path

from pipeline import config, files
from pipeline.cli.experiments import repository
from pipeline.text.vocab import load_vocab


def load_models(models_dir: Path, names: list[str] | None, vocab_size: int):
    """{name: LanguageModel} under models_dir (`names`, or all); ValueError naming --model(s)."""
    from pipeline.evaluation.models import LOADERS, load_model
    folders = [p for p in sorted(models_dir.glob("*")) if p.is_dir() and (not names or p.name in names)]
    trained = [p for p in folders if any((p / f).is_file() for f in LOADERS)]
    if len(trained) < len(folders):   # a model's folder without its weights: deleted by hand
        raise files.damaged(next(p for p in folders if p not in trained), f"holds no {' or '.join(LOADERS)}")
    missing = sorted(set(names or []) - {p.name for p in trained})
    flag = f"--model {', '.join(missing)}" if missing else f"--models {str(models_dir)!r}"
    if missing or not trained:   # the models asked for, or any
        raise ValueError(f"{flag}: not trained in {models_dir}/ (trained: "
                         f"{', '.join(p.name for p in trained) or 'none'}); `make repro` first")
    return {path.name: load_model(path, vocab_size)
            for path in trained if not names or path.name in names}


def _tokenizer(args):
    """(vocab, encode(text) -> ids, unknown(text) -> OOV words) of --data; ValueError outside the repo."""
    repository(args.command)
    from pipeline.evaluation.models import codec
    params = config.load()
    if not args.data.is_dir():
        raise ValueError(f"--data {str(args.data)!r}: no such folder; `make repro` first")
    vocab = load_vocab(args.data)
    return vocab, *codec(vocab, params.corpus)


def _oov_note(words: list[str]) -> str:
    return f"  [out of vocabulary, scored as <unk>: {', '.join(words)}]" if words else ""


def score(args) -> None:
    """Each sentence's ln P (nats) under each model, best first; one ___ is scored as <unk>."""
    from pipeline.evaluation import tasks  # here: torch's 2 s import, not for other commands
    for sentence in args.sentences:
        if sentence.count(tasks.BLANK) > 1:
            raise ValueError(f"SENTENCE {sentence!r} has {sentence.count(tasks.BLANK)} ___; at most one (scored as <unk>)")
    vocab, encode, unknown = _tokenizer(args)
    models = load_models(args.models, args.model, len(vocab))
    sentences = [tasks.encode_probe_text(s, encode)[0] for s in args.sentences]
    for name, model in models.items():
        label = "pseudo-log-likelihood, ln (cloze)" if model.kind == "cloze" else "ln P(sentence)"
        print(f"{name}  [{label}]")
        ranked = sorted(zip(model.sentence_logprobs(sentences), args.sentences, strict=True), reverse=True)
        for rank, (value, text) in enumerate(ranked, start=1):
            print(f"  {rank}. {value:9.3f}  {text}{_oov_note(unknown(text))}")


def fill(args) -> None:
    """The top --k fills of TEXT's one ___ (or of --options) by each model."""
    from pipeline.evaluation import tasks
    blanks = args.text.count(tasks.BLANK)
    if blanks != 1:
        raise ValueError(f"TEXT {args.text!r} has {blanks or 'no'} {tasks.BLANK}; mark one word")
    vocab, encode, unknown = _tokenizer(args)
    for option in args.options or []:
        if len(encode(option)) != 1:
            raise ValueError(f"--options {option!r} is {len(encode(option))} tokens; give one each")
    probe = {"text": args.text, "top": args.k, "open": args.open,
             **({"options": args.options} if args.options else {})}
    models = load_models(args.models, args.model, len(vocab))
    context = unknown(args.text.replace(tasks.BLANK, " "))
    if context:
        print(f"(out of vocabulary in the text, scored as <unk>: {', '.join(context)})")
    for name, model in models.items():
        side = "both sides" if model.kind == "cloze" else "left context" if args.open else "whole sentence"
        print(f"{name}  [ln p, {side}]")
        for row in tasks.run_probe(model, probe, encode, vocab.tokens, unknown):
            print(f"  {row['logprob']:9.3f}  {row['text']}{_oov_note(row['oov'])}")


BATCH = 16   # sentences sampled together (one model step each per token), printed as they come


def generate(args) -> None:
    """--n sentences from each causal model, BATCH at a time (batch k: seed --seed + k * BATCH)."""
    vocab, _, _ = _tokenizer(args)
    from pipeline.evaluation import tasks
    for name, model in load_models(args.models, args.model, len(vocab)).items():
        if model.kind != "causal":
            print(f"{name}: skipped (bidirectional models do not generate left to right)", flush=True)
            continue
        print(f"{name}  [temperature {args.temperature}]", flush=True)
        for start in range(0, args.n, BATCH):
            for ids in tasks.sample(model, min(BATCH, args.n - start), args.temperature,
                                    args.max_length, args.seed + start):
                print("  " + " ".join(vocab.decode(ids)), flush=True)
