"""`lmpipe compare`, `preset`, `mlflow-server` and `retrain`: experiments across runs — the MLflow
store, the presets of configs/presets.yaml, and CI's retraining."""

from __future__ import annotations

import datetime
import errno
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from tabulate import tabulate

from pipeline import config, errors
from pipeline.evaluation.bootstrap import Comparison
from pipeline.tracking import commands, run_search, store
from pipeline.tracking import retrain as retraining


def repository(command: str, needs: tuple[str, ...] = ("params.yaml",), other: str = "") -> Path:
    """The repository root (the current folder) when it holds `needs`; else ValueError naming
    `lmpipe COMMAND`, the missing files and the fix (`other`: another way out)."""
    root = store.repo_root()
    missing = [name for name in needs if not (root / name).exists()]
    if missing:
        raise ValueError(f"`lmpipe {command}`: no lmpipe pipeline here ({root} has no {' / '.join(missing)}); cd to its root{other}")
    return root


def mlflow_server(args) -> None:
    """Exec `mlflow server` over this repository's store and mlartifacts/, on --host:--port.
    Raises ValueError for a tracking URI that is a server already or an address it cannot bind."""
    root = repository("mlflow-server")
    uri = store.tracking_uri(config.load(root / "params.yaml").mlflow, root)
    if uri.startswith("http"):
        raise ValueError(f"the tracking URI is already a server ({uri}); nothing to start")
    try:   # mlflow's own failure to listen would be a page of its workers' tracebacks
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as servers do
            probe.bind((args.host, args.port))
    except OSError as error:   # in use or privileged: the port's fault, else the address's
        flag = f"--port {args.port}" if error.errno in (errno.EADDRINUSE, errno.EACCES) else f"--host {args.host}"
        raise ValueError(f"{flag}: cannot listen on {args.host}:{args.port} ({error.strerror}); give another") from None
    command = [commands.executable("mlflow"), "server", "--backend-store-uri", uri,
               "--artifacts-destination", str(root / "mlartifacts"),
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    print("lmpipe: " + " ".join(command), flush=True)
    os.execvp(command[0], command)


def retrain(args) -> None:
    """Reproduce what changed and write --report (CI). Checks --base and --report before any run."""
    root = repository("retrain", ("params.yaml", "dvc.yaml", ".dvc"))
    if (root / args.report).is_dir():
        raise ValueError(f"--report {str(args.report)!r} is a folder; give a file path")
    if args.base:
        try:
            commands.run(root, "git", "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
        except ValueError:
            raise ValueError(f"--base {args.base!r}: no such revision; `git fetch` it") from None
    retraining.run(root, args.base, root / args.report)


def compare(args) -> None:
    """One execution's table (the newest, or --run), the executions (--list), or two side by side
    (--against), from MLflow. Raises ValueError naming the argument (store, experiment, run id)."""
    from pipeline.tracking import mlflow_runs  # here: MLflow's 2 s import, for compare only
    uri, experiment = args.tracking_uri, args.experiment
    if args.list and (args.parent_run or args.against):
        raise ValueError("--list: leave out --run and --against (or --list)")
    if not (uri and experiment):   # params.yaml only for what the arguments leave open
        root = repository("compare", other=" (or give --tracking-uri and --experiment)")
        params = config.load(root / "params.yaml")
        uri = uri or store.tracking_uri(params.mlflow, root)
        experiment = experiment or params.mlflow.experiment
    # the URI's form, a missing sqlite store, a server that does not answer (MLflow's client
    # would retry for minutes), a deleted experiment; a reader: nothing is created or switched to WAL
    mlflow_runs.check_store(uri, experiment, source="--tracking-uri" if args.tracking_uri else None,
                            writable=False)
    # the store and the experiment, before any id is looked up in them
    _naming(f"--experiment {experiment!r}" if args.experiment else None,
            run_search.pipeline_runs, uri, experiment, 1, False)
    if args.list:
        print(table(_executions(uri, experiment, args.limit), args.markdown))
        return
    parent = _execution(uri, experiment, args.parent_run, "--run")
    if args.against is None:
        print(f"{_title(parent)}\n")
        print(table(_models(uri, experiment, parent), args.markdown))
        verdicts = _verdicts(uri, parent.info.run_id)
        if verdicts:
            print("\nPaired bootstrap on the test set (which differences are real):")
            print("\n".join(f"  {line}" for line in verdicts))
        ids = [r.info.run_id for r in _ordered(run_search.model_runs(uri, experiment,
                                                                      parent.info.run_id))]
        links = run_search.ui_links(args.ui, parent.info.experiment_id, parent.info.run_id, ids)
        print(f"\nIn the MLflow UI ({args.ui}: make mlflow-ui):")
        for what, url in links.items():
            print(f"  {what + ':':16}{url}")
        return
    other = _execution(uri, experiment, args.against, "--against")
    a, b = (_models(uri, experiment, run) for run in (parent, other))
    print(f"A: {_title(parent)}\nB: {_title(other)}")
    sets = [run.data.tags.get("test_set") for run in (parent, other)]
    if sets[0] != sets[1]:
        print(f"(not comparable: the test sets differ, {sets[0]} vs {sets[1]}: another corpus, "
              "split, tokenizer or vocabulary)")
    print()
    print(table(_diff(a, b), args.markdown))


def _execution(uri: str, experiment: str, run_id: str | None, flag: str):
    return _naming(run_id and f"{flag} {run_id}", run_search.pipeline_run, uri, experiment, run_id)


def _naming(argument: str | None, call, *args):
    """call(*args), its ValueError (not StateError: not the argument's fault) prefixed by `argument`."""
    try:
        return call(*args)
    except ValueError as error:
        if not argument or isinstance(error, errors.StateError):
            raise
        raise ValueError(f"{argument}: {error}") from None


HEADLINE = ("val_ppl", "test_ppl", "test_bits_per_token", "test_bits_per_char", "fill_accuracy")
# the columns of one execution's table; test_ppl is followed by its interval
SHOWN = ("val_ppl", "test_ppl", "test_bits_per_token", "test_bits_per_char", "test_word_ppl",
         "test_top1_accuracy", "fill_accuracy", "test_tokens", "model_bytes")


def _title(run) -> str:
    return (f"{run.info.run_name}  (run {run.info.run_id}, {_started(run)}, "
            f"test set {run.data.tags.get('test_set', '?')})")


def _started(run) -> str:
    return datetime.datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")


def _models(uri: str, experiment: str, parent) -> list[dict]:
    """One row per model run of an execution: model, objective, SHOWN and test_ppl's interval."""
    rows = []
    for run in _ordered(run_search.model_runs(uri, experiment, parent.info.run_id)):
        metrics = run.data.metrics
        row = {"model": run.data.tags.get("model_kind", run.info.run_name),
               "objective": run.data.tags.get("objective", "")}
        for key in SHOWN:
            row[key] = metrics.get(key)
            if key in ("test_tokens", "model_bytes") and row[key] is not None:
                row[key] = int(row[key])   # counts: MLflow stores every metric as a float
            if key == "test_ppl":
                low, high = metrics.get("test_ppl_ci_low"), metrics.get("test_ppl_ci_high")
                row["test_ppl CI"] = None if low is None or high is None else \
                    f"{cell(low)}-{cell(high)}"
        rows.append(row)
    return rows


def _verdicts(uri: str, parent_id: str) -> list[str]:
    """The execution's paired verdicts (report/pairs.json) as sentences; [] and one warning on
    stderr when the artifact is missing or damaged: the table is still worth showing."""
    from pipeline.tracking import artifacts  # MLflow's import, once there is a table to show
    path = "report/pairs.json"
    again = "`dvc repro -f evaluate` logs a new execution with them"
    try:
        pairs = artifacts.read_json(uri, parent_id, path)
        checked = None if pairs is None else PAIRS.validate_python(pairs)
    except artifacts.DamagedArtifact as error:   # not UTF-8 JSON text
        why = str(error)
    except ValidationError as error:
        why = f"run {parent_id}'s artifact {path} is damaged ({_first_problem(error)})"
    else:
        if checked is not None:
            return [Comparison(p.a, p.b, p.delta_nats_per_token, p.delta_ci_low, p.delta_ci_high,
                               p.p_better, p.level).sentence() for p in checked.values()]
        why = f"run {parent_id} has no {path} artifact (logged before lmpipe wrote it, or deleted)"
    print(f"lmpipe: warning: {why}; the table above is shown without the paired verdicts; "
          f"{again}", file=sys.stderr, flush=True)
    return []


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class Pair(BaseModel):
    """One pair of report/pairs.json (other keys, such as verdict, are recomputed)."""
    model_config = ConfigDict(strict=True)
    a: str
    b: str
    delta_nats_per_token: Number
    delta_ci_low: Number
    delta_ci_high: Number
    p_better: Annotated[Number, Field(ge=0, le=1)]
    level: Annotated[Number, Field(gt=0, lt=1)]


PAIRS = TypeAdapter(dict[str, Pair])   # report/pairs.json: {"A_vs_B": Pair}


def _first_problem(error: ValidationError) -> str:
    """pydantic's first complaint as "where: what" (e.g. "x.p_better: field required")."""
    first = error.errors()[0]
    where = ".".join(map(str, first["loc"])) or "the whole file"
    return f"{where}: {first['msg'][:1].lower()}{first['msg'][1:]}"


def _ordered(runs: list) -> list:
    """Model runs with ngram first, then as trained."""
    return sorted(runs, key=lambda r: r.data.tags.get("model_kind", r.info.run_name) != "ngram")


def _executions(uri: str, experiment: str, limit: int) -> list[dict]:
    rows = []
    for run in run_search.pipeline_runs(uri, experiment, limit, finished=False):
        models = _models(uri, experiment, run)
        causal = [m for m in models if m["objective"] == "causal" and m["test_ppl"] is not None]
        best = min(causal, key=lambda m: m["test_ppl"], default=None)
        rows.append({"id": run.info.run_id[:8], "name": run.info.run_name,
                     "started": _started(run),
                     "status": run.info.status, "models": len(models),
                     "test set": run.data.tags.get("test_set", "?"),
                     "best causal test ppl": f"{best['test_ppl']:.2f} {best['model']}" if best else "-"})
    return rows


def _diff(a: list[dict], b: list[dict]) -> list[dict]:
    """Per model and headline key: A, B and the change."""
    by_model = {r["model"]: r for r in b}
    named = {r["model"] for r in a}
    rows = []
    for left in [*a, *({"model": r["model"]} for r in b if r["model"] not in named)]:
        right = by_model.get(left["model"], {})
        for key in HEADLINE:
            x, y = left.get(key), right.get(key)
            change = f"{(y - x) / x:+.1%}" if x and y is not None else "-"
            rows.append({"model": left["model"], "metric": key, "A": x, "B": y, "change": change})
    return rows


def table(rows: list[dict], markdown: bool) -> str:
    """Rows as aligned text (or GitHub markdown), numbers right-aligned and formatted by cell."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    numeric = [all(_number(r.get(c)) or r.get(c) is None for r in rows) for c in columns]
    return tabulate([[cell(r.get(c)) for c in columns] for r in rows], headers=columns,
                    tablefmt="github" if markdown else "plain", disable_numparse=True,
                    colalign=["right" if n else "left" for n in numeric])


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:   # counts and bytes
            return f"{value:,.0f}"
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:#.4g}"
    return str(value)
