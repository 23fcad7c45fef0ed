"""Report. In: each model's per-unit score sums, fill-in-the-blank results, probe answers, samples.
Out: the same metric keys for every model; metrics/ (metrics.json, mle.json, interpolation.json,
pairs.json, probes and samples, comparison.md, memory.md, plots/*.csv and *.png)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.evaluation import bootstrap, breakdowns, plots

# metric -> (split, numerator, denominator, transform) of per-unit sums; each has <key>_ci_low and
# <key>_ci_high (bootstrap.py), in metrics.json and MLflow; intervals.csv's order
RATIOS = {
    "val_ppl": ("valid", "nll", "tokens", "exp"), "test_ppl": ("test", "nll", "tokens", "exp"),
    "val_bits_per_token": ("valid", "nll", "tokens", "bits"),
    "test_bits_per_token": ("test", "nll", "tokens", "bits"),
    "test_top1_accuracy": ("test", "top1", "tokens", "share"),
    "test_top5_accuracy": ("test", "top5", "tokens", "share"),
    "fill_accuracy": ("blanks", "fill", "blanks", "share"),
    "test_bits_per_char": ("test", "nll", "chars", "bits"),
    "test_bits_per_byte": ("test", "nll", "bytes", "bits"),
    "test_word_ppl": ("test", "nll", "words", "exp")}
TRANSFORMS = {"exp": (math.exp, np.exp), "bits": (bootstrap.bits, bootstrap.bits),
              "share": (float, None)}   # (of the value, of the replicates)
WITH_INTERVALS = tuple(RATIOS)
# metrics.json's order: each group's values, then their intervals
GROUPS = (("val_ppl",), ("val_bits_per_token",), ("test_ppl",), ("test_bits_per_token",),
          ("test_top1_accuracy",), ("test_top5_accuracy",),
          ("test_bits_per_char", "test_bits_per_byte", "test_word_ppl"), ("fill_accuracy",))


def metrics(name: str, sums: dict[str, dict[str, np.ndarray]],
            replicates: dict[str, dict[str, np.ndarray]], text: dict[str, np.ndarray],
            fill: np.ndarray, fill_replicates: dict[str, np.ndarray], stats: dict,
            model_bytes: int, objective: str, level: float) -> dict:
    """Each RATIOS key with its interval, the test counts, test_oov_rate, model_bytes and objective
    of one model, from its unit_sums and the shared replicates per split and per blank."""
    totals = {"valid": sums["valid"], "test": {**sums["test"], **text},
              "blanks": {"fill": fill, "blanks": np.ones(len(fill))}}
    drawn = {**replicates, "blanks": {f"{name}.fill": fill_replicates[name],
                                      "blanks": fill_replicates["blanks"]}}
    out = _ratios(name, GROUPS, totals, drawn, level)
    out.update({"test_tokens": int(sums["test"]["tokens"].sum()),
                "test_chars": int(text["chars"].sum()), "test_bytes": int(text["bytes"].sum()),
                "test_words": int(text["words"].sum()), "test_units": int(len(text["chars"])),
                "test_oov_rate": stats["test"]["oov_rate"], "model_bytes": model_bytes,
                "objective": objective})
    return out


def _ratios(name: str, groups: tuple, totals: dict, drawn: dict, level: float) -> dict:
    """Each RATIOS key of `groups` of model `name` from the per-unit sums `totals` ({split: {column:
    (U,)}}), then its interval from the replicates `drawn` ({split: {"<name>.<column>"|column: (B,)}})."""
    out = {}
    for group in groups:
        for key in group:
            split, numerator, denominator, transform = RATIOS[key]
            out[key] = TRANSFORMS[transform][0](float(totals[split][numerator].sum()) /
                                                float(totals[split][denominator].sum()))
        for key in group:
            split, numerator, denominator, transform = RATIOS[key]
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = bootstrap.ratio_interval(
                drawn[split][f"{name}.{numerator}"], drawn[split][denominator], level,
                TRANSFORMS[transform][1])
    return out


# an interpolated model's keys: its log-loss only (ranks and fill-ins need whole distributions)
MIXTURE_GROUPS = tuple(tuple(k for k in g if RATIOS[k][1] == "nll") for g in GROUPS
                       if any(RATIOS[k][1] == "nll" for k in g))


def mixture_metrics(mixture, sums: dict[str, dict[str, np.ndarray]],
                    replicates: dict[str, dict[str, np.ndarray]], text: dict[str, np.ndarray],
                    level: float) -> dict:
    """interpolation.json's entry of an interpolation.Mixture: its weight, parts and the log-loss
    keys of metrics() (MIXTURE_GROUPS) with intervals, from its unit_sums and the replicates."""
    out = {"interpolation_weight": mixture.weight, "rnn": mixture.rnn, "ngram": mixture.ngram,
           "weight_chosen_on": "valid", "objective": "causal"}
    out.update(_ratios(mixture.name, MIXTURE_GROUPS,
                       {"valid": sums["valid"], "test": {**sums["test"], **text}}, replicates, level))
    out["test_tokens"] = int(sums["test"]["tokens"].sum())
    return out


def columns(sums: dict[str, dict[str, np.ndarray]], split: str,
            text: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One split's per-unit columns resampled together: "tokens", each "<model>.nll|top1|top5", `text`."""
    return {"tokens": next(iter(sums.values()))[split]["tokens"],
            **{f"{name}.{field}": by_split[split][field]
               for name, by_split in sums.items() for field in ("nll", "top1", "top5")
               if field in by_split[split]},
            **(text or {})}


def comparisons(results: dict[str, dict], sums: dict[str, dict[str, dict[str, np.ndarray]]],
                replicates: dict[str, np.ndarray], level: float) -> list:
    """bootstrap.paired on the test split of each pair of models of one objective, (later, earlier)."""
    names = list(results)
    return [pair(a, b, sums, replicates, level) for j, a in enumerate(names) for b in names[:j]
            if results[a]["objective"] == results[b]["objective"]]


def pair(a: str, b: str, sums: dict[str, dict[str, dict[str, np.ndarray]]],
         replicates: dict[str, np.ndarray], level: float) -> bootstrap.Comparison:
    """bootstrap.paired of A against B on the test split (`replicates`: its columns' draw)."""
    return bootstrap.paired(a, b, sums[a]["test"]["nll"], sums[b]["test"]["nll"], sums[a]["test"]["tokens"],
                            {"nll_a": replicates[f"{a}.nll"], "nll_b": replicates[f"{b}.nll"],
                             "tokens": replicates["tokens"]}, level)


def _table(header: tuple, align: str, rows) -> list[str]:
    """A markdown table's lines; `align`: "l" or "r" per column."""
    lines = ["| " + " | ".join(map(str, row)) + " |" for row in (header, *rows)]
    return [lines[0], "|" + "".join("---|" if a == "l" else "---:|" for a in align), *lines[1:]]


def headline(name: str, result: dict) -> str:
    return (f"evaluate: {name}: test ppl {_cell(result, 'test_ppl', '.2f')}, "
            f"val ppl {result['val_ppl']:.2f}, {result['test_bits_per_token']:.3f} bits/token, "
            f"{result['test_bits_per_char']:.3f} bits/char, top-1 {result['test_top1_accuracy']:.3f}, "
            f"fill-in-the-blank {result['fill_accuracy']:.3f} ({result['objective']})")


def mixture_headline(name: str, result: dict) -> str:
    return (f"evaluate: {name} (λ={result['interpolation_weight']:.2f}, chosen on valid): test ppl "
            f"{_cell(result, 'test_ppl', '.2f')}, val ppl {result['val_ppl']:.2f}, "
            f"{result['test_bits_per_token']:.3f} bits/token")


def _cell(r: dict, key: str, spec: str, bold: str = "") -> str:
    """`value [low, high]` of a RATIOS key of metrics() `r`, the value between `bold`s."""
    return f"{bold}{r[key]:{spec}}{bold} [{r[key + '_ci_low']:{spec}}, {r[key + '_ci_high']:{spec}}]"


def comparison_markdown(results: dict[str, dict], blanks: int, choices: int, pairs: list,
                        level: float, resamples: int, unit: str, mixed: dict[str, dict]) -> str:
    """comparison.md: metrics with intervals, paired verdicts (Δ > 0: A better), per char/byte/word."""
    pct = f"{level:.0%}"
    verdicts = {"yes": "**yes**", "no": "no: B is better"}
    lonely = [n for n, r in results.items()
              if sum(x["objective"] == r["objective"] for x in results.values()) == 1]
    lines = [
        *_table(("model", "objective", "val ppl", f"test ppl [{pct} CI]", "test bits/token",
                 "top-1", "top-5", "fill-in-the-blank", "model MiB"), "llrrrrrrr",
                ((name, r["objective"], _cell(r, "val_ppl", ".2f"), _cell(r, "test_ppl", ".2f", "**"),
                  *(_cell(r, key, ".3f") for key in ("test_bits_per_token", "test_top1_accuracy",
                                                     "test_top5_accuracy", "fill_accuracy")),
                  f"{r['model_bytes'] / 2**20:.2f}") for name, r in results.items())),
        "", "Perplexity is closed-vocabulary (`<unk>` predicted like a word), over every word "
            "and each sentence's `</s>` of the test split; top-1/top-5: how often the target "
            "is the model's first / among its five first choices (`<s>` never a candidate). "
            f"Fill-in-the-blank: accuracy on {blanks} test-sentence blanks with {choices} "
            "candidates each (chance 1/%d). `cloze` rows see both sides of each token: their "
            "perplexity is a pseudo-perplexity and their top-k a fill-in accuracy, not "
            "comparable with `causal` rows." % choices,
        "", f"[low, high]: {pct} percentile bootstrap interval, {resamples:,} resamples of "
            f"the test {unit} (blanks for fill-in-the-blank), the same draw for every model.",
        *_mixture_lines(mixed, pct),
        "", f"### Which differences are real (paired bootstrap, {pct})", "",
        *_table(("A", "B", "Δ ln p per token, A − B", "P(A better)", "A better than B?"), "llrrl",
                [(c.a, c.b, f"{c.delta:+.4f} [{c.low:+.4f}, {c.high:+.4f}]", f"{c.p_better:.3f}",
                  verdicts.get(c.verdict, f"not distinguishable at {pct}")) for c in pairs]
                or [("-", "-", "-", "-", "no two models with the same objective")]),
        "", "Δ > 0: A gives the test set the higher likelihood (lower perplexity). Only "
            "models scored on the same targets with the same context are paired: causal "
            "with causal, cloze with cloze" + (f" ({', '.join(lonely)}: no other model "
                                               "of its objective)" if lonely else "") + ".",
        "", "### Per character, byte and word of the original test text", "",
        *_table(("model", "objective", f"bits/char [{pct} CI]", "bits/byte", "word-level ppl",
                 "test tokens", "characters", "bytes", "words"), "llrrrrrrr",
                ((name, r["objective"], _cell(r, "test_bits_per_char", ".4f"),
                  _cell(r, "test_bits_per_byte", ".4f"), _cell(r, "test_word_ppl", ".2f"),
                  *(f"{r[k]:,}" for k in ("test_tokens", "test_chars", "test_bytes", "test_words")))
                 for name, r in results.items())),
        "", "The same total -log p, over the characters, UTF-8 bytes and whitespace-separated "
            "words of the test lines as read (each line's newline counted once, and `</s>` "
            "is its price): the same denominators whatever the tokenizer, so word- and "
            "character-level runs of one corpus compare here (README, What the numbers mean)."]
    return "\n".join(lines) + "\n"


def _mixture_lines(mixed: dict[str, dict], pct: str) -> list[str]:
    """comparison.md's interpolation section (none without an interpolated model)."""
    if not mixed:
        return []
    return [
        "", "### Each recurrent model interpolated with the n-gram model", "",
        *_table(("model (λ: the RNN's weight)", "val ppl", f"test ppl [{pct} CI]", "test bits/token",
                 "bits/char", "word-level ppl"), "lrrrrr",
                ((f"{name} (λ={r['interpolation_weight']:.2f})",
                  _cell(r, "val_ppl", ".2f"), _cell(r, "test_ppl", ".2f", "**"),
                  _cell(r, "test_bits_per_token", ".3f"), _cell(r, "test_bits_per_char", ".4f"),
                  _cell(r, "test_word_ppl", ".2f")) for name, r in mixed.items())),
        "", "p = λ·p_rnn + (1 − λ)·p_ngram for every test token (linear interpolation in "
            "probability space); the interpolation weight λ is the best of 0.00, 0.01, ..., 1.00 "
            "on the validation split, never chosen on test. Its verdicts against both of its "
            "parts are in the paired table below; it has no top-k or fill-in-the-blank scores."]


def probes_markdown(probes: list[dict], answers: dict[str, list[list[dict]]]) -> str:
    """probes.md: one section per probe, one column per model: its answers, best first."""
    out = []
    names = list(answers)
    for i, probe in enumerate(probes):
        out.append(f"### {probe.get('name', i)}: {probe.get('about', '')}\n")
        given = [row for n in names for row in answers[n][i]]   # every model's rows
        skipped = next((row["skipped"] for row in given if "skipped" in row), None)
        if skipped:
            out.append(f"Skipped: {skipped}.\n")
            continue
        context, unknown = (list(dict.fromkeys(w for row in given for w in row.get(key, ())))
                            for key in ("context_oov", "oov"))
        if "text" in probe:
            note = f" (out of vocabulary, scored as `<unk>`: {', '.join(context)})" if context else ""
            out.append(f"`{probe['text']}`{note}\n")
        rows = [[f"{r['text']}{' †' if r.get('oov') else ''} ({r['logprob']:.2f})"
                 for r in answers[n][i]] for n in names]
        out += _table(("#", *names), "l" * (len(names) + 1),
                      ((k + 1, *(r[k] if k < len(r) else "" for r in rows))
                       for k in range(max(map(len, rows)))))
        if unknown:
            out.append(f"\n† out of vocabulary, scored as `<unk>`: {', '.join(unknown)}")
        out.append("")
    out.append("Numbers are natural-log probabilities, ln p (of the whole sentence for `rank` probes and "
               "closed blanks; of the word given its left context for `open` blanks; the "
               "bidirectional model's are of the word given both sides).")
    return "\n".join(out) + "\n"


def samples_markdown(samples: dict[str, list[str]], temperature: float) -> str:
    out = [f"Sentences sampled at temperature {temperature} (one token at a time until `</s>`).\n"]
    for name, sentences in samples.items():
        out.append(f"### {name}\n")
        out.extend(f"{i}. {s}" for i, s in enumerate(sentences, start=1))
        out.append("")
    return "\n".join(out) + "\n"


def write(out: Path, results: dict, mle: dict, pairs: list, histories: dict[str, list[dict]],
          memory: list[dict], probes: list[dict], answers: dict, samples: dict, settings,
          blanks: int, unit: str, mixed: dict[str, dict], broken: dict[str, dict]) -> list[Path]:
    """Write metrics/ (settings: params.evaluate; mixed: interpolation.json's entries; broken:
    breakdowns.tables' against the n-gram model) and return the files to log in MLflow."""
    figures, level, choices = out / "plots", settings.confidence_level, settings.distractors + 1
    figures.mkdir(parents=True, exist_ok=True)
    for name, value in (("probes.json", answers), ("samples.json", samples), ("metrics.json", results),
                        ("mle.json", mle), ("interpolation.json", mixed), ("pairs.json", {f"{c.a}_vs_{c.b}": c.to_json() for c in pairs})):
        (out / name).write_text(json.dumps(value, indent=2))
    (out / "comparison.md").write_text(comparison_markdown(
        results, blanks, choices, pairs, level, settings.bootstrap_resamples, unit, mixed)
        + breakdowns.markdown(broken, "ngram", level))
    (figures / "intervals.csv").write_text("model,objective,metric,value,ci_low,ci_high\n" + "".join(
        f"{name},{r['objective']},{key},{r[key]:.6g},{r[key + '_ci_low']:.6g},{r[key + '_ci_high']:.6g}\n"
        for key in WITH_INTERVALS for name, r in results.items()))
    plots.intervals(results, figures / "intervals.png", level)
    (out / "probes.md").write_text(probes_markdown(probes, answers))
    (out / "samples.md").write_text(samples_markdown(samples, settings.temperature))
    pd.DataFrame({name: {h["epoch"]: float(h["val_ppl"]) for h in history}
                  for name, history in histories.items()}).sort_index().to_csv(
        figures / "val_ppl.csv", index_label="epoch", float_format="%.4f")
    for key in ("test_ppl", "fill_accuracy"):
        pd.DataFrame.from_dict(results, orient="index")[["objective", key]].to_csv(
            figures / f"{key}.csv", index_label="model", float_format="%.4f")
    (figures / "memory.csv").write_text("model,entries,megabytes\n" + "".join(
        f"{r['model']},{r['entries']},{r['bytes'] / 2**20:.3f}\n" for r in memory))
    (out / "memory.md").write_text("\n".join(_table(
        ("model", "entries (n-grams or parameters)", "MiB"), "lrr",
        ((r["model"], f"{r['entries']:,}", f"{r['bytes'] / 2**20:.2f}") for r in memory))) + "\n")
    plots.comparison(results, histories, memory, choices, figures / "comparison.png")
    return [*breakdowns.write(out, broken, level), out / "comparison.md", out / "memory.md", out / "metrics.json", out / "mle.json",
            out / "interpolation.json", out / "pairs.json", figures / "intervals.png", figures / "intervals.csv",
            out / "probes.md", out / "samples.md", figures / "comparison.png", figures / "memory.csv",
            figures / "val_ppl.csv", figures / "test_ppl.csv", figures / "fill_accuracy.csv"]
