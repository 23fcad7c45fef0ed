"""The promotion gate. In: a new version's metrics and test set (report.test_set), the champions
(versions holding an alias of lmpipe-<kind>), promote.margin. Out: which aliases move, and why.
A version beats a champion of the same test set when test_ppl_new < test_ppl_champion x (1 -
margin) (cloze: and no lower fill_accuracy); with promote.require_significant, also when the
paired bootstrap of both runs' unit_scores.npz puts Δ nats/token above 0. Each test set has its
line (alias champion-<id>); `champion` stays on the line it first went to (docs/ci.md)."""

from __future__ import annotations

import math
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
UNIT_SCORES = "unit_scores.npz"   # artifact of each model run (stages/evaluate.py): "nll" (nats) and
                                  # "tokens", (U,) sums per test unit, in the order of the test set


def line_alias(test_set_id: str) -> str:
    return f"{CHAMPION}-{test_set_id}"


def decide(new: dict, champion: dict | None, margin: float) -> tuple[bool, str]:
    """(promote?, reason) by the margin alone (no significance: see significant). `new` and
    champion["metrics"] hold test_ppl, fill_accuracy, objective."""
    if champion is None:
        return True, "no champion yet"
    old = champion["metrics"]
    if "test_ppl" not in old:
        return True, f"champion v{champion['version']} has no test_ppl"
    if not math.isfinite(old["test_ppl"]):   # scored from a damaged model: not a bar to clear
        return True, f"champion v{champion['version']}'s test_ppl is {old['test_ppl']}"
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
            margin: float, *, run_id: str | None = None, require_significant: bool = False,
            resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Gate `version` of `model_name` (metrics `result`, scored on `test_set`) against the
    champion of its test set's line (alias champion-<id>), then the alias `champion` (see
    _default_alias). A version that already is its line's champion leaves both alone.
    `run_id`: the run holding the new model's unit_scores.npz (default: the version's run). The
    paired bootstrap against each champion it is gated on (`resamples` replicates drawn with
    `seed`, intervals at `level`) is computed when both models' scores exist; with
    `require_significant` a champion is beaten only when it says "yes" (significant). Raises
    StateError (_registered), and what MLflow raises for an unreachable store; missing scores or
    a deleted champion are reasons, not errors. Returns {"promoted": 0|1, "version", "test_ppl",
    "test_set", "champion_version", "reason", "default": what happened to `champion`, "paired":
    the comparison with the line champion (bootstrap.Comparison.to_json()) or None,
    "paired_problem": why there is none ("" when there is, or no champion to compare)}."""
    client = _registered(tracking_uri, model_name, version, result)
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
        beats, why = decide(result, old, margin)
        if beats and old is not None and require_significant:
            beats, why = significant(why, *versus(old))
        return beats, why

    if unchanged:
        promoted, reason = True, "unchanged: this version is already the champion"
    else:
        promoted, reason = judge(champ)
    if promoted and not unchanged:
        client.set_registered_model_alias(model_name, line, version)
    leader = version if promoted else (champ["version"] if champ else None)
    note, target = _default_alias(tracking_uri, model_name, version, test_set, leader, unchanged,
                                  judge)
    if target is not None:
        client.set_registered_model_alias(model_name, CHAMPION, target)
    paired, problem = None, ""
    if champ is not None and not unchanged:
        comparison, problem, _ = versus(champ)
        paired = comparison.to_json() if comparison is not None else None
    return {"promoted": int(promoted), "version": version, "test_ppl": result["test_ppl"],
            "test_set": test_set["id"], "champion_version": champ["version"] if champ else None,
            "reason": reason, "default": note, "paired": paired, "paired_problem": problem}


def _registered(tracking_uri: str, model_name: str, version: str, result: dict) -> MlflowClient:
    """A client of the registry holding `version`, whose test_ppl and fill_accuracy are finite.
    Raises StateError when `version` is not in the registry (deleted behind lmpipe's back) or a
    score is NaN or infinite (never promoted)."""
    for key in ("test_ppl", "fill_accuracy"):
        value = result.get(key, 0.0)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise StateError(f"{model_name} v{version}: {key} is {value!r}, not a finite number "
                             "(scores of a damaged model), so it is not promoted; rerun evaluate: "
                             "`dvc repro -f evaluate`")
    client = MlflowClient(tracking_uri)
    try:
        client.get_model_version(model_name, version)
    except mlflow.exceptions.MlflowException:
        raise StateError(
            f"{model_name} v{version}, registered by evaluate (metrics/registry.json), is not in "
            f"the MLflow registry at {tracking_uri} (deleted in the UI, or another store); "
            "register the models again: `dvc repro -f evaluate`") from None
    return client


def _default_alias(tracking_uri: str, model_name: str, version: str, test_set: dict,
                   leader: str | None, unchanged: bool, judge) -> tuple[str, str | None]:
    """(what happens to the alias `champion`, the version it moves to or None). It moves only
    when it holds a version of the same test set that `version` beats too (`judge`), or is
    missing: it then goes to `leader`, the line's champion, so `models:/...@champion` resolves
    once a line exists."""
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
    """promote.require_significant on top of decide's "beats the margin" (`why`): (promote?,
    reason). Promote only when the paired bootstrap's verdict is "yes" (its interval of Δ, in
    nats per token, lies above 0); without a comparison (`problem`, e.g. the champion's run has
    no unit_scores.npz) keep back, naming the problem, `remedy` and the way out of the gate."""
    if comparison is None:
        return False, (f"kept back by promote.require_significant: {problem}; {remedy}, or set "
                       "promote.require_significant: false")
    pct = percent(comparison.level)
    if comparison.verdict == "yes":
        return True, f"{why}, and significantly (paired bootstrap, {pct})"
    found = "finds it worse" if comparison.verdict == "no" else "cannot tell them apart"
    return False, (f"{why}, but not significantly: the paired bootstrap at {pct} {found} "
                   f"(Δ {comparison.delta:+.4f} nats/token [{comparison.low:+.4f}, "
                   f"{comparison.high:+.4f}]); kept back by promote.require_significant: true")


def compare(tracking_uri: str, model_name: str, version: str, run_id: str | None, old: dict,
            test_set_id: str, resamples: int, level: float,
            seed: int) -> tuple[bootstrap.Comparison | None, str, str]:
    """The paired bootstrap of `version` (A, its scores in `run_id` or the version's runs)
    against the champion `old` (B, a dict of `champion`), both scored on test set `test_set_id`:
    (comparison, "", "") with Δ = (Σ nll_B - Σ nll_A) / Σ tokens in nats per token (> 0: the new
    version is better), or (None, problem, remedy) when either model's unit_scores.npz is
    missing or unreadable, or the two disagree in their units (count or per-unit tokens).
    Raises ValueError (bootstrap.resample_sums) only for resamples < 1."""
    new, problem = unit_scores(tracking_uri, model_name, version, run_id, test_set_id)
    if new is None:
        return None, f"v{version}'s {problem}", "rerun evaluate (dvc repro -f evaluate)"
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


def unit_scores(tracking_uri: str, model_name: str, version: str, run_id: str | None = None,
                test_set_id: str | None = None) -> tuple[dict[str, np.ndarray] | None, str]:
    """The per-unit test scores of `version` of `model_name`: ({"nll": nats, "tokens"}, both (U,)
    float64, "") from the first run holding UNIT_SCORES among `run_id`, the version's own run,
    and the runs that re-scored the version's weights since (tag registered_version, on test set
    `test_set_id`), newest first; (None, why) when none does, or the file is unreadable or
    malformed. Never raises for a missing artifact (MLflow's MlflowException and OSError are
    caught); raises MlflowException when the store itself cannot be reached."""
    client = MlflowClient(tracking_uri)
    candidates = [run_id] if run_id else []
    try:
        registered = client.get_model_version(model_name, version)
    except mlflow.exceptions.MlflowException:
        registered = None
    if registered is not None and registered.run_id:
        candidates.append(registered.run_id)
        candidates += _rescoring_runs(client, model_name, version, registered.run_id, test_set_id)
    if not candidates:
        return None, "run is unknown (no run id in registry.json nor on the registered version)"
    problems = []
    for candidate in dict.fromkeys(candidates):
        scores, problem = _download_scores(tracking_uri, candidate)
        if scores is not None:
            return scores, ""
        problems.append(problem)
    others = {1: "", 2: " (nor does the other run that scored its weights)"}.get(
        len(problems), f" (nor does any of the {len(problems) - 1} other runs that scored its weights)")
    return None, problems[0] + others


def _rescoring_runs(client: MlflowClient, model_name: str, version: str, run_id: str,
                    test_set_id: str | None) -> list[str]:
    """Runs of the experiment of `run_id` that evaluate registered as `version` again (the same
    weights on the same test set: tag registered_version), newest first."""
    try:
        experiment = client.get_run(run_id).info.experiment_id
        query = (f"tags.registered_version = '{version}' and "
                 f"tags.model_kind = '{model_name.removeprefix('lmpipe-')}'")
        if test_set_id:
            query += f" and tags.{TEST_SET} = '{test_set_id}'"
        runs = client.search_runs([experiment], query, order_by=["attributes.start_time DESC"],
                                  max_results=20)
    except mlflow.exceptions.MlflowException:
        return []
    return [r.info.run_id for r in runs]


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
    if nll.ndim != 1 or nll.shape != tokens.shape or not len(nll):
        return None, (f"{UNIT_SCORES} of run {run_id} is malformed: nll {nll.shape} and tokens "
                      f"{tokens.shape} must be the same nonzero length")
    if not (np.all(np.isfinite(nll)) and tokens.sum() > 0):
        return None, f"{UNIT_SCORES} of run {run_id} holds non-finite nll or no tokens"
    return {"nll": nll, "tokens": tokens}, ""


def percent(level: float) -> str:
    return f"{level * 100:g}%"


def champion(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> dict | None:
    """The registered version holding `alias`, with its run's metrics, the git commit it was
    evaluated at ("" when unknown) and its test set (from the version's tags; {} for a version
    registered before lmpipe recorded them), or None."""
    client = MlflowClient(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    try:   # a deleted run still answers; one purged by `mlflow gc` does not
        run = client.get_run(version.run_id) if version.run_id else None
    except mlflow.exceptions.MlflowException:
        run = None
    metrics = run.data.metrics if run is not None else {}
    commit = run.data.tags.get("git_commit", "") if run is not None else ""
    test_set = {k.removeprefix(TEST_SET + "."): v for k, v in version.tags.items()
                if k.startswith(TEST_SET + ".")}
    if TEST_SET in version.tags:
        test_set["id"] = version.tags[TEST_SET]
    return {"version": str(version.version), "run_id": version.run_id, "metrics": metrics,
            "commit": commit, "test_set": test_set}
