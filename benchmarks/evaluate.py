"""Evaluate at benchmark scale: each model's share of `evaluate` against its own bare forward pass.
A WikiText-shaped corpus (synthetic.py's words on a 33k vocabulary, cut into lines whose lengths
are drawn like WikiText-2's: a third blank, short headings, paragraphs of mostly 50-400 tokens)
is prepared and its n-gram model built as the stages do, untrained recurrent models of --width
are saved, then per model it times (a) its share of evaluate (scores of valid and test, blanks,
probes, samples) and (b) its forward pass over valid and test (n-gram: log10_probs; recurrent:
the logits at every scored position, 64 rows at a time; cloze sentences batched by length).
Also (c) that pass with the log-softmax any ln p needs (the n-gram's: none). Prints one JSON line
per model and repeat, then the medians and ratios (goal: ratio <= 2), also without the probes,
whose whole-vocabulary fills cost the same for any test set.

    .venv/bin/python -m benchmarks.evaluate [--scale 1.0] [--width 8] [--repeat 3] [--work DIR]
"""

import argparse
import io
import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks import synthetic
from pipeline import config, files
from pipeline.evaluation import run, scoring, tasks
from pipeline.evaluation.models import NgramModel
from pipeline.neural.batches import IGNORE, cloze_targets, eval_columns, pad_sentences, sentences_of
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.ngram import builder, external, kneser_ney, outputs
from pipeline.text import chunked
from pipeline.text.vocab import load_vocab

SPLIT_TOKENS = 245_569   # WikiText-2's valid and test, `</s>` included
ROWS = 64                # logits per product, as scoring.ROWS


def line_lengths(rng: np.random.Generator, tokens: int) -> np.ndarray:
    """Words per line until `tokens` (with one `</s>` each): 35% blank, 20% headings of 3-12
    words, 45% paragraphs, log-normal around 100 words (10-700)."""
    kind = rng.choice(3, size=tokens, p=[0.35, 0.2, 0.45])
    lengths = np.where(kind == 0, 0, np.where(kind == 1, rng.integers(3, 13, tokens), np.clip(
        rng.lognormal(np.log(100), 0.6, tokens), 10, 700).astype(np.int64)))
    return lengths[:int(np.searchsorted(np.cumsum(lengths + 1), tokens)) + 1]


def write_corpus(folder: Path, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = {"train": int(8.5 * SPLIT_TOKENS * scale), "valid": int(SPLIT_TOKENS * scale),
             "test": int(SPLIT_TOKENS * scale)}
    text = io.StringIO()
    synthetic.generate(sum(sizes.values()), text, seed=seed, vocab=33_278)
    words, at = text.getvalue().split(), 0
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in sizes.items():
        lines = []
        for length in line_lengths(rng, size):
            lines.append(" ".join(words[at:at + length]))
            at += length
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")


def prepared(work: Path, scale: float, width: int, seed: int) -> config.Params:
    """Params of the benchmark; the corpus, data/prepared, models/ngram and models/KIND in `work`."""
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["corpus"].update(source=str(work / "corpus"), tokenizer="whitespace", lowercase=False)
    raw["vocab"].update(min_count=1, max_size=0)
    raw["ngram"]["order"] = 5
    for spec in raw["models"].values():
        spec.update(embed_dim=width, hidden_dim=width)
    params = config.from_dict(raw, "benchmark params: ")
    data, models = work / "prepared", work / "models"
    if not (data / "stats.json").is_file():
        write_corpus(work / "corpus", scale, seed)
        chunked.prepare(params, str(data), files.parse_size("1G"), progress=lambda line: None)
    vocab = load_vocab(data).tokens
    if not (models / "ngram" / "model.npz").is_file():
        source = external.TokenFile(data / "train.npy")
        counted = builder.orders(source, len(vocab), 5, 5)
        outputs.write(source, vocab, models / "ngram", 5, counted, files.parse_size("1G"), None,
                      kneser_ney.LMPLZ_FALLBACK, lambda message: None)   # small scales need it
    for kind, spec in params.models.items():
        if not (models / kind / "model.pt").is_file():
            torch.manual_seed(seed)
            (models / kind).mkdir(parents=True, exist_ok=True)
            torch.save(RNNLM(ModelConfig.of(kind, spec, len(vocab))).checkpoint(), models / kind / "model.pt")
            (models / kind / "history.json").write_text(json.dumps([{"epoch": 0, "val_ppl": 1000.0}]))
    return params


def all_logits(model: RNNLM, features: torch.Tensor, normalised: bool = False) -> None:
    """The logits ROWS rows at a time into one buffer, as scoring makes them (its fastest way)."""
    block = features.new_empty((min(len(features), ROWS), model.config.vocab_size))
    for start in range(0, len(features), ROWS):
        model.logits(features[max(0, min(start, len(features) - ROWS)):start + ROWS], out=block)
        if normalised:                            # and the log-softmax any ln p needs
            torch.log_softmax(block, -1, out=block)


@torch.no_grad()
def forward_pass(lm, stream: np.ndarray, normalised: bool = False) -> None:
    """The part no implementation avoids: the model's outputs (logits) at every scored position."""
    if isinstance(lm, NgramModel):
        lm.lm.log10_probs(stream)
        return
    model = lm.model.eval()
    if lm.kind == "causal":
        inputs, _, positions = eval_columns(stream, 16)
        state = None
        for start in range(0, inputs.shape[1], 128):
            features, _, state = model.features_and_activations(inputs[:, start:start + 128], state)
            all_logits(model, features[positions[:, start:start + 128] >= 0], normalised)
        return
    sentences = sorted(sentences_of(stream), key=len)
    for start in range(0, len(sentences), 64):
        tokens, lengths = pad_sentences(sentences[start:start + 64])
        features = model.cloze_features_and_activations(tokens, lengths)[0]
        all_logits(model, features[cloze_targets(tokens, lengths) != IGNORE], normalised)


def forward_passes(lm, streams, normalised: bool = False) -> None:
    for stream in streams:
        forward_pass(lm, stream, normalised)


def share(found: run.Inputs, settings, seed: int, lm) -> dict[str, float]:
    """Seconds of one model's parts of evaluate: its scores (run.score), blanks, probes, samples."""
    def scores():
        for split, stream in found.splits.items():
            scoring.unit_sums(lm.stream_scores(stream), stream, found.units[f"{split}_unit"],
                              len(found.units[f"{split}_chars"]))
    return {"scores": timed(scores), "blanks": timed(lambda: tasks.blank_correct(lm, found.blanks)),
            "probes": timed(lambda: [tasks.run_probe(lm, probe, found.encode, found.vocab.tokens,
                                                     found.unknown) for probe in found.probes]),
            "samples": timed(lambda: lm.kind == "causal" and tasks.sample(
                lm, settings.samples, settings.temperature, settings.max_length, seed))}


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="valid/test = scale x 245,569 tokens")
    parser.add_argument("--width", type=int, default=8, help="embed_dim = hidden_dim of every model")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", help="default: ngram and every params.models kind")
    parser.add_argument("--work", default="/tmp/lmpipe-evaluate-bench")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work) / f"scale{args.scale:g}-width{args.width}"
    params = prepared(work, args.scale, args.width, args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    found = run.load(params, work / "prepared", work / "models", Path.cwd())
    print(json.dumps({"tokens": {s: len(v) for s, v in found.splits.items()}, "vocab": len(found.vocab),
                      "width": args.width}), flush=True)
    for name, lm in found.models.items():
        if args.models and name not in args.models:
            continue
        shares, passes, softmax, probes = [], [], [], []
        for _ in range(args.repeat):   # alternated: evaluate's share, then the forward passes
            parts = share(found, params.evaluate, params.seed, lm)
            shares.append(sum(parts.values()))
            probes.append(parts["probes"])
            passes.append(timed(partial(forward_passes, lm, found.splits.values())))
            softmax.append(timed(partial(forward_passes, lm, found.splits.values(), True)))
            print(json.dumps({"model": name, "evaluate_s": round(shares[-1], 2),
                              **{f"{k}_s": round(v, 2) for k, v in parts.items()},
                              "forward_s": round(passes[-1], 2), "forward_softmax_s": round(softmax[-1], 2)}),
                  flush=True)
        a, b, c = (statistics.median(t) for t in (shares, passes, softmax))
        fixed = statistics.median(probes)   # the probes file's cost: set by the vocabulary, not the test set
        print(json.dumps({"model": name, "median_evaluate_s": round(a, 2), "median_forward_s": round(b, 2),
                          "ratio": round(a / b, 2), "median_forward_softmax_s": round(c, 2),
                          "ratio_to_softmax": round(a / c, 2), "median_probes_s": round(fixed, 2),
                          "ratio_to_softmax_without_probes": round((a - fixed) / c, 2)}), flush=True)

if __name__ == "__main__":
    main()
