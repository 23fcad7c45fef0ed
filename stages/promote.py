"""Stage promote: metrics/metrics.json + metrics/registry.json (versions registered by evaluate)
-> the MLflow alias `champion` on lmpipe-<kind> moves to the new version only when it beats the
current champion by promote.margin; metrics/promotion.json (a DVC metric: 1 promoted, 0 kept
back) and metrics/promotion.md say what happened and why.
Usage: python -m stages.promote metrics"""

import json
import sys
from pathlib import Path

from pipeline import config
from pipeline.tracking import promotion


def main(metrics_dir: str) -> None:
    params = config.load()
    out = Path(metrics_dir)
    results = json.loads((out / "metrics.json").read_text())
    registered = json.loads((out / "registry.json").read_text())
    uri = config.tracking_uri(params.mlflow, config.repo_root())
    decisions = {}
    for name, result in results.items():
        entry = registered.get(name)
        if entry is None:
            decisions[name] = {"promoted": 0, "version": None, "test_ppl": result["test_ppl"],
                               "champion_version": None,
                               "reason": "not registered (evaluate.register_models: false)"}
            continue
        champion = promotion.champion(uri, entry["model"])
        if champion is not None and champion["version"] == entry["version"]:
            promote, reason = True, "unchanged: this version is already the champion"
        else:
            promote, reason = promotion.decide(result, champion, params.promote.margin)
        if promote:
            promotion.set_champion(uri, entry["model"], entry["version"])
        decisions[name] = {"promoted": int(promote), "version": entry["version"],
                           "test_ppl": result["test_ppl"],
                           "champion_version": champion["version"] if champion else None,
                           "reason": reason}
        print(f"promote: {name} v{entry['version']}: {'promoted' if promote else 'kept back'} ({reason})",
              flush=True)
    (out / "promotion.json").write_text(json.dumps(
        {name: {"promoted": d["promoted"]} for name, d in decisions.items()}, indent=2))
    (out / "promotion.md").write_text(promotion.markdown(decisions))


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
