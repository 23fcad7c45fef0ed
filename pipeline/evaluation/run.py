"""Evaluate every trained model. In: data/prepared, models/ (ngram/, one folder per params.models
kind), params. Out: metrics/ and an `Evaluation` for tracking/ to log. Errors: StateError naming
the file or model and the fix, from `load` (before any scoring) or `summarize` (before writing)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline import config, files
from pipeline.evaluation import bootstrap, breakdowns, interpolation, report, scoring, tasks
from pipeline.evaluation.models import LanguageModel, codec, load_model, retrain_hint
from pipeline.evaluation.probes import load_probes
from pipeline.ngram import counting, kneser_ney
from pipeline.text import units as text_units
from pipeline.text.vocab import BOS_ID, Vocab, check_ids, load_vocab
from pipeline.validation import first_complaint


class Checked(BaseModel):   # other keys pass: only what evaluate reads is checked
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class SplitStats(Checked):
    oov_rate: float = Field(ge=0, le=1)


class Stats(Checked):   # data/prepared/stats.json
    corpus_hash: str = Field(min_length=1)
    valid: SplitStats
    test: SplitStats
    split_method: str = ""
    interval_unit: str = ""


class Epoch(Checked):   # an entry of models/KIND/history.json
    epoch: int = Field(ge=0)
    val_ppl: float = Field(ge=1)
    step: int = Field(0, ge=0)   # written since lmpipe recorded it


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
    units: dict[str, np.ndarray]            # data/prepared/units.npz, checked against splits
    models: dict[str, LanguageModel]  # ngram, then each params.models kind
    counts: counting.NgramCounts            # models/ngram/counts.parquet's the MLE needs (mle_tables)
    totals: list[np.ndarray]                # the count after each of its (m-1)-grams
    histories: dict[str, list[dict]]        # kind -> models/KIND/history.json
    memory: list[dict]                      # memory.md's rows: each n-gram order, each RNN


@dataclass
class Scored:
    """One model's scores: per split, its per-unit sums (scoring.unit_sums) and, causal models
    only, its per-token Scores (for interpolation and breakdowns); per blank, right or not."""
    lm: LanguageModel                 # its weights file: lm.path
    sums: dict[str, dict[str, np.ndarray]]
    fill: np.ndarray
    scores: dict[str, scoring.Scores]   # split -> its Scores but ranks; {} for a cloze model


@dataclass
class Evaluation:
    """What tracking/ logs; models in metrics.json's order (ngram, then params.models)."""
    results: dict[str, dict]                # name -> metrics.json's entry
    mixed: dict[str, dict]                  # "<rnn>+ngram" -> interpolation.json's entry
    scored: dict[str, Scored]
    found: Inputs                           # what `load` read
    artifacts: list[Path]                   # metrics/ files for the pipeline run


def _read(path: Path, schema, fix: str):
    """The JSON at `path` if `schema` (a model or a list of one) accepts it; else StateError + `fix`."""
    value = files.read_json(path, dict if schema is Stats else list, fix=fix)
    try:
        TypeAdapter(schema).validate_python(value)
    except ValidationError as error:
        raise files.damaged(path, first_complaint(error), fix) from None
    return value


def load(params: config.Params, data: Path, models: Path, root: Path) -> Inputs:
    """Every input of `evaluate`, checked in a fixed order (the first damage refused); probes in `root`."""
    c, settings = params.corpus, params.evaluate
    vocab = load_vocab(data)
    stats = _read(data / "stats.json", Stats,
                  f"restore it with `git checkout {data / 'stats.json'}` or rebuild it with "
                  "`dvc repro -f -s prepare`")
    # memory-mapped: pages are read as scored and stay reclaimable (no private copy)
    splits = {name: files.load_array(data / f"{name}.npy", mmap_mode="r")
              for name in ("valid", "test")}
    for name, stream in splits.items():
        check_ids(stream, len(vocab), data / f"{name}.npy", data)
    encode, unknown = codec(vocab, c)
    probes = load_probes(root / settings.probes, encode, c.tokenizer)
    units = files.load_arrays(data / text_units.FILE,
                              tuple(f"{s}_{f}" for s in splits for f in ("unit", "chars")) +
                              tuple(f"test_{f}" for f in text_units.FIELDS))
    text_units.check(units, {s: int(np.count_nonzero(stream == BOS_ID)) for s, stream in splits.items()},
                     data / text_units.FILE, data)
    loaded = {"ngram": load_model(models / "ngram" / "model.npz", len(vocab))}
    try:   # the MLE's bigrams and trigrams of valid and test, a row group at a time
        counts, totals = counting.mle_tables(models / "ngram" / "counts.parquet", list(splits.values()), len(vocab), 3)
    except (OSError, ValueError) as error:
        raise files.damaged(models / "ngram" / "counts.parquet", "missing" if isinstance(
            error, FileNotFoundError) else "damaged, not a parquet table") from None
    blanks = tasks.make_blanks(splits["test"], counts.counts[0], vocab.tokens,   # training counts
                               settings.blanks, params.seed, settings.distractors)
    histories = {}
    for kind in params.models:
        loaded[kind] = load_model(models / kind / "model.pt", len(vocab))
        histories[kind] = _read(models / kind / "history.json", list[Epoch], retrain_hint(models / kind))
    memory = [{"model": f"ngram N={r['order']}", "entries": r["model_entries"], "bytes": r["model_bytes"]}
              for r in files.read_json(models / "ngram" / "memory.json", list)]
    memory += [{"model": kind, "entries": lm.nbytes() // 4, "bytes": lm.nbytes()}   # float32
               for kind, lm in loaded.items() if kind != "ngram"]
    return Inputs(vocab, encode, unknown, stats, splits, probes, blanks, units, loaded, counts, totals,
                  histories, memory)


def score(found: Inputs) -> tuple[dict[str, Scored], dict]:
    """({name: Scored}, mle.json's table), models in found.models' order."""
    splits, units = found.splits, found.units
    scored = {}
    for name, lm in found.models.items():
        scores = {s: lm.stream_scores(stream) for s, stream in splits.items()}
        sums = {s: scoring.unit_sums(scores[s], stream, units[f"{s}_unit"], len(units[f"{s}_chars"]))
                for s, stream in splits.items()}
        scored[name] = Scored(lm, sums, tasks.blank_correct(lm, found.blanks),
                              {s: scoring.Scores(x.logprobs, orders=x.orders) for s, x in scores.items()}
                              if lm.kind == "causal" else {})   # ranks: summed, not kept
    mle = {f"{name}_{split}": scoring.mle_summary(kneser_ney.mle_probs(found.counts, stream, n, found.totals))
           for name, n in (("bigram", 2), ("trigram", 3)) for split, stream in splits.items()}
    return scored, mle


def summarize(params: config.Params, found: Inputs,
              scored: dict[str, Scored]) -> tuple[dict[str, dict], list[bootstrap.Comparison]]:
    """(metrics.json's {name: metrics}, the comparisons) of one bootstrap draw per split; printed."""
    started = time.perf_counter()
    settings, text = params.evaluate, {f: found.units[f"test_{f}"] for f in text_units.FIELDS}
    level, resamples = settings.confidence_level, settings.bootstrap_resamples
    sums = {name: m.sums for name, m in scored.items()}
    replicates = _replicates(params, sums, text)
    fill_replicates = bootstrap.resample_sums(
        {**{n: m.fill.astype(np.float64) for n, m in scored.items()},
         "blanks": np.ones(len(found.blanks))}, resamples, params.seed + 2)
    results = {}
    for name, m in scored.items():
        results[name] = report.metrics(name, m.sums, replicates, text, m.fill, fill_replicates,
                                       found.stats, m.lm.nbytes(), m.lm.kind, level)
        bad = [f"{k}={v}" for k, v in results[name].items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise files.damaged(m.lm.path, f"the scores of {name} are not finite ({', '.join(bad[:3])}"
                                f"{', ...' if len(bad) > 3 else ''}); nothing is written, logged or "
                                "registered", fix=retrain_hint(m.lm.path.parent))
        print(report.headline(name, results[name]), flush=True)
    pairs = report.comparisons(results, sums, replicates["test"], level)
    for pair in pairs:
        print(f"evaluate: {pair.sentence()}", flush=True)
    print(f"evaluate: {level:.0%} intervals from {resamples:,} bootstrap resamples of "
          f"{len(text['chars']):,} test {found.stats.get('interval_unit', 'sentences')} in "
          f"{time.perf_counter() - started:.2f} s", flush=True)
    return results, pairs


def _replicates(params: config.Params, sums: dict, text: dict) -> dict[str, dict[str, np.ndarray]]:
    """{split: resample_sums of its columns}: test's, then valid's, seeded params.seed + 0 and + 1
    (the same seed draws the same units for any columns, so every call pairs with every other)."""
    return {s: bootstrap.resample_sums(report.columns(sums, s, text if s == "test" else None),
                                       params.evaluate.bootstrap_resamples, params.seed + i)
            for i, s in enumerate(("test", "valid"))}


def interpolate(params: config.Params, found: Inputs,
                scored: dict[str, Scored]) -> tuple[dict[str, dict], list[bootstrap.Comparison]]:
    """(interpolation.json's {name: entry}, each mixture against both of its parts) for each causal
    RNN interpolated with the n-gram model (interpolation.py: λ chosen on valid); printed."""
    started, level = time.perf_counter(), params.evaluate.confidence_level
    text = {f: found.units[f"test_{f}"] for f in text_units.FIELDS}
    mixtures = interpolation.mixtures({name: {s: x.logprobs for s, x in m.scores.items()}
                                       for name, m in scored.items() if m.scores})
    sums = {x.name: {s: scoring.unit_sums(scoring.Scores(x.logprobs[s]), stream, found.units[f"{s}_unit"],
                                          len(found.units[f"{s}_chars"])) for s, stream in found.splits.items()}
            for x in mixtures}
    if not sums:
        return {}, []
    sums.update({name: m.sums for name, m in scored.items() if m.scores})
    replicates = _replicates(params, sums, text)
    mixed = {x.name: report.mixture_metrics(x, sums[x.name], replicates, text, level) for x in mixtures}
    pairs = [report.pair(x.name, part, sums, replicates["test"], level) for x in mixtures for part in (x.rnn, x.ngram)]
    for name, result in mixed.items():
        print(report.mixture_headline(name, result), flush=True)
    for pair in pairs:
        print(f"evaluate: {pair.sentence()}", flush=True)
    print(f"evaluate: {len(mixed)} interpolated models, λ chosen on valid, with intervals in "
          f"{time.perf_counter() - started:.2f} s", flush=True)
    return mixed, pairs


def break_down(params: config.Params, found: Inputs, scored: dict[str, Scored]) -> dict[str, dict]:
    """breakdowns.json: the causal models' test log-loss by train frequency, position and the
    n-gram model's backoff order, against the n-gram model (breakdowns.py); seeded as test's draw."""
    started, stream, settings = time.perf_counter(), np.asarray(found.splits["test"]), params.evaluate
    test = {name: m.scores["test"] for name, m in scored.items() if m.scores}
    parts = [breakdowns.by_frequency(stream[stream != BOS_ID], found.counts.counts[0]),
             breakdowns.by_position(stream),
             breakdowns.by_backoff_order(test["ngram"].orders, scored["ngram"].lm.lm.order)]
    cells = breakdowns.tables(parts, {name: x.logprobs for name, x in test.items()},
                              scoring.target_units(stream, found.units["test_unit"]), len(found.units["test_chars"]),
                              "ngram", settings.bootstrap_resamples, params.seed, settings.confidence_level)
    print(f"evaluate: test log-loss of {len(test)} causal models by train frequency, position and backoff "
          f"order ({sum(len(t['cells']) for t in cells.values())} cells, with intervals) in "
          f"{time.perf_counter() - started:.2f} s", flush=True)
    return cells


def evaluate(params: config.Params, found: Inputs, out: Path) -> Evaluation:
    """Score, summarize, answer the probes, sample, and write metrics/ from what `load` read."""
    settings = params.evaluate
    scored, mle = score(found)
    results, pairs = summarize(params, found, scored)
    mixed, mixed_pairs = interpolate(params, found, scored)
    answers = {name: [tasks.run_probe(m.lm, probe, found.encode, found.vocab.tokens, found.unknown)
                      for probe in found.probes] for name, m in scored.items()}
    samples = {name: [" ".join(found.vocab.decode(s)) for s in
                      tasks.sample(m.lm, settings.samples, settings.temperature, settings.max_length,
                                   params.seed)]
               for name, m in scored.items() if m.lm.kind == "causal" and settings.samples}
    artifacts = report.write(out, results, mle, pairs + mixed_pairs, found.histories, found.memory, found.probes,
                             answers, samples, settings, len(found.blanks),
                             found.stats.get("interval_unit", "sentences"), mixed, break_down(params, found, scored))
    return Evaluation(results, mixed, scored, found, artifacts)
