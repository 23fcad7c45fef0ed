"""Report. In: the scores of every model on valid and test (per-token log-probabilities and
ranks), fill-in-the-blank accuracies, probe answers and samples. Out: the metric dict with the
same keys for every model, and the files DVC tracks as metrics and plots (metrics.json,
mle.json, comparison.md, memory.md, probes.md, samples.md, plots/*.csv and *.png)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # scoring imports torch; `lmpipe compare` needs only KEYS
    from pipeline.evaluation.scoring import Scores

KEYS = ("val_ppl", "test_ppl", "val_bits_per_token", "test_bits_per_token", "test_top1_accuracy",
        "test_top5_accuracy", "fill_accuracy", "test_tokens", "test_oov_rate", "model_bytes")


def metrics(scores: dict[str, Scores], stats: dict, model_bytes: int, objective: str,
            fill_accuracy: float) -> dict:
    """The comparison keys (KEYS) plus the objective: `causal` (next-token prediction) or `cloze`
    (bidirectional: its perplexity is a pseudo-perplexity and its top-k accuracy a fill-in
    accuracy, not comparable with causal rows)."""
    from pipeline.evaluation.scoring import summarize
    val, test = summarize(scores["valid"]), summarize(scores["test"])
    return {"val_ppl": val["ppl"], "test_ppl": test["ppl"],
            "val_bits_per_token": val["bits_per_token"], "test_bits_per_token": test["bits_per_token"],
            "test_top1_accuracy": test["top1_accuracy"], "test_top5_accuracy": test["top5_accuracy"],
            "fill_accuracy": fill_accuracy,
            "test_tokens": test["tokens"], "test_oov_rate": stats["test"]["oov_rate"],
            "model_bytes": model_bytes, "objective": objective}


def headline(name: str, result: dict) -> str:
    """One line for the terminal: the numbers people compare, rounded for people."""
    return (f"evaluate: {name}: test ppl {result['test_ppl']:.2f}, val ppl {result['val_ppl']:.2f}, "
            f"{result['test_bits_per_token']:.3f} bits/token, top-1 {result['test_top1_accuracy']:.3f}, "
            f"fill-in-the-blank {result['fill_accuracy']:.3f} ({result['objective']})")


def test_set(stats: dict, seed: int, split: dict, corpus: dict, data_dir: Path) -> dict[str, str]:
    """What a test perplexity is a perplexity of: {"corpus": the corpus hash (every split file),
    "split": the method with its seed and sizes ("given" when the source splits), "tokenizer":
    the tokenizer with lowercase and the unknown-word marker, "vocab" and "test_tokens": the
    SHA-256 (first 12 hex digits) of vocab.json and test.npy, "id": 12 hex digits of all of
    them}. Two numbers are comparable only when their ids are equal (the promotion gate)."""
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


def comparison_markdown(results: dict[str, dict], blanks: int = 0, choices: int = 5) -> str:
    lines = ["| model | objective | val ppl | test ppl | test bits/token | top-1 | top-5 | "
             "fill-in-the-blank | model MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['objective']} | {r['val_ppl']:.2f} | {r['test_ppl']:.2f} | "
                     f"{r['test_bits_per_token']:.3f} | {r['test_top1_accuracy']:.3f} | "
                     f"{r['test_top5_accuracy']:.3f} | {r['fill_accuracy']:.3f} | "
                     f"{r['model_bytes'] / 2**20:.2f} |")
    lines.append("")
    lines.append("Perplexity is closed-vocabulary (`<unk>` predicted like a word), over every word "
                 "and each sentence's `</s>` of the test split; top-1/top-5: how often the target "
                 "is the model's first / among its five first choices (`<s>` never a candidate). "
                 f"Fill-in-the-blank: accuracy on {blanks} test-sentence blanks with {choices} "
                 "candidates each (chance 1/%d). `cloze` rows see both sides of each token: their "
                 "perplexity is a pseudo-perplexity and their top-k a fill-in accuracy, not "
                 "comparable with `causal` rows." % choices)
    return "\n".join(lines) + "\n"


def probes_markdown(probes: list[dict], answers: dict[str, list[list[dict]]]) -> str:
    """One section per probe, one column per model: its answers, best first."""
    out = []
    names = list(answers)
    for i, probe in enumerate(probes):
        out.append(f"### {probe.get('name', i)}: {probe.get('about', '')}\n")
        if "text" in probe:
            context = list(dict.fromkeys(w for n in names for row in answers[n][i]
                                         for w in row.get("context_oov", ())))
            note = f" (out of vocabulary, scored as `<unk>`: {', '.join(context)})" if context else ""
            out.append(f"`{probe['text']}`{note}\n")
        out.append("| # | " + " | ".join(names) + " |")
        out.append("|---|" + "---|" * len(names))
        depth = max(len(answers[n][i]) for n in names)
        for k in range(depth):
            cells = []
            for n in names:
                rows = answers[n][i]
                mark = " †" if k < len(rows) and rows[k].get("oov") else ""
                cells.append(f"{rows[k]['text']}{mark} ({rows[k]['logprob']:.2f})" if k < len(rows) else "")
            out.append(f"| {k + 1} | " + " | ".join(cells) + " |")
        unknown = list(dict.fromkeys(w for n in names for row in answers[n][i] for w in row.get("oov", ())))
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
    """The seed's claim "n-grams consume a lot of memory" as a table: a Kneser-Ney model of each
    order N beside each RNN's parameters."""
    rows = [{"model": f"ngram N={r['order']}", "entries": r["model_entries"], "bytes": r["model_bytes"]}
            for r in ngram_memory]
    rows += [{"model": name, "entries": size // 4, "bytes": size} for name, size in rnn_bytes.items()]
    return rows


def write(out: Path, results: dict, mle: dict, histories: dict[str, list[dict]],
          memory: list[dict], probes_md: str, samples_md: str, blanks: int,
          choices: int) -> list[Path]:
    """Write metrics/ and return the files worth logging as MLflow artifacts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    (out / "mle.json").write_text(json.dumps(mle, indent=2))
    (out / "comparison.md").write_text(comparison_markdown(results, blanks, choices))
    (out / "probes.md").write_text(probes_md)
    (out / "samples.md").write_text(samples_md)
    epochs = sorted({h["epoch"] for history in histories.values() for h in history})
    rows = ["epoch," + ",".join(histories)]
    for epoch in epochs:
        values = [next((f"{h['val_ppl']:.4f}" for h in history if h["epoch"] == epoch), "")
                  for history in histories.values()]
        rows.append(f"{epoch}," + ",".join(values))
    (plots / "val_ppl.csv").write_text("\n".join(rows) + "\n")
    (plots / "test_ppl.csv").write_text("model,objective,test_ppl\n" + "".join(
        f"{name},{r['objective']},{r['test_ppl']:.4f}\n" for name, r in results.items()))
    (plots / "fill_accuracy.csv").write_text("model,objective,fill_accuracy\n" + "".join(
        f"{name},{r['objective']},{r['fill_accuracy']:.4f}\n" for name, r in results.items()))

    (plots / "memory.csv").write_text("model,entries,megabytes\n" + "".join(
        f"{r['model']},{r['entries']},{r['bytes'] / 2**20:.3f}\n" for r in memory))
    (out / "memory.md").write_text(
        "| model | entries (n-grams or parameters) | MiB |\n|---|---:|---:|\n" + "".join(
            f"| {r['model']} | {r['entries']:,} | {r['bytes'] / 2**20:.2f} |\n" for r in memory))

    figure, (left, middle, right, far) = plt.subplots(1, 4, figsize=(21, 4))
    for name, history in histories.items():
        left.plot([h["epoch"] for h in history], [h["val_ppl"] for h in history], marker="o", label=name)
    left.set(xlabel="epoch", ylabel="validation perplexity", title="RNN training")
    left.legend()
    names = list(results)
    right.bar(names, [results[n]["test_ppl"] for n in names],
              color=["tab:gray" if results[n]["objective"] == "cloze" else "tab:blue" for n in names])
    right.set(ylabel="test perplexity", title="test perplexity (grey: cloze pseudo-ppl)")
    far.bar(names, [results[n]["fill_accuracy"] for n in names], color="tab:green")
    far.axhline(1 / choices, color="black", linestyle=":", linewidth=1, label="chance")
    far.set(ylabel="accuracy", ylim=(0, 1), title="fill-in-the-blank accuracy")
    far.legend()
    ngram_rows = [r for r in memory if r["model"].startswith("ngram")]
    middle.plot(range(1, len(ngram_rows) + 1), [r["bytes"] / 2**20 for r in ngram_rows], marker="o",
                label="Kneser-Ney model of order N")
    for r in memory:
        if not r["model"].startswith("ngram"):
            middle.axhline(r["bytes"] / 2**20, linestyle="--", linewidth=1, label=f"{r['model']} parameters")
    middle.set(xlabel="n-gram order N", ylabel="MiB", title="memory: n-grams vs RNN parameters")
    middle.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(plots / "comparison.png", dpi=100)
    plt.close(figure)
    return [out / "comparison.md", out / "memory.md", out / "metrics.json", out / "mle.json",
            out / "probes.md", out / "samples.md", plots / "comparison.png", plots / "memory.csv",
            plots / "val_ppl.csv", plots / "test_ppl.csv", plots / "fill_accuracy.csv"]
