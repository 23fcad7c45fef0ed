"""The `lmpipe compare`, `mlflow-server` and `retrain` commands, and the tables the CLI prints."""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import re
import socket
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from tabulate import tabulate

from pipeline import config, errors, files, validation
from pipeline.evaluation.bootstrap import Comparison
from pipeline.tracking import commands, run_search, store


def repository(command: str, needs: tuple[str, ...] = ("params.yaml",), other: str = "") -> Path:
    """The current folder when it holds `needs`; else ValueError naming `lmpipe COMMAND` and them."""
    root = files.repo_root()
    missing = [name for name in needs if not (root / name).exists()]
    if missing and (root / "dvc.yaml").exists():   # the root, where git tracks them all
        raise ValueError(f"`lmpipe {command}`: {root} has no {' / '.join(missing)}; restore it with "
                         f"`git checkout {' '.join(missing)}`")
    if missing:
        raise ValueError(f"`lmpipe {command}`: no lmpipe pipeline here ({root} has no {' / '.join(missing)}); cd to its root{other}")
    return root


def mlflow_server(args) -> None:
    """Exec `mlflow server` over this repository's store on --host:--port; ValueError if unbindable."""
    root = repository("mlflow-server")
    uri = store.prepare(store.tracking_uri(config.load(root / "params.yaml").mlflow, root))
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
               "--artifacts-destination", str(root / store.ARTIFACTS),
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    print("lmpipe: " + " ".join(command), flush=True)
    os.execvpe(command[0], command, commands.environment())


RUNNING = re.compile(r"^Running stage '([^']+)'", re.M)   # a stage in `dvc repro`'s log


def retrain(args) -> None:
    """`dvc repro`, then --report (docs/ci.md): the stages that ran and why, dvc params and metrics
    diff against --base, comparison.md, promotion.md; ValueError (--base, --report first)."""
    root, base = repository("retrain", ("params.yaml", "dvc.yaml", ".dvc")), args.base
    out = root / args.report
    if out.is_dir():
        raise ValueError(f"--report {str(args.report)!r} is a folder; give a file path")
    if base:
        try:
            commands.run(root, "git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
        except ValueError:
            raise ValueError(f"--base {base!r}: no such revision; `git fetch` it") from None
    status = json.loads(commands.run(root, "dvc", "status", "--json") or "{}")
    reasons = {stage.split(":")[-1]: _why(changes) for stage, changes in status.items()}
    print(f"retrain: {len(reasons)} stage(s) out of date: {', '.join(reasons) or 'none'}")
    ran = RUNNING.findall(commands.run(root, "dvc", "repro", merged=True))
    print(f"retrain: ran {', '.join(ran) or 'nothing'}")
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
    print(f"retrain: wrote {out}")


def _why(changes: list) -> str:
    """dvc status --json entries of one stage -> a short reason."""
    reasons = []
    for change in changes:
        if isinstance(change, str):
            reasons.append(change)
            continue
        for kind, items in change.items():          # "changed deps" / "changed outs" / ...
            if isinstance(items, dict):   # {path: "modified"} or {params.yaml: {key: "modified"}}
                items = "; ".join(f"{path} ({', '.join(what) if isinstance(what, dict) else what})"
                                  for path, what in items.items())
            reasons.append(f"{kind}: {items}")
    return "; ".join(reasons) or "changed"


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
    mlflow_runs.check_store(uri, experiment, source="--tracking-uri" if args.tracking_uri else None,
                            writable=False)
    _naming(f"--experiment {experiment!r}" if args.experiment else None,
            run_search.pipeline_runs, uri, experiment, 1, False)
    if args.list:
        print(table(_executions(uri, experiment, args.limit), args.markdown))
        return
    parent = _naming(args.parent_run and f"--run {args.parent_run}", run_search.pipeline_run, uri,
                     experiment, args.parent_run)
    if args.against is None:
        runs = _model_runs(uri, experiment, parent)
        print(f"{_title(parent)}\n")
        print(table(_rows(runs) + _mixture_rows(parent), args.markdown))
        if verdicts := _verdicts(uri, parent.info.run_id):
            print("\nPaired bootstrap on the test set (which differences are real):")
            print("\n".join(f"  {line}" for line in verdicts))
        links = run_search.ui_links(args.ui, parent.info.experiment_id, parent.info.run_id,
                                    [run.info.run_id for run in runs])
        print(f"\nIn the MLflow UI ({args.ui}: make mlflow-ui):",
              *(f"  {what + ':':16}{url}" for what, url in links.items()), sep="\n")
        return
    other = _naming(f"--against {args.against}", run_search.pipeline_run, uri, experiment, args.against)
    a, b = (_rows(_model_runs(uri, experiment, run)) for run in (parent, other))
    print(f"A: {_title(parent)}\nB: {_title(other)}")
    sets = [run.data.tags.get("test_set") for run in (parent, other)]
    if sets[0] != sets[1]:
        print(f"(not comparable: the test sets differ, {sets[0]} vs {sets[1]}: another corpus, "
              "split, tokenizer or vocabulary)")
    print(f"\n{table(_diff(a, b), args.markdown)}")


def _naming(argument: str | None, call, *args):
    """call(*args), its ValueError (not StateError: not the argument's fault) prefixed by `argument`."""
    try:
        return call(*args)
    except ValueError as error:
        if not argument or isinstance(error, errors.StateError):
            raise
        raise ValueError(f"{argument}: {error}") from None


HEADLINE = ("val_ppl", "test_ppl", "test_bits_per_token", "test_bits_per_char", "fill_accuracy")
SHOWN = ("val_ppl", "test_ppl", "test_ppl CI", "test_bits_per_token", "test_bits_per_char",
         "test_word_ppl", "test_top1_accuracy", "fill_accuracy", "test_tokens", "model_bytes")


def _title(run) -> str:
    return (f"{run.info.run_name}  (run {run.info.run_id}, {_started(run)}, "
            f"test set {run.data.tags.get('test_set', '?')})")


def _started(run) -> str:
    return datetime.datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")


def _model_runs(uri: str, experiment: str, parent) -> list:
    """The model runs of an execution, ngram first, then as trained."""
    return sorted(run_search.model_runs(uri, experiment, parent.info.run_id),
                  key=lambda r: r.data.tags.get("model_kind", r.info.run_name) != "ngram")


def _rows(runs: list) -> list[dict]:
    """One row per model run: model, objective, SHOWN and test_ppl's interval."""
    return [_row(run.data.tags.get("model_kind", run.info.run_name), run.data.tags.get("objective", ""),
                 dict(run.data.metrics)) for run in runs]


def _mixture_rows(parent) -> list[dict]:
    """One row per RNN interpolated with the n-gram model, from the execution's own metrics."""
    return [_row(f"{rnn}+ngram (λ={m.get('interpolation_weight', math.nan):.2f})", "causal", m)
            for rnn, m in run_search.mixtures(parent).items()]


def _row(model: str, objective: str, metrics: dict) -> dict:
    """model, objective, SHOWN (test_ppl's interval as "test_ppl CI"; counts as integers)."""
    metrics["test_ppl CI"] = interval(metrics.get("test_ppl_ci_low"), metrics.get("test_ppl_ci_high"))
    # counts: MLflow stores every metric as a float
    metrics.update({key: int(metrics[key]) for key in ("test_tokens", "model_bytes") if key in metrics})
    return {"model": model, "objective": objective, **{key: metrics.get(key) for key in SHOWN}}


def _verdicts(uri: str, parent_id: str) -> list[str]:
    """The execution's paired verdicts (report/pairs.json); [] and a warning if missing or damaged."""
    from pipeline.tracking import artifacts  # MLflow's import, once there is a table to show
    path = "report/pairs.json"
    try:
        pairs = artifacts.read(uri, parent_id, path, lambda local: json.loads(local.read_text("utf-8")))
        if pairs is not None:
            return [Comparison(p.a, p.b, p.delta_nats_per_token, p.delta_ci_low, p.delta_ci_high,
                               p.p_better, p.level).sentence() for p in PAIRS.validate_python(pairs).values()]
        why = f"run {parent_id} has no {path} artifact (logged before lmpipe wrote it, or deleted)"
    except ValidationError as error:
        why = f"run {parent_id}'s artifact {path} is damaged ({validation.first_complaint(error)})"
    except (OSError, ValueError) as error:   # a folder, not UTF-8, not JSON
        why = f"run {parent_id}'s {path} is damaged (not UTF-8 JSON: {error})"
    print(f"lmpipe: warning: {why}; the table above is shown without the paired verdicts; "
          "`dvc repro -f -s evaluate` logs a new execution with them", file=sys.stderr, flush=True)
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


def _executions(uri: str, experiment: str, limit: int) -> list[dict]:
    rows = []
    for run in run_search.pipeline_runs(uri, experiment, limit, finished=False):
        models = _rows(_model_runs(uri, experiment, run))
        causal = [m for m in models if m["objective"] == "causal" and m["test_ppl"] is not None]
        best = min(causal, key=lambda m: m["test_ppl"], default=None)
        rows.append({"id": run.info.run_id[:8], "name": run.info.run_name, "started": _started(run),
                     "status": run.info.status, "models": len(models),
                     "test set": run.data.tags.get("test_set", "?"),
                     "best causal test ppl": f"{best['test_ppl']:.2f} {best['model']}" if best else "-"})
    return rows


def _diff(a: list[dict], b: list[dict]) -> list[dict]:
    """Per model and headline key: A, B and the change."""
    left, right = ({row["model"]: row for row in rows} for rows in (a, b))
    rows = []
    for model in {**left, **right}:   # A's models, then B's others
        for key in HEADLINE:
            x, y = left.get(model, {}).get(key), right.get(model, {}).get(key)
            rows.append({"model": model, "metric": key, "A": x, "B": y,
                         "change": f"{(y - x) / x:+.1%}" if x and y is not None else "-"})
    return rows


def table(rows: list[dict], markdown: bool) -> str:
    """Rows as aligned text (or GitHub markdown), numbers right-aligned and formatted by cell."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    numeric = [all(r.get(c) is None or isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool)
                   for r in rows) for c in columns]
    return tabulate([[cell(r.get(c)) for c in columns] for r in rows], headers=columns,
                    tablefmt="github" if markdown else "plain", disable_numparse=True,
                    colalign=["right" if n else "left" for n in numeric])


def interval(low: float | None, high: float | None, dash: str = "-") -> str | None:
    return None if low is None or high is None else f"{cell(low)}{dash}{cell(high)}"


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:   # counts and bytes
            return f"{value:,.0f}"
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:#.4g}"
    return str(value)
