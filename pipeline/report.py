"""Report. In: per-token log-probabilities of every model on valid and test. Out: the metric
dict with the same keys for every model, and the files DVC tracks as metrics and plots
(metrics.json, mle.json, comparison.md, memory.md, plots/*.csv and *.png)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.scoring import summarize

KEYS = ("val_ppl", "test_ppl", "val_bits_per_token", "test_bits_per_token", "test_tokens",
        "test_oov_rate", "model_bytes")


def metrics(logprobs: dict[str, np.ndarray], stats: dict, model_bytes: int, objective: str) -> dict:
    """The comparison keys (KEYS) plus the objective: `causal` (next-token perplexity) or
    `cloze` (bidirectional pseudo-perplexity, not comparable with causal perplexity)."""
    val, test = summarize(logprobs["valid"]), summarize(logprobs["test"])
    return {"val_ppl": val["ppl"], "test_ppl": test["ppl"],
            "val_bits_per_token": val["bits_per_token"], "test_bits_per_token": test["bits_per_token"],
            "test_tokens": test["tokens"], "test_oov_rate": stats["test"]["oov_rate"],
            "model_bytes": model_bytes, "objective": objective}


def comparison_markdown(results: dict[str, dict]) -> str:
    lines = ["| model | objective | val ppl | test ppl | test bits/token | model MB |",
             "|---|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['objective']} | {r['val_ppl']:.2f} | {r['test_ppl']:.2f} | "
                     f"{r['test_bits_per_token']:.3f} | {r['model_bytes'] / 2**20:.2f} |")
    lines.append("")
    lines.append("Perplexity is closed-vocabulary (`<unk>` predicted like a word), over every word "
                 "and each sentence's `</s>`. `cloze` rows are bidirectional pseudo-perplexities "
                 "(both sides of the blank are seen): not comparable with `causal` rows.")
    return "\n".join(lines) + "\n"


def memory_rows(ngram_memory: list[dict], rnn_bytes: dict[str, int]) -> list[dict]:
    """The seed's claim "n-grams consume a lot of memory" as a table: a Kneser-Ney model of each
    order N beside each RNN's parameters."""
    rows = [{"model": f"ngram N={r['order']}", "entries": r["model_entries"], "bytes": r["model_bytes"]}
            for r in ngram_memory]
    rows += [{"model": name, "entries": size // 4, "bytes": size} for name, size in rnn_bytes.items()]
    return rows


def write(out: Path, results: dict, mle: dict, histories: dict[str, list[dict]],
          memory: list[dict]) -> list[Path]:
    """Write metrics/ and return the files worth logging as MLflow artifacts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    (out / "mle.json").write_text(json.dumps(mle, indent=2))
    (out / "comparison.md").write_text(comparison_markdown(results))
    epochs = sorted({h["epoch"] for history in histories.values() for h in history})
    rows = ["epoch," + ",".join(histories)]
    for epoch in epochs:
        values = [next((f"{h['val_ppl']:.4f}" for h in history if h["epoch"] == epoch), "")
                  for history in histories.values()]
        rows.append(f"{epoch}," + ",".join(values))
    (plots / "val_ppl.csv").write_text("\n".join(rows) + "\n")
    (plots / "test_ppl.csv").write_text("model,objective,test_ppl\n" + "".join(
        f"{name},{r['objective']},{r['test_ppl']:.4f}\n" for name, r in results.items()))

    (plots / "memory.csv").write_text("model,entries,megabytes\n" + "".join(
        f"{r['model']},{r['entries']},{r['bytes'] / 2**20:.3f}\n" for r in memory))
    (out / "memory.md").write_text(
        "| model | entries (n-grams or parameters) | MiB |\n|---|---:|---:|\n" + "".join(
            f"| {r['model']} | {r['entries']:,} | {r['bytes'] / 2**20:.2f} |\n" for r in memory))

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4))
    for name, history in histories.items():
        left.plot([h["epoch"] for h in history], [h["val_ppl"] for h in history], marker="o", label=name)
    left.set(xlabel="epoch", ylabel="validation perplexity", title="RNN training")
    left.legend()
    names = list(results)
    right.bar(names, [results[n]["test_ppl"] for n in names],
              color=["tab:gray" if results[n]["objective"] == "cloze" else "tab:blue" for n in names])
    right.set(ylabel="test perplexity", title="test perplexity (grey: cloze pseudo-ppl)")
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
            plots / "comparison.png", plots / "memory.csv"]
