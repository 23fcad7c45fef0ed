"""Stage promote: metrics/metrics.json + metrics/registry.json (versions registered by evaluate)
-> the champion aliases of lmpipe-<kind> (pipeline/tracking/promotion.py: one line per test set,
`champion-<test set id>`, and `champion`) move to the new version only when it beats the champion
of the same test set by promote.margin (and, with promote.require_significant, by the paired
bootstrap of the two models' per-unit test scores: evaluate.bootstrap_resamples,
evaluate.confidence_level, seed); metrics/promotion.json (a DVC metric: 1 promoted, 0 kept back;
with a comparison, its Δ in nats per token, P(better) and significant 1/0) and
metrics/promotion.md say what happened and why. Raises ValueError (one line, naming the file, the
key and the fix) for a registry.json entry without test_set or version.
Usage: python -m stages.promote metrics"""

import json
import sys
from pathlib import Path

from pipeline import config, files
from pipeline.tracking import mlflow_runs, promotion


def main(metrics_dir: str) -> None:
    params = config.load()
    out = Path(metrics_dir)
    fix = "rerun evaluate, which writes it: `dvc repro -f evaluate`"
    results = files.read_json(out / "metrics.json", fix=fix)
    registered = files.read_json(out / "registry.json", fix=fix)
    uri = config.tracking_uri(params.mlflow, config.repo_root())
    mlflow_runs.check_store(uri, params.mlflow.experiment)
    decisions = {}
    for name, result in results.items():
        entry = registered.get(name)
        if entry is None:
            decisions[name] = {"promoted": 0, "version": None, "test_ppl": result["test_ppl"],
                               "champion_version": None,
                               "reason": "not registered (evaluate.register_models: false)"}
            continue
        if not isinstance(result, dict) or "test_ppl" not in result:
            raise files.StateError(f"{out / 'metrics.json'}: {name} has no test_ppl; {fix}")
        for key in ("test_set", "model", "version"):
            if not isinstance(entry, dict) or key not in entry:
                raise ValueError(f"{out / 'registry.json'}: {name} has no {key} (written by an "
                                 "older lmpipe, or edited); rerun evaluate: dvc repro -f evaluate")
        d = decisions[name] = promotion.promote(
            uri, entry["model"], entry["version"], result, entry["test_set"], params.promote.margin,
            run_id=entry.get("run_id"), require_significant=params.promote.require_significant,
            resamples=params.evaluate.bootstrap_resamples,
            level=params.evaluate.confidence_level, seed=params.seed)
        print(f"promote: {name} v{d['version']} (test set {d['test_set']}): "
              f"{'promoted' if d['promoted'] else 'kept back'} ({d['reason']}); {d['default']}",
              flush=True)
        if d["champion_version"] and d["champion_version"] != d["version"]:
            print(f"promote: {name} v{d['version']} vs champion v{d['champion_version']}: "
                  f"{promotion.paired_cell(d)}", flush=True)
    (out / "promotion.json").write_text(json.dumps(
        {name: summary(d) for name, d in decisions.items()}, indent=2))
    (out / "promotion.md").write_text(promotion.markdown(decisions))


def summary(decision: dict) -> dict:
    """The DVC metric of one decision: promoted (1/0), and with a paired comparison against the
    line champion its Δ (nats per token, > 0: the new version is better), P(better) and
    significant (1: the interval of Δ lies above 0)."""
    out = {"promoted": decision["promoted"]}
    paired = decision.get("paired")
    if paired:
        out.update(delta_nats_per_token=paired["delta_nats_per_token"],
                   p_better=paired["p_better"], significant=int(paired["verdict"] == "yes"))
    return out


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
