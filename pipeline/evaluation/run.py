"""Evaluate every trained model. In: data/prepared, models/ (ngram/, one folder per params.models
kind), params. Out: metrics/ and an `Evaluation` for tracking/ to log. `load` reads and checks
every input (errors.StateError naming the file) before any scoring."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import config, files
from pipeline.evaluation import bootstrap, inputs, report, scoring, tasks
from pipeline.evaluation.models import LanguageModel, codec, load_model
from pipeline.evaluation.probes import load_probes
from pipeline.ngram import counting, kneser_ney
from pipeline.text.vocab import Vocab, check_ids, load_vocab


@dataclass
class Inputs:
    """Everything evaluate reads, checked; the streams memory-mapped."""
    vocab: Vocab
    encode: Callable[[str], np.ndarray]     # text -> token ids, as prepare tokenized the corpus
    unknown: Callable[[str], list[str]]     # text -> its out-of-vocabulary words
    stats: dict                             # data/prepared/stats.json
    splits: dict[str, np.ndarray]           # valid, test: token streams
    probes: list[dict]
    blanks: list[tasks.Blank]
    units: inputs.Units
    models: dict[str, LanguageModel]  # ngram, then each params.models kind
    counts: counting.NgramCounts            # models/ngram/counts.parquet, for the MLE table
    histories: dict[str, list[dict]]        # kind -> models/KIND/history.json
    memory: list[dict]                      # memory.md's rows (report.memory_rows)


@dataclass
class Scored:
    """One model's scores: per split, its per-unit sums (scoring.unit_sums); per blank, right or not."""
    lm: LanguageModel                 # its weights file: lm.path
    sums: dict[str, dict[str, np.ndarray]]
    fill: np.ndarray


@dataclass
class Evaluation:
    """What tracking/ logs; models in metrics.json's order (ngram, then params.models)."""
    results: dict[str, dict]                # name -> metrics.json's entry
    scored: dict[str, Scored]
    found: Inputs                           # what `load` read
    artifacts: list[Path]                   # metrics/ files for the pipeline run


def load(params: config.Params, data: Path, models: Path, root: Path) -> Inputs:
    """Every input of `evaluate`, read and checked in a fixed order (the first damage found is
    refused); probes resolve against `root`."""
    c, settings = params.corpus, params.evaluate
    vocab = load_vocab(data)
    stats = inputs.read_stats(data)
    # memory-mapped: pages are read as scored and stay reclaimable (no private copy)
    splits = {name: files.load_array(data / f"{name}.npy", data, mmap_mode="r")
              for name in ("valid", "test")}
    for name, stream in splits.items():
        check_ids(stream, len(vocab), data / f"{name}.npy", data)
    encode, unknown = codec(vocab, c)
    # every probe checked (options one token each) before any scoring
    probes = load_probes(root / settings.probes, encode, c.tokenizer)
    units = inputs.read_units(data, splits)
    loaded = {"ngram": load_model(models / "ngram" / "model.npz", len(vocab))}
    counts = counting.from_table(inputs.read_table(models / "ngram" / "counts.parquet"), len(vocab))
    blanks = tasks.make_blanks(splits["test"], counts.counts[0], vocab.tokens,   # training counts
                               settings.blanks, params.seed, settings.distractors)
    histories = {}
    for kind in params.models:
        loaded[kind] = load_model(models / kind / "model.pt", len(vocab))
        histories[kind] = inputs.read_history(models / kind / "history.json")
    memory = report.memory_rows(files.read_json(models / "ngram" / "memory.json", models / "ngram", list),
                                {kind: lm.nbytes() for kind, lm in loaded.items() if kind != "ngram"})
    return Inputs(vocab, encode, unknown, stats, splits, probes, blanks, units, loaded, counts,
                  histories, memory)


def score(found: Inputs) -> tuple[dict[str, Scored], dict]:
    """({name: Scored}, mle.json's table), models in found.models' order."""
    splits, units = found.splits, found.units
    scored = {}
    for name, lm in found.models.items():
        sums = {s: scoring.unit_sums(lm.stream_scores(stream), stream, units.unit_of[s], units.count[s])
                for s, stream in splits.items()}
        scored[name] = Scored(lm, sums, tasks.blank_correct(lm, found.blanks))
    mle = {f"{name}_{split}": scoring.mle_summary(kneser_ney.mle_probs(found.counts, stream, n))
           for name, n in (("bigram", 2), ("trigram", 3)) for split, stream in splits.items()}
    return scored, mle


def summarize(params: config.Params, found: Inputs,
              scored: dict[str, Scored]) -> tuple[dict[str, dict], list[bootstrap.Comparison]]:
    """(metrics.json's {name: metrics}, the paired comparisons): one bootstrap draw per split,
    shared by every model and metric; each headline and verdict printed."""
    started = time.perf_counter()
    settings, text, count = params.evaluate, found.units.text, found.units.count
    level, resamples = settings.confidence_level, settings.bootstrap_resamples
    sums = {name: m.sums for name, m in scored.items()}
    replicates = {s: bootstrap.resample_sums(report.columns(sums, s, text if s == "test" else None),
                                             resamples, params.seed + i)
                  for i, s in enumerate(("test", "valid"))}
    fill_replicates = bootstrap.resample_sums(
        {**{n: m.fill.astype(np.float64) for n, m in scored.items()},
         "blanks": np.ones(len(found.blanks))}, resamples, params.seed + 2)
    results = {}
    for name, m in scored.items():
        results[name] = report.metrics(name, m.sums, replicates, text, m.fill, fill_replicates,
                                       found.stats, m.lm.nbytes(), m.lm.kind, level)
        inputs.check_finite(name, results[name], m.lm.path)   # NaN scores: nothing written
        print(report.headline(name, results[name]), flush=True)
    pairs = report.comparisons(results, sums, replicates["test"], level)
    for pair in pairs:
        print(f"evaluate: {pair.sentence()}", flush=True)
    print(f"evaluate: {level:.0%} intervals from {resamples:,} bootstrap resamples of "
          f"{count['test']:,} test {found.stats.get('interval_unit', 'sentences')} in "
          f"{time.perf_counter() - started:.2f} s", flush=True)
    return results, pairs


def evaluate(params: config.Params, found: Inputs, out: Path) -> Evaluation:
    """Score, summarize, answer the probes, sample, and write metrics/ from what `load` read."""
    settings = params.evaluate
    scored, mle = score(found)
    results, pairs = summarize(params, found, scored)
    answers = {name: [tasks.run_probe(m.lm, probe, found.encode, found.vocab.tokens, found.unknown)
                      for probe in found.probes] for name, m in scored.items()}
    samples = {name: [" ".join(found.vocab.decode(s)) for s in
                      tasks.sample(m.lm, settings.samples, settings.temperature, settings.max_length,
                                   params.seed)]
               for name, m in scored.items() if m.lm.kind == "causal" and settings.samples}
    artifacts = report.write(out, results, mle, pairs, found.histories, found.memory, found.probes, answers,
                             samples, settings, len(found.blanks),
                             found.stats.get("interval_unit", "sentences"))
    return Evaluation(results, scored, found, artifacts)
