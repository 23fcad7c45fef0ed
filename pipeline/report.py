"""Report. In: per-token log-probabilities of every model on valid and test. Out: the metric
dict with the same keys for every model, and the files DVC tracks as metrics and plots
(metrics.json, mle.json, comparison.md, plots/*.csv and *.png)."""

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


def write(out: Path, results: dict, mle: dict, histories: dict[str, list[dict]]) -> list[Path]:
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

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        left.plot([h["epoch"] for h in history], [h["val_ppl"] for h in history], marker="o", label=name)
    left.set(xlabel="epoch", ylabel="validation perplexity", title="RNN training")
    left.legend()
    names = list(results)
    right.bar(names, [results[n]["test_ppl"] for n in names],
              color=["tab:gray" if results[n]["objective"] == "cloze" else "tab:blue" for n in names])
    right.set(ylabel="test perplexity", title="test perplexity (grey: cloze pseudo-ppl)")
    figure.tight_layout()
    figure.savefig(plots / "comparison.png", dpi=100)
    plt.close(figure)
    return [out / "comparison.md", out / "metrics.json", out / "mle.json", plots / "comparison.png"]
