"""Stage promote: metrics/metrics.json + metrics/registry.json (versions registered by evaluate)
-> the champion aliases of lmpipe-<kind> (pipeline/tracking/promotion.py: one line per test set,
`champion-<test set id>`, and `champion`) move to the new version only when it beats the champion
of the same test set by promote.margin (and, with promote.require_significant, by the paired
bootstrap of the two models' per-unit test scores: evaluate.bootstrap_resamples,
evaluate.confidence_level, seed); metrics/promotion.json (a DVC metric: 1 promoted, 0 kept back;
with a comparison, its Δ in nats per token, P(better) and significant 1/0) and
metrics/promotion.md say what happened and why. Raises errors.StateError (one line, naming the
file, the model, the key and the fix) before any alias moves when metrics.json or registry.json
is not what evaluate writes: a model without a finite test_ppl (or with any metric NaN or
infinite), a registry.json entry without test_set, model or version, or with a malformed one.
Usage: python -m stages.promote metrics"""

import json
import math
import sys
from pathlib import Path

from pipeline import config, files
from pipeline.tracking import mlflow_runs, promotion

FIX = "rerun evaluate, which writes it: `dvc repro -f evaluate`"


def _range(key: str) -> tuple[float, float, str] | None:
    """(low, high, in words) that a metric of metrics.json must lie in, by its name, or None."""
    if "ppl" in key:
        return 1.0, math.inf, "[1, inf) (a perplexity is at least 1)"
    if "accuracy" in key:
        return 0.0, 1.0, "[0, 1] (an accuracy)"
    if "bits_per" in key:
        return 0.0, math.inf, "[0, inf) (bits)"
    return None


def check_result(path: Path, name: str, result) -> None:
    """Refuse metrics.json's entry of model `name` unless it is an object with a numeric
    test_ppl and no metric NaN, infinite or outside its range (a perplexity below 1, an accuracy
    outside [0, 1], negative bits) (errors.StateError naming the file, model, metric)."""
    if not isinstance(result, dict) or "test_ppl" not in result:
        raise files.damaged(path, f"{name} has no test_ppl", fix=FIX)
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            if key == "test_ppl":
                raise files.damaged(path, f"{name} has test_ppl {value!r}, not a number", fix=FIX)
        elif not math.isfinite(value):
            raise files.damaged(path, f"{name} has {key}={value}, not a finite number (scores of a "
                                "damaged model); nothing is promoted", fix=FIX)
        else:
            allowed = _range(key)
            if allowed and not allowed[0] <= value <= allowed[1]:
                raise files.damaged(path, f"{name} has {key}={value}, outside {allowed[2]}; "
                                    "nothing is promoted", fix=FIX)


def check_entry(path: Path, name: str, entry) -> None:
    """Refuse registry.json's entry of model `name` unless it is what evaluate writes: model
    (a name), version (a number, as text) and test_set (an object of strings with a non-empty
    id, report.test_set). Raises errors.StateError naming the file, model and key."""
    for key in ("test_set", "model", "version"):
        if not isinstance(entry, dict) or key not in entry:
            raise files.damaged(path, f"{name} has no {key} (written by an older lmpipe, or "
                                "edited)", fix=FIX)
    if not isinstance(entry["model"], str) or not entry["model"]:
        raise files.damaged(path, f"{name} has model {entry['model']!r}, not a model name", fix=FIX)
    if not str(entry["version"]).isdigit():
        raise files.damaged(path, f"{name} has version {entry['version']!r}, not a version number",
                            fix=FIX)
    test_set = entry["test_set"]
    if (not isinstance(test_set, dict) or not isinstance(test_set.get("id"), str)
            or not test_set["id"] or not all(isinstance(v, str) for v in test_set.values())):
        raise files.damaged(path, f"{name} has a malformed test_set ({json.dumps(test_set)[:60]}; "
                            "expected an object of strings with an id)", fix=FIX)


def main(metrics_dir: str) -> None:
    params = config.load()
    out = Path(metrics_dir)
    results = files.read_json(out / "metrics.json", fix=FIX)
    registered = files.read_json(out / "registry.json", fix=FIX)
    for name, result in results.items():   # every entry checked before any alias moves
        check_result(out / "metrics.json", name, result)
        if name in registered:
            check_entry(out / "registry.json", name, registered[name])
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
