"""Breakdowns of the test log-loss: where one causal model beats another. In: each causal model's
per-token test ln p (the same targets), each target's cell of a breakdown (by_frequency,
by_position, by_backoff_order) and resampling unit. Out: per cell, its tokens, each model's Σ ln p,
bits per token with its bootstrap interval, and its paired verdict against the n-gram model (the
same units and seed as the test split's draw); breakdowns.json. The cells add up to the whole."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.evaluation import bootstrap, plots
from pipeline.ngram.counting import positions_left
from pipeline.text.vocab import BOS_ID, UNK_ID

FREQUENCY_EDGES = (10, 100, 1000)        # train counts: <unk>, 1-10, 11-100, 101-1,000, over 1,000
POSITION_EDGES = (1, 2, 3, 10)           # word positions: 1, 2, 3, 4-10, 11+ (</s> counts as a word)


@dataclass
class Breakdown:
    """A partition of the test targets: `cell` (T,) indexes `labels`."""
    name: str                            # breakdowns.json's key
    title: str
    labels: list[str]
    cell: np.ndarray


def by_frequency(targets: np.ndarray, train_counts: np.ndarray) -> Breakdown:
    """Cells by the target's train count; `<unk>` (every word unseen in train) its own cell."""
    cell = 1 + np.searchsorted(FREQUENCY_EDGES, train_counts[targets], side="left")
    cell[targets == UNK_ID] = 0
    return Breakdown("frequency", "by the target word's train frequency",
                     ["<unk>", "1-10", "11-100", "101-1,000", "over 1,000"], cell)


def by_position(stream: np.ndarray) -> Breakdown:
    """Cells by the target's position in its sentence (1: the word after `<s>`)."""
    stream = np.asarray(stream)
    position = positions_left(stream)[1][stream != BOS_ID]
    return Breakdown("position", "by position in the sentence", ["1", "2", "3", "4-10", "11+"],
                     np.searchsorted(POSITION_EDGES, position, side="left"))


def by_backoff_order(orders: np.ndarray, order: int) -> Breakdown:
    """Cells by the n-gram model's backoff order for the target (scoring.Scores.orders)."""
    return Breakdown("backoff_order", "by the n-gram model's backoff order (the longest n-gram it found)",
                     [f"{n}-gram" for n in range(1, order + 1)], np.asarray(orders) - 1)


def tables(breakdowns: list[Breakdown], logprobs: dict[str, np.ndarray], unit: np.ndarray, units: int,
           baseline: str, resamples: int, seed: int, level: float) -> dict[str, dict]:
    """breakdowns.json: {name: {"title", "cells": {label: cell}}} with each non-empty cell's
    "tokens", "share" and per model (logprobs: {name: (T,) ln p}) "nll_nats", "bits_per_token",
    "ci_low", "ci_high" and, but for `baseline`, "vs_<baseline>" (bootstrap.Comparison.to_json);
    `unit` (T,): each target's resampling unit, drawn as resample_sums(..., seed) draws them."""
    sums, columns = {}, {}
    for b in breakdowns:
        at = b.cell * units + unit
        size = len(b.labels) * units
        sums[b.name] = {"tokens": np.bincount(at, minlength=size).reshape(-1, units).astype(np.float64),
                        **{m: np.bincount(at, weights=-lp, minlength=size).reshape(-1, units)
                           for m, lp in logprobs.items()}}
        for key, table in sums[b.name].items():
            columns.update({f"{b.name}.{c}.{key}": row for c, row in enumerate(table)})
    drawn = bootstrap.resample_sums(columns, resamples, seed)
    return {b.name: {"title": b.title, "cells": {
        label: _cell(sums[b.name], {key: drawn[f"{b.name}.{c}.{key}"] for key in sums[b.name]}, c,
                     baseline, level)
        for c, label in enumerate(b.labels) if sums[b.name]["tokens"][c].sum() > 0}}
        for b in breakdowns}


def _cell(sums: dict[str, np.ndarray], drawn: dict[str, np.ndarray], c: int, baseline: str,
          level: float) -> dict:
    """One cell's entry; replicates that drew none of its tokens are left out of its intervals."""
    tokens = sums["tokens"][c]
    kept = drawn["tokens"] > 0
    out = {"tokens": int(tokens.sum()), "share": float(tokens.sum() / sums["tokens"].sum())}
    for model in (m for m in sums if m != "tokens"):
        nll = sums[model][c]
        low, high = bootstrap.ratio_interval(drawn[model][kept], drawn["tokens"][kept], level, bootstrap.bits)
        out[model] = {"nll_nats": float(nll.sum()), "bits_per_token": float(bootstrap.bits(nll.sum() / tokens.sum())),
                      "ci_low": low, "ci_high": high}
        if model != baseline:
            out[model][f"vs_{baseline}"] = bootstrap.paired(
                model, baseline, nll, sums[baseline][c], tokens,
                {"nll_a": drawn[model][kept], "nll_b": drawn[baseline][kept], "tokens": drawn["tokens"][kept]},
                level).to_json()
    return out


VERDICT = {"yes": "better", "no": "worse", "not distinguishable": "tie"}   # against the baseline


def markdown(found: dict[str, dict], baseline: str, level: float) -> str:
    """comparison.md's breakdown tables: per cell, each model's bits per token [interval] and its
    verdict against `baseline`."""
    pct, lines = f"{level:.0%}", []
    for table in found.values():
        cells = table["cells"]
        models = [m for m in next(iter(cells.values()), {}) if m not in ("tokens", "share")]
        lines += ["", f"### Test log-loss {table['title']} (bits per token [{pct} CI])", "",
                  "| cell | tokens (share) | " + " | ".join(models) + " |",
                  "|---|---:|" + "---:|" * len(models)]
        for label, cell in cells.items():
            shown = label.replace("<", "\\<")   # markdown: a bare <unk> is an HTML tag
            lines.append(f"| {shown} | {cell['tokens']:,} ({cell['share']:.1%}) | " + " | ".join(
                f"{cell[m]['bits_per_token']:.3f} [{cell[m]['ci_low']:.3f}, {cell[m]['ci_high']:.3f}]"
                + (f" {VERDICT[cell[m][f'vs_{baseline}']['verdict']]}" if m != baseline else "")
                for m in models) + " |")
    if lines:
        lines += ["", f"better / worse / tie: the paired bootstrap ({pct}) of the model against "
                      f"{baseline} on that cell's tokens (breakdowns.json holds each Δ). Cells "
                      "add up to the whole test set; a cell with no tokens is left out."]
    return "\n".join(lines) + "\n"


def write(out: Path, found: dict[str, dict], level: float) -> list[Path]:
    """breakdowns.json, plots/breakdowns.csv and plots/breakdown_<name>.png; the paths written."""
    (out / "breakdowns.json").write_text(json.dumps(found, indent=2))
    rows = [f"{name},{label},{m},{v['bits_per_token']:.6g},{v['ci_low']:.6g},{v['ci_high']:.6g}\n"
            for name, table in found.items() for label, cell in table["cells"].items()
            for m, v in cell.items() if isinstance(v, dict)]
    (out / "plots" / "breakdowns.csv").write_text(
        "breakdown,cell,model,bits_per_token,ci_low,ci_high\n" + "".join(rows))
    for name, table in found.items():
        plots.breakdown(table, out / "plots" / f"breakdown_{name}.png", level)
    return [out / "breakdowns.json", out / "plots" / "breakdowns.csv",
            *(out / "plots" / f"breakdown_{name}.png" for name in found)]
