"""The promotion gate. In: a new model's metrics and the current champion's (or None), the
margin from params. Out: promote or keep back, and why, in words a pull-request reader can act on.

    causal models:        promote when  test_ppl_new < test_ppl_champion x (1 - margin)
    bidirectional (cloze): the same, and fill_accuracy_new >= fill_accuracy_champion
A model with no champion yet is promoted. The champion is the registered version (see
pipeline/tracking/registry.py) that holds the MLflow alias `champion` of `lmpipe-<kind>`.
"""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient


def decide(new: dict, champion: dict | None, margin: float) -> tuple[bool, str]:
    """(promote?, reason). `new` and champion["metrics"] hold test_ppl, fill_accuracy, objective."""
    if champion is None:
        return True, "no champion yet"
    old = champion["metrics"]
    if "test_ppl" not in old:
        return True, f"champion v{champion['version']} has no test_ppl"
    bar = old["test_ppl"] * (1 - margin)
    if not new["test_ppl"] < bar:
        return False, (f"test_ppl {new['test_ppl']:.3f} does not beat champion v{champion['version']}'s "
                       f"{old['test_ppl']:.3f} by the margin {margin:g} (needs < {bar:.3f})")
    if new.get("objective") == "cloze" and new["fill_accuracy"] < old.get("fill_accuracy", 0.0):
        return False, (f"fill_accuracy {new['fill_accuracy']:.3f} is below champion "
                       f"v{champion['version']}'s {old['fill_accuracy']:.3f}")
    return True, (f"test_ppl {new['test_ppl']:.3f} beats champion v{champion['version']}'s "
                  f"{old['test_ppl']:.3f} by more than the margin {margin:g}")


def markdown(decisions: dict[str, dict]) -> str:
    lines = ["| model | version | decision | test ppl | champion | reason |", "|---|---|---|---:|---|---|"]
    for name, d in decisions.items():
        champion = f"v{d['champion_version']}" if d.get("champion_version") else "-"
        lines.append(f"| {name} | {d.get('version') or '-'} | "
                     f"{'**promoted**' if d['promoted'] else 'kept back'} | {d['test_ppl']:.3f} | "
                     f"{champion} | {d['reason']} |")
    return "\n".join(lines) + "\n"


CHAMPION = "champion"


def champion(tracking_uri: str, model_name: str) -> dict | None:
    """The registered version holding the `champion` alias, with its run's metrics, or None."""
    client = MlflowClient(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return {"version": str(version.version), "run_id": version.run_id, "metrics": metrics}


def set_champion(tracking_uri: str, model_name: str, version: str) -> None:
    MlflowClient(tracking_uri).set_registered_model_alias(model_name, CHAMPION, version)
