"""Stage promote: metrics/metrics.json + metrics/registry.json (versions registered by evaluate)
-> the champion aliases of lmpipe-<kind> (pipeline/tracking/promotion.py: one line per test set,
`champion-<test set id>`, and `champion`) move to the new version only when it beats the champion
of the same test set by promote.margin; metrics/promotion.json (a DVC metric: 1 promoted, 0 kept
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
        if "test_set" not in entry:
            raise ValueError(f"{out / 'registry.json'}: {name} has no test_set (written by an older "
                             "lmpipe); rerun evaluate: dvc repro -f evaluate")
        d = decisions[name] = promotion.promote(uri, entry["model"], entry["version"], result,
                                                entry["test_set"], params.promote.margin)
        print(f"promote: {name} v{d['version']} (test set {d['test_set']}): "
              f"{'promoted' if d['promoted'] else 'kept back'} ({d['reason']}); {d['default']}",
              flush=True)
    (out / "promotion.json").write_text(json.dumps(
        {name: {"promoted": d["promoted"]} for name, d in decisions.items()}, indent=2))
    (out / "promotion.md").write_text(promotion.markdown(decisions))


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
