"""The promotion gate (the rule: docs/ci.md#promotion). In: a new version's metrics and test set,
the champions (versions of lmpipe-<kind> holding `champion` or champion-<test set id>), promote.*.
Out: which aliases move, and why; paired Δ in nats/token. Errors: StateError (not registered)."""

from __future__ import annotations

import math
import statistics
import zipfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from pipeline.errors import StateError
from pipeline.evaluation import bootstrap
from pipeline.tracking import artifacts

CHAMPION = "champion"
TEST_SET = "test_set"   # version tag: the test set id; `test_set.<field>` tags: what it is made of
UNIT_SCORES = "unit_scores.npz"   # a model run's artifact: "nll" (nats), "tokens", (U,) per test unit
RECIPE, SEED = "recipe", "training_seed"   # model run tags: what trained it but the seed; the seed


def line_alias(test_set_id: str) -> str:
    return f"{CHAMPION}-{test_set_id}"


def decide(new: dict, champion: dict | None, margin: float,
           spread: dict | None = None) -> tuple[bool, str]:
    """(promote?, reason) by the margin and the seed `spread` ({sd, n}: seed_spread) alone;
    `new`, champion["metrics"]: metrics.json's entries."""
    if champion is None:
        return True, "no champion yet"
    old = champion["metrics"]
    if "test_ppl" not in old:
        return True, f"champion v{champion['version']} has no test_ppl"
    if not math.isfinite(old["test_ppl"]):   # scored from a damaged model: not a bar to clear
        return True, f"champion v{champion['version']}'s test_ppl is {old['test_ppl']}"
    bar = old["test_ppl"] * (1 - margin)
    by = f"the margin {margin:g}"
    if spread:
        bar = min(bar, old["test_ppl"] - spread["sd"])
        by += (f" and the seed spread (SD {spread['sd']:.3f} over {spread['n']} seeds of this "
               "recipe)")
    if not new["test_ppl"] < bar:
        return False, (f"test_ppl {new['test_ppl']:.3f} does not beat champion v{champion['version']}'s "
                       f"{old['test_ppl']:.3f} by {by} (needs < {bar:.3f})")
    if new.get("objective") == "cloze" and new["fill_accuracy"] < old.get("fill_accuracy", 0.0):
        return False, (f"fill_accuracy {new['fill_accuracy']:.3f} is below champion "
                       f"v{champion['version']}'s {old['fill_accuracy']:.3f}")
    return True, (f"test_ppl {new['test_ppl']:.3f} beats champion v{champion['version']}'s "
                  f"{old['test_ppl']:.3f} by more than {by}")


def seed_spread(tracking_uri: str, run_id: str, recipe: str, seed: int,
                test_set_id: str) -> dict | None:
    """Tags model run `run_id` with its `recipe` and training `seed`; then {sd (ddof=1), n, mean}
    of test_ppl over the newest run of each seed of `recipe` on `test_set_id`, None below 2 seeds."""
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, RECIPE, recipe)
    client.set_tag(run_id, SEED, str(seed))
    runs = client.search_runs([client.get_run(run_id).info.experiment_id],
                              f"tags.{RECIPE} = '{recipe}' and tags.{TEST_SET} = '{test_set_id}' "
                              "and metrics.test_ppl > 0", order_by=["attributes.start_time DESC"])
    values = list({run.data.tags[SEED]: run.data.metrics["test_ppl"] for run in reversed(runs)}.values())
    return {"sd": statistics.stdev(values), "n": len(values), "mean": statistics.fmean(values)} \
        if len(values) >= 2 else None


def differences(new: dict, old: dict) -> str:
    """'' for the same test set (evaluation_runs.test_set_of), else e.g. "different corpus (d7dc.. vs 81aa..)"."""
    if old.get("id") == new.get("id"):
        return ""
    if not old.get("id"):
        return "the champion has no test-set record (promoted before lmpipe recorded test sets)"
    parts = [f"{field} ({old.get(field, '?')} vs {new.get(field, '?')})"
             for field in new if field != "id" and old.get(field) != new.get(field)]
    return "different " + ", ".join(parts or ["test set"])


def promote(tracking_uri: str, model_name: str, version: str, result: dict, test_set: dict,
            margin: float, *, run_id: str | None = None, require_significant: bool = False,
            resamples: int = 1000, level: float = 0.95, seed: int = 0, spread: dict | None = None,
            sweep: bool = False) -> dict:
    """The decision on `version` (metrics `result` on `test_set`) against its line's champion, then
    `champion` (_default_alias), as promotion.json/md show it; StateError: not in the registry."""
    client = MlflowClient(tracking_uri)
    try:
        client.get_model_version(model_name, version)
    except mlflow.exceptions.MlflowException:   # deleted in the UI, or another store
        raise StateError(f"{model_name} v{version} (metrics/registry.json) is not in the MLflow "
                         f"registry at {tracking_uri}; `dvc repro -f -s evaluate`") from None
    line = line_alias(test_set["id"])
    champ = champion(tracking_uri, model_name, line)
    unchanged = champ is not None and champ["version"] == version
    compared: dict[str, tuple] = {}

    def versus(old: dict) -> tuple[bootstrap.Comparison | None, str, str]:
        if old["version"] not in compared:
            compared[old["version"]] = compare(tracking_uri, model_name, version, run_id, old,
                                               test_set["id"], resamples, level, seed)
        return compared[old["version"]]

    def judge(old: dict | None) -> tuple[bool, str]:
        beats, why = decide(result, old, margin, spread)
        if beats and old is not None and require_significant:
            beats, why = significant(why, *versus(old))
        return beats, why

    promoted, reason = (True, "unchanged: this version is already the champion") if unchanged \
        else judge(champ)
    if sweep:
        promoted, reason = False, f"a sweep member (promote.sweep: true) moves no alias; {reason}"
    if promoted and not unchanged:
        client.set_registered_model_alias(model_name, line, version)
    leader = version if promoted else (champ["version"] if champ else None)
    note, target = (f"`{CHAMPION}` left alone: a sweep member", None) if sweep else \
        _default_alias(tracking_uri, model_name, version, test_set, leader, unchanged, judge)
    if target is not None:
        client.set_registered_model_alias(model_name, CHAMPION, target)
    paired, problem = None, ""
    if champ is not None and not unchanged:
        comparison, problem, _ = versus(champ)
        paired = comparison.to_json() if comparison is not None else None
    return {"promoted": int(promoted), "version": version, "test_ppl": result["test_ppl"],
            "test_set": test_set["id"], "champion_version": champ["version"] if champ else None,
            "reason": reason, "default": note, "paired": paired, "paired_problem": problem}


def _default_alias(tracking_uri: str, model_name: str, version: str, test_set: dict,
                   leader: str | None, unchanged: bool, judge) -> tuple[str, str | None]:
    """(what happens to `champion`, the version it moves to or None): it moves only from a
    version of the same test set that `version` beats too (`judge`), or, missing, to `leader`."""
    default = champion(tracking_uri, model_name, CHAMPION)
    if default is None:
        return (f"`{CHAMPION}` set to v{leader}: the first line" if leader
                else f"no `{CHAMPION}` yet"), leader
    if default["version"] == version:
        return f"already `{CHAMPION}`", None
    if differs := differences(test_set, default["test_set"]):
        return f"`{CHAMPION}` (v{default['version']}) kept: not comparable, {differs}", None
    if unchanged:
        return f"`{CHAMPION}` stays v{default['version']}", None
    beats, why = judge(default)
    return (f"`{CHAMPION}` moved from v{default['version']}" if beats else
            f"`{CHAMPION}` stays v{default['version']} ({why})"), version if beats else None


def significant(why: str, comparison: bootstrap.Comparison | None, problem: str,
                remedy: str) -> tuple[bool, str]:
    """(promote?, reason) under promote.require_significant, from decide's `why`: Δ's CI above 0."""
    if comparison is None:
        return False, (f"kept back by promote.require_significant: {problem}; {remedy}, or set "
                       "promote.require_significant: false")
    pct = percent(comparison.level)
    if comparison.verdict == "yes":
        return True, f"{why}, and significantly (paired bootstrap, {pct})"
    found = "finds it worse" if comparison.verdict == "no" else "cannot tell them apart"
    return False, (f"{why}, but not significantly: the paired bootstrap at {pct} {found}; "
                   "kept back by promote.require_significant: true")


def compare(tracking_uri: str, model_name: str, version: str, run_id: str | None, old: dict,
            test_set_id: str, resamples: int, level: float,
            seed: int) -> tuple[bootstrap.Comparison | None, str, str]:
    """The paired bootstrap of `version` (A) against the champion `old` (B) on `test_set_id`:
    (comparison, "", "") with Δ = (Σ nll_B - Σ nll_A) / Σ tokens, nats per token (> 0: A is
    better), or (None, problem, remedy) when scores are missing or their units disagree."""
    new, problem = unit_scores(tracking_uri, model_name, version, run_id, test_set_id)
    if new is None:
        return None, f"v{version}'s {problem}", "rerun evaluate (dvc repro -f -s evaluate)"
    commit = old.get("commit") or ""
    where = f" (commit {commit[:12]})" if commit and commit != "none" else ""
    remedy = (f"to compare, re-evaluate champion v{old['version']}{where} with this lmpipe's "
              f"evaluate stage, which logs {UNIT_SCORES}")
    champ, problem = unit_scores(tracking_uri, model_name, old["version"], old.get("run_id"),
                                 test_set_id)
    if champ is None:
        return None, f"champion v{old['version']}'s {problem}", remedy
    units = len(new["nll"])
    if len(champ["nll"]) != units:
        return None, (f"v{version} has {units} test units and champion v{old['version']} "
                      f"{len(champ['nll'])}, although both record test set {test_set_id}"), remedy
    if not np.array_equal(new["tokens"], champ["tokens"]):
        differ = int(np.sum(new["tokens"] != champ["tokens"]))
        return None, (f"the per-unit token counts of v{version} and champion v{old['version']} "
                      f"differ in {differ} of {units} units, although both record test set "
                      f"{test_set_id}"), remedy
    replicates = bootstrap.resample_sums(
        {"nll_a": new["nll"], "nll_b": champ["nll"], "tokens": new["tokens"]}, resamples, seed)
    comparison = bootstrap.paired(f"v{version}", f"v{old['version']}", new["nll"], champ["nll"],
                                  new["tokens"], replicates, level)
    return comparison, "", ""


def unit_scores(tracking_uri: str, model_name: str, version: str, run_id: str | None,
                test_set_id: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """({"nll": nats, "tokens"}, both (U,) float64, "") from the first of `run_id`, `version`'s run
    and its re-scorings on `test_set_id` (newest first) that holds UNIT_SCORES; else (None, why)."""
    client = MlflowClient(tracking_uri)
    candidates = [run_id] if run_id else []
    registered = client.get_model_version(model_name, version)   # promote found it
    if registered.run_id:
        query = (f"tags.registered_version = '{version}' and tags.model_kind = "
                 f"'{model_name.removeprefix('lmpipe-')}' and tags.{TEST_SET} = '{test_set_id}'")
        try:
            experiment = client.get_run(registered.run_id).info.experiment_id
            rescored = client.search_runs([experiment], query, max_results=20,
                                          order_by=["attributes.start_time DESC"])
        except mlflow.exceptions.MlflowException:   # its run purged by `mlflow gc`
            rescored = []
        candidates += [registered.run_id, *(r.info.run_id for r in rescored)]
    if not candidates:
        return None, "run is unknown (no run id in registry.json nor on the registered version)"
    problems = []
    for candidate in dict.fromkeys(candidates):
        scores, problem = _download_scores(tracking_uri, candidate)
        if scores is not None:
            return scores, ""
        problems.append(problem)
    others = f" (nor do {len(problems) - 1} other runs that scored its weights)"
    return None, problems[0] + (others if len(problems) > 1 else "")


def _download_scores(tracking_uri: str, run_id: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """({"nll", "tokens"}, "") from run `run_id`'s UNIT_SCORES, or (None, why)."""
    def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with np.load(path, allow_pickle=False) as data:
            return (np.asarray(data["nll"], dtype=np.float64),
                    np.asarray(data["tokens"], dtype=np.float64))

    try:
        found = artifacts.read(tracking_uri, run_id, UNIT_SCORES, load)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        return None, f"{UNIT_SCORES} of run {run_id} is unreadable ({error})"
    if found is None:
        return None, (f"run {run_id} has no {UNIT_SCORES} (evaluated before lmpipe logged "
                      "per-unit test scores)")
    nll, tokens = found
    if nll.ndim != 1 or nll.shape != tokens.shape or not (np.isfinite(nll).all() and tokens.sum() > 0):
        return None, (f"{UNIT_SCORES} of run {run_id} is malformed: nll {nll.shape} and tokens "
                      f"{tokens.shape} must be of one length, finite nll, some tokens")
    return {"nll": nll, "tokens": tokens}, ""


def percent(level: float) -> str:
    return f"{level * 100:g}%"


def champion(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> dict | None:
    """The version holding `alias`: {version, run_id, metrics, commit, test_set}, or None."""
    client = MlflowClient(tracking_uri)
    number = client.get_registered_model(model_name).aliases.get(alias)
    if number is None:
        return None
    version = client.get_model_version(model_name, number)
    try:   # a deleted run still answers; one purged by `mlflow gc` does not
        run = client.get_run(version.run_id) if version.run_id else None
    except mlflow.exceptions.MlflowException:
        run = None
    metrics, commit = (run.data.metrics, run.data.tags.get("git_commit", "")) if run else ({}, "")
    test_set = {"id" if key == TEST_SET else key.removeprefix(TEST_SET + "."): value
                for key, value in version.tags.items() if key.split(".")[0] == TEST_SET}
    return {"version": str(version.version), "run_id": version.run_id, "metrics": metrics,
            "commit": commit, "test_set": test_set}
