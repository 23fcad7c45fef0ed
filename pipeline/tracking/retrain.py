"""`lmpipe retrain [--base REV]`: what CI runs when data, params or code change (it drives dvc).
In: the repository. Out: reports/retrain.md: which stages ran and why (`dvc status` before `dvc
repro`), `dvc params diff` and `dvc metrics diff` against the base revision, the comparison
table and plots, and the promotion decisions (stage `promote`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tabulate import tabulate

from pipeline.tracking import commands

RUNNING = re.compile(r"^Running stage '([^']+)'", re.M)


def _why(changes: list) -> str:
    """dvc status --json entries of one stage -> a short reason."""
    reasons = []
    for change in changes:
        if isinstance(change, str):
            reasons.append(change)
            continue
        for kind, items in change.items():          # "changed deps" / "changed outs" / ...
            if isinstance(items, dict):   # {path: "modified"} or {params.yaml: {key: "modified"}}
                names = [f"{path} ({', '.join(what) if isinstance(what, dict) else what})"
                         for path, what in items.items()]
                reasons.append(f"{kind}: {'; '.join(names)}")
            else:
                reasons.append(f"{kind}: {items}")
    return "; ".join(reasons) or "changed"


def run(root: Path, base: str | None, out: Path, print_fn=print) -> dict:
    """Reproduce what changed, write the report; {"ran": [...], "report": path}; ValueError (dvc)."""
    status = json.loads(commands.run(root, "dvc", "status", "--json") or "{}")
    reasons = {stage.split(":")[-1]: _why(changes) for stage, changes in status.items()}
    print_fn(f"retrain: {len(reasons)} stage(s) out of date: {', '.join(reasons) or 'none'}")
    log = commands.run(root, "dvc", "repro", merged=True)
    ran = RUNNING.findall(log)
    print_fn(f"retrain: ran {', '.join(ran) or 'nothing'}")
    sections = ["# Retraining report", ""]
    if base:
        sections.append(f"Base revision: `{base}`\n")
    sections += ["## Stages that ran", ""]
    if ran:
        sections.append(tabulate([(stage, reasons.get(stage, "downstream of a changed stage"))
                                  for stage in ran], headers=["stage", "why"], tablefmt="github",
                                 disable_numparse=True))
    else:
        sections.append("None: data, params and code are unchanged.")
    if base:
        params = commands.run(root, "dvc", "params", "diff", base, "--md", merged=True).strip()
        metrics = commands.run(root, "dvc", "metrics", "diff", base, "--md", merged=True).strip()
        sections += ["", f"## Params changed since `{base}`", "", params or "No params changed.",
                     "", f"## Metrics since `{base}`", "", metrics or "No metrics changed."]
    comparison = root / "metrics" / "comparison.md"
    promotion = root / "metrics" / "promotion.md"
    sections += ["", "## Comparison", "", comparison.read_text() if comparison.exists() else "(none)",
                 "", "![comparison](../metrics/plots/comparison.png)", "",
                 "## Promotion (MLflow alias `champion`)", "",
                 promotion.read_text() if promotion.exists() else "(no promotion stage output)"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(sections) + "\n")
    print_fn(f"retrain: wrote {out}")
    return {"ran": ran, "report": out}
