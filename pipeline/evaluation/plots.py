"""The figures of metrics/plots. In: metrics.json's results, the training histories, the memory
table. Out: intervals.png and comparison.png."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no backend to choose, no figure to close


def intervals(results: dict[str, dict], path: Path, level: float) -> None:
    """intervals.png: each model's test perplexity and bits per character with intervals."""
    names = list(results)[::-1]     # the first model on top
    figure = Figure(figsize=(11, 0.5 * len(names) + 1.6))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, key, label in ((axes[0], "test_ppl", "test perplexity"),
                             (axes[1], "test_bits_per_char", "bits per character")):
        for y, name in enumerate(names):
            r = results[name]
            low, high = r[f"{key}_ci_low"], r[f"{key}_ci_high"]
            axis.errorbar(r[key], y, xerr=[[max(r[key] - low, 0.0)], [max(high - r[key], 0.0)]],
                          fmt="o", capsize=4,
                          color="tab:gray" if r["objective"] == "cloze" else "tab:blue")
        axis.set(xlabel=f"{label} ({level:.0%} bootstrap interval)")
        axis.grid(axis="x", linestyle=":", linewidth=0.5)
    axes[0].set_yticks(range(len(names)), [f"{n} ({results[n]['objective']})" for n in names])
    figure.suptitle("lower is better; grey: cloze pseudo-likelihood, not comparable with causal rows",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def comparison(results: dict, histories: dict[str, list[dict]], memory: list[dict],
                    choices: int, path: Path) -> None:
    """comparison.png: val perplexity per epoch, memory, test perplexity, fill-in accuracy."""
    figure = Figure(figsize=(21, 4))
    left, middle, right, far = figure.subplots(1, 4)
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
    for r in memory[len(ngram_rows):]:   # each RNN's parameters
        middle.axhline(r["bytes"] / 2**20, linestyle="--", linewidth=1, label=f"{r['model']} parameters")
    middle.set(xlabel="n-gram order N", ylabel="MiB", title="memory: n-grams vs RNN parameters")
    middle.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def breakdown(table: dict, path: Path, level: float) -> None:
    """breakdown_<name>.png: each model's test bits per token per cell of one breakdown
    (breakdowns.tables' entry), with intervals; the cells' shares of the tokens under their names."""
    cells = table["cells"]
    models = [m for m in next(iter(cells.values()), {}) if m not in ("tokens", "share")]
    figure = Figure(figsize=(max(7.5, 1.3 * len(cells) + 2), 4.5))
    axis = figure.subplots()
    width = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        x = [i - 0.4 + width * (k + 0.5) for i in range(len(cells))]
        values = [cell[model] for cell in cells.values()]
        axis.errorbar(x, [v["bits_per_token"] for v in values], fmt="o", capsize=3, label=model,
                      yerr=[[max(v["bits_per_token"] - v["ci_low"], 0.0) for v in values],
                            [max(v["ci_high"] - v["bits_per_token"], 0.0) for v in values]])
    axis.set_xticks(range(len(cells)), [f"{label}\n{cell['share']:.1%} of tokens"
                                        for label, cell in cells.items()])
    axis.set(ylabel=f"test bits per token ({level:.0%} bootstrap interval)")
    axis.set_title(f"test log-loss {table['title']}\n(lower is better)", fontsize=9)
    axis.grid(axis="y", linestyle=":", linewidth=0.5)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
