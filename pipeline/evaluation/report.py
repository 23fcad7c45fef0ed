"""Report. In: every model's per-unit score sums on valid and test, fill-in-the-blank accuracies,
probe answers and samples. Out: the metric dict with the same keys for every model, and the files
DVC tracks as metrics and plots (metrics.json, mle.json, pairs.json, comparison.md, memory.md,
probes.md, samples.md, plots/*.csv and *.png)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.evaluation import bootstrap, plots
from pipeline.evaluation.scoring import text_metrics, token_metrics

KEYS = ("val_ppl", "test_ppl", "val_bits_per_token", "test_bits_per_token", "test_top1_accuracy",
        "test_top5_accuracy", "fill_accuracy", "test_bits_per_char", "test_bits_per_byte",
        "test_word_ppl", "test_tokens", "test_chars", "test_bytes", "test_words", "test_units",
        "test_oov_rate", "model_bytes")
# every one of these has <key>_ci_low and <key>_ci_high (bootstrap.py), in metrics.json and MLflow
WITH_INTERVALS = ("val_ppl", "test_ppl", "val_bits_per_token", "test_bits_per_token",
                  "test_top1_accuracy", "test_top5_accuracy", "fill_accuracy", "test_bits_per_char",
                  "test_bits_per_byte", "test_word_ppl")
CI_KEYS = tuple(f"{k}_ci_{end}" for k in WITH_INTERVALS for end in ("low", "high"))


def metrics(name: str, sums: dict[str, dict[str, np.ndarray]],
            replicates: dict[str, dict[str, np.ndarray]], text: dict[str, np.ndarray],
            fill: np.ndarray, fill_replicates: dict[str, np.ndarray], stats: dict,
            model_bytes: int, objective: str, level: float) -> dict:
    """KEYS, CI_KEYS and the objective (causal, or cloze: pseudo-perplexity) of one model, from
    its unit_sums per split, the shared resample_sums of `columns` per split, and per blank."""
    out = {}
    for split, prefix in (("valid", "val"), ("test", "test")):
        total, drawn = sums[split], replicates[split]
        nll, tokens = float(total["nll"].sum()), float(total["tokens"].sum())
        nll_b, tokens_b = drawn[f"{name}.nll"], drawn["tokens"]
        point = token_metrics(nll, tokens)
        out[f"{prefix}_ppl"] = point["ppl"]
        out[f"{prefix}_ppl_ci_low"], out[f"{prefix}_ppl_ci_high"] = bootstrap.ratio_interval(
            nll_b, tokens_b, level, np.exp)
        out[f"{prefix}_bits_per_token"] = point["bits_per_token"]
        out[f"{prefix}_bits_per_token_ci_low"], out[f"{prefix}_bits_per_token_ci_high"] = \
            bootstrap.ratio_interval(nll_b, tokens_b, level, bootstrap.bits)
        if split == "test":
            for k in ("top1", "top5"):
                key = f"test_{k}_accuracy"
                out[key] = float(total[k].sum()) / tokens
                out[f"{key}_ci_low"], out[f"{key}_ci_high"] = bootstrap.ratio_interval(
                    drawn[f"{name}.{k}"], tokens_b, level)
            sizes = {field: float(text[field].sum()) for field in ("chars", "bytes", "words")}
            for key, value in text_metrics(nll, sizes["chars"], sizes["bytes"], sizes["words"]).items():
                out[f"test_{key}"] = value
            for key, field, transform in (("bits_per_char", "chars", bootstrap.bits),
                                          ("bits_per_byte", "bytes", bootstrap.bits),
                                          ("word_ppl", "words", np.exp)):
                out[f"test_{key}_ci_low"], out[f"test_{key}_ci_high"] = bootstrap.ratio_interval(
                    nll_b, drawn[field], level, transform)
    out["fill_accuracy"] = float(np.mean(fill))
    out["fill_accuracy_ci_low"], out["fill_accuracy_ci_high"] = bootstrap.ratio_interval(
        fill_replicates[name], fill_replicates["blanks"], level)
    out.update({"test_tokens": int(sums["test"]["tokens"].sum()),
                "test_chars": int(text["chars"].sum()), "test_bytes": int(text["bytes"].sum()),
                "test_words": int(text["words"].sum()), "test_units": int(len(text["chars"])),
                "test_oov_rate": stats["test"]["oov_rate"], "model_bytes": model_bytes,
                "objective": objective})
    return out


def columns(sums: dict[str, dict[str, np.ndarray]], split: str,
            text: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One split's per-unit columns to resample together: "<model>.nll|top1|top5" of each model
    of {model: {split: unit_sums}}, "tokens" (every model scores the same targets), and `text`."""
    out = {}
    for name, by_split in sums.items():
        part = by_split[split]
        out["tokens"] = part["tokens"]
        out.update({f"{name}.{field}": part[field] for field in ("nll", "top1", "top5")})
    out.update(text or {})
    return out


def comparisons(results: dict[str, dict], sums: dict[str, dict[str, dict[str, np.ndarray]]],
                replicates: dict[str, np.ndarray], level: float) -> list:
    """bootstrap.paired on the test split of each pair of models of one objective (only those
    score the same targets from the same context), as (later, earlier) in `results`' order."""
    names = list(results)
    out = []
    for j, a in enumerate(names):
        for b in names[:j]:
            if results[a]["objective"] != results[b]["objective"]:
                continue
            drawn = {"nll_a": replicates[f"{a}.nll"], "nll_b": replicates[f"{b}.nll"],
                     "tokens": replicates["tokens"]}
            out.append(bootstrap.paired(a, b, sums[a]["test"]["nll"], sums[b]["test"]["nll"],
                                        sums[a]["test"]["tokens"], drawn, level))
    return out


def headline(name: str, result: dict) -> str:
    return (f"evaluate: {name}: test ppl {result['test_ppl']:.2f} {_ci(result, 'test_ppl', '.2f')}, "
            f"val ppl {result['val_ppl']:.2f}, {result['test_bits_per_token']:.3f} bits/token, "
            f"{result['test_bits_per_char']:.3f} bits/char, top-1 {result['test_top1_accuracy']:.3f}, "
            f"fill-in-the-blank {result['fill_accuracy']:.3f} ({result['objective']})")


def _ci(result: dict, key: str, spec: str) -> str:
    return f"[{result[key + '_ci_low']:{spec}}, {result[key + '_ci_high']:{spec}}]"


def test_set(stats: dict, seed: int, split: dict, corpus: dict, data_dir: Path) -> dict[str, str]:
    """What a test perplexity is of: corpus hash, split, tokenizer, SHA-256 (12 hex digits) of
    vocab.json and test.npy, and "id" of them all; numbers compare only under equal ids."""
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:12]
    method = stats.get("split_method", split["method"])
    fields = {
        "corpus": stats["corpus_hash"],
        "split": "given" if method == "given" else (   # contiguous draws nothing: no seed
            f"{method}{'' if method == 'contiguous' else f' seed={seed}'} "
            f"train={split['train']:g} valid={split['valid']:g} test={split['test']:g}"),
        "tokenizer": (f"{corpus['tokenizer']} lowercase={str(corpus['lowercase']).lower()} "
                      f"unk={corpus['unk'] or 'none'}"),
        "vocab": digest((data_dir / "vocab.json").read_bytes()),
        "test_tokens": digest((data_dir / "test.npy").read_bytes())}
    return {**fields, "id": digest(json.dumps(fields, sort_keys=True).encode())}


def comparison_markdown(results: dict[str, dict], blanks: int, choices: int, pairs: list,
                        level: float, resamples: int, unit: str) -> str:
    """comparison.md: the metrics with their intervals, the paired verdicts, the numbers per
    character, byte and word of the test text."""
    def cell(r: dict, key: str, spec: str) -> str:
        return f"{r[key]:{spec}} {_ci(r, key, spec)}"

    pct = f"{level:.0%}"
    lines = [f"| model | objective | val ppl | test ppl [{pct} CI] | test bits/token | "
             f"top-1 | top-5 | fill-in-the-blank | model MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['objective']} | {cell(r, 'val_ppl', '.2f')} | "
                     f"**{r['test_ppl']:.2f}** {_ci(r, 'test_ppl', '.2f')} | "
                     f"{cell(r, 'test_bits_per_token', '.3f')} | "
                     f"{cell(r, 'test_top1_accuracy', '.3f')} | {cell(r, 'test_top5_accuracy', '.3f')} | "
                     f"{cell(r, 'fill_accuracy', '.3f')} | {r['model_bytes'] / 2**20:.2f} |")
    lines.append("")
    lines.append("Perplexity is closed-vocabulary (`<unk>` predicted like a word), over every word "
                 "and each sentence's `</s>` of the test split; top-1/top-5: how often the target "
                 "is the model's first / among its five first choices (`<s>` never a candidate). "
                 f"Fill-in-the-blank: accuracy on {blanks} test-sentence blanks with {choices} "
                 "candidates each (chance 1/%d). `cloze` rows see both sides of each token: their "
                 "perplexity is a pseudo-perplexity and their top-k a fill-in accuracy, not "
                 "comparable with `causal` rows." % choices)
    lines.append("")
    lines.append(f"[low, high]: {pct} percentile bootstrap interval, {resamples:,} resamples of "
                 f"the test {unit} (blanks for fill-in-the-blank), the same draw for every model.")
    lines += _pairs_markdown(results, pairs, pct)
    lines += ["", "### Per character, byte and word of the original test text", "",
              f"| model | objective | bits/char [{pct} CI] | bits/byte | word-level ppl | "
              "test tokens | characters | bytes | words |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['objective']} | {cell(r, 'test_bits_per_char', '.4f')} | "
                     f"{cell(r, 'test_bits_per_byte', '.4f')} | {cell(r, 'test_word_ppl', '.2f')} | "
                     f"{r['test_tokens']:,} | {r['test_chars']:,} | {r['test_bytes']:,} | "
                     f"{r['test_words']:,} |")
    lines.append("")
    lines.append("The same total -log p, over the characters, UTF-8 bytes and whitespace-separated "
                 "words of the test lines as read (each line's newline counted once, and `</s>` "
                 "is its price): the same denominators whatever the tokenizer, so word- and "
                 "character-level runs of one corpus compare here (README, What the numbers mean).")
    return "\n".join(lines) + "\n"


def _pairs_markdown(results: dict[str, dict], pairs: list, pct: str) -> list[str]:
    lines = ["", f"### Which differences are real (paired bootstrap, {pct})", "",
             "| A | B | Δ ln p per token, A − B | P(A better) | A better than B? |",
             "|---|---|---:|---:|---|"]
    for c in pairs:
        verdict = {"yes": "**yes**", "no": "no: B is better"}.get(
            c.verdict, f"not distinguishable at {pct}")
        lines.append(f"| {c.a} | {c.b} | {c.delta:+.4f} [{c.low:+.4f}, {c.high:+.4f}] | "
                     f"{c.p_better:.3f} | {verdict} |")
    if not pairs:
        lines.append("| - | - | - | - | no two models with the same objective |")
    lonely = [n for n, r in results.items()
              if sum(x["objective"] == r["objective"] for x in results.values()) == 1]
    lines.append("")
    lines.append("Δ > 0: A gives the test set the higher likelihood (lower perplexity). Only "
                 "models scored on the same targets with the same context are paired: causal "
                 "with causal, cloze with cloze" + (f" ({', '.join(lonely)}: no other model "
                                                    "of its objective)" if lonely else "") + ".")
    return lines


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
        out.append("| # | " + " | ".join(names) + " |")
        out.append("|---|" + "---|" * len(names))
        for k in range(max(len(answers[n][i]) for n in names)):
            rows = [answers[n][i][k] if k < len(answers[n][i]) else None for n in names]
            out.append(f"| {k + 1} | " + " | ".join("" if r is None else f"{r['text']}{' †' if r.get('oov') else ''} "
                                                    f"({r['logprob']:.2f})" for r in rows) + " |")
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


def memory_rows(ngram_memory: list[dict], rnn_bytes: dict[str, int]) -> list[dict]:
    """A Kneser-Ney model of each order N (memory.json) beside each RNN's parameter bytes."""
    rows = [{"model": f"ngram N={r['order']}", "entries": r["model_entries"], "bytes": r["model_bytes"]}
            for r in ngram_memory]
    rows += [{"model": name, "entries": size // 4, "bytes": size} for name, size in rnn_bytes.items()]
    return rows


def write(out: Path, results: dict, mle: dict, pairs: list, histories: dict[str, list[dict]],
          memory: list[dict], probes: list[dict], answers: dict, samples: dict, settings,
          blanks: int, unit: str) -> list[Path]:
    """Write metrics/ (settings: params.evaluate) and return the files to log in MLflow."""
    figures, level, choices = out / "plots", settings.confidence_level, settings.distractors + 1
    figures.mkdir(parents=True, exist_ok=True)
    (out / "probes.json").write_text(json.dumps(answers, indent=2))
    (out / "samples.json").write_text(json.dumps(samples, indent=2))
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    (out / "mle.json").write_text(json.dumps(mle, indent=2))
    (out / "pairs.json").write_text(json.dumps({f"{c.a}_vs_{c.b}": c.to_json() for c in pairs},
                                               indent=2))
    (out / "comparison.md").write_text(comparison_markdown(
        results, blanks, choices, pairs, level, settings.bootstrap_resamples, unit))
    (figures / "intervals.csv").write_text("model,objective,metric,value,ci_low,ci_high\n" + "".join(
        f"{name},{r['objective']},{key},{r[key]:.6g},{r[key + '_ci_low']:.6g},{r[key + '_ci_high']:.6g}\n"
        for key in WITH_INTERVALS for name, r in results.items()))
    plots.intervals(results, figures / "intervals.png", level)
    (out / "probes.md").write_text(probes_markdown(probes, answers))
    (out / "samples.md").write_text(samples_markdown(samples, settings.temperature))
    epochs = sorted({h["epoch"] for history in histories.values() for h in history})
    rows = ["epoch," + ",".join(histories)]
    for epoch in epochs:
        values = [next((f"{h['val_ppl']:.4f}" for h in history if h["epoch"] == epoch), "")
                  for history in histories.values()]
        rows.append(f"{epoch}," + ",".join(values))
    (figures / "val_ppl.csv").write_text("\n".join(rows) + "\n")
    for key in ("test_ppl", "fill_accuracy"):
        (figures / f"{key}.csv").write_text(f"model,objective,{key}\n" + "".join(
            f"{name},{r['objective']},{r[key]:.4f}\n" for name, r in results.items()))

    (figures / "memory.csv").write_text("model,entries,megabytes\n" + "".join(
        f"{r['model']},{r['entries']},{r['bytes'] / 2**20:.3f}\n" for r in memory))
    (out / "memory.md").write_text(
        "| model | entries (n-grams or parameters) | MiB |\n|---|---:|---:|\n" + "".join(
            f"| {r['model']} | {r['entries']:,} | {r['bytes'] / 2**20:.2f} |\n" for r in memory))

    plots.comparison(results, histories, memory, choices, figures / "comparison.png")
    return [out / "comparison.md", out / "memory.md", out / "metrics.json", out / "mle.json",
            out / "pairs.json", figures / "intervals.png", figures / "intervals.csv",
            out / "probes.md", out / "samples.md", figures / "comparison.png", figures / "memory.csv",
            figures / "val_ppl.csv", figures / "test_ppl.csv", figures / "fill_accuracy.csv"]
