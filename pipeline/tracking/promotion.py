"""The promotion gate. In: a new model's metrics, the test set it was scored on, and the current
champions (registered versions holding an alias of `lmpipe-<kind>`); the margin from params.
Out: which aliases move, and why, in words a pull-request reader can act on.

    causal models:        promote when  test_ppl_new < test_ppl_champion x (1 - margin)
    bidirectional (cloze): the same, and fill_accuracy_new >= fill_accuracy_champion

Perplexities are compared only on the same test set (`test_set`: the corpus hash, the split,
the tokenizer, the vocabulary and the test tokens; see pipeline/evaluation/report.py). Each test
set keeps its own line of champions, the alias `champion-<test set id>`; the alias `champion` is
the line of the test set it first went to, and moves only to a better model of that line — a
model of another corpus, split, tokenizer or vocabulary is "not comparable" and leaves it alone.
A line with no champion yet takes the new model. To move `champion` to another line, delete the
alias (MLflow UI: the registered model's version page, Aliases) and promote again.
"""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

CHAMPION = "champion"
TEST_SET = "test_set"   # version tag: the test set id; `test_set.<field>` tags: what it is made of


def line_alias(test_set_id: str) -> str:
    return f"{CHAMPION}-{test_set_id}"


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


def differences(new: dict, old: dict) -> str:
    """'' when two test sets (the `test_set` dicts of report.test_set) are the same, else what
    differs, e.g. "different corpus (d7dc.. vs 81aa..), tokenizer (words vs chars)"."""
    if old.get("id") == new.get("id"):
        return ""
    if not old.get("id"):
        return "the champion has no test-set record (promoted before lmpipe recorded test sets)"
    parts = [f"{field} ({old.get(field, '?')} vs {new.get(field, '?')})"
             for field in new if field != "id" and old.get(field) != new.get(field)]
    return "different " + ", ".join(parts or ["test set"])


def promote(tracking_uri: str, model_name: str, version: str, result: dict, test_set: dict,
            margin: float) -> dict:
    """Gate `version` of `model_name` (metrics `result`, scored on `test_set`) against the
    champion of its test set's line (alias champion-<id>), then the alias `champion`: it moves
    only when it holds a version of the same test set that the new one beats too (decide), or
    is missing (it then goes to the line's champion, so `models:/...@champion` resolves once a
    line exists). A version that already is its line's champion leaves both alone. Returns
    {"promoted": 0|1, "version", "test_ppl", "test_set", "champion_version", "reason",
    "default": what happened to `champion`}."""
    client = MlflowClient(tracking_uri)
    line = line_alias(test_set["id"])
    champ = champion(tracking_uri, model_name, line)
    unchanged = champ is not None and champ["version"] == version
    if unchanged:
        promoted, reason = True, "unchanged: this version is already the champion"
    else:
        promoted, reason = decide(result, champ, margin)
    if promoted and not unchanged:
        client.set_registered_model_alias(model_name, line, version)
    leader = version if promoted else (champ["version"] if champ else None)
    default = champion(tracking_uri, model_name, CHAMPION)
    target = None
    if default is None:
        target = leader
        note = f"`{CHAMPION}` set to v{leader}: the first line" if leader else f"no `{CHAMPION}` yet"
    elif default["version"] == version:
        note = f"already `{CHAMPION}`"
    elif differs := differences(test_set, default["test_set"]):
        note = f"`{CHAMPION}` (v{default['version']}) kept: not comparable, {differs}"
    elif unchanged:
        note = f"`{CHAMPION}` stays v{default['version']}"
    else:
        beats, why = decide(result, default, margin)
        target = version if beats else None
        note = (f"`{CHAMPION}` moved from v{default['version']}" if beats else
                f"`{CHAMPION}` stays v{default['version']} ({why})")
    if target is not None:
        client.set_registered_model_alias(model_name, CHAMPION, target)
    return {"promoted": int(promoted), "version": version, "test_ppl": result["test_ppl"],
            "test_set": test_set["id"], "champion_version": champ["version"] if champ else None,
            "reason": reason, "default": note}


def markdown(decisions: dict[str, dict]) -> str:
    lines = ["| model | version | test set | decision | test ppl | line champion | reason | alias champion |",
             "|---|---|---|---|---:|---|---|---|"]
    for name, d in decisions.items():
        champion = f"v{d['champion_version']}" if d.get("champion_version") else "-"
        lines.append(f"| {name} | {d.get('version') or '-'} | {d.get('test_set') or '-'} | "
                     f"{'**promoted**' if d['promoted'] else 'kept back'} | {d['test_ppl']:.3f} | "
                     f"{champion} | {d['reason']} | {d.get('default') or '-'} |")
    return "\n".join(lines) + "\n"


def champion(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> dict | None:
    """The registered version holding `alias`, with its run's metrics and its test set (from
    the version's tags; {} for a version registered before lmpipe recorded them), or None."""
    client = MlflowClient(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    test_set = {k.removeprefix(TEST_SET + "."): v for k, v in version.tags.items()
                if k.startswith(TEST_SET + ".")}
    if TEST_SET in version.tags:
        test_set["id"] = version.tags[TEST_SET]
    return {"version": str(version.version), "run_id": version.run_id, "metrics": metrics,
            "test_set": test_set}
