"""`lmpipe compare`, `preset`, `mlflow-server` and `retrain`: experiments across runs — the MLflow
store, the presets of configs/presets.yaml, and CI's retraining."""

from __future__ import annotations

import json


def mlflow_server(args) -> None:
    """`mlflow server` over this repository's store (mlflow.tracking_uri of params.yaml) and its
    mlartifacts/ folder, on 127.0.0.1 unless --host says otherwise. Workers then use
    MLFLOW_TRACKING_URI=http://HOST:PORT."""
    import os
    import shutil

    from pipeline import config
    root = config.repo_root()
    uri = config.tracking_uri(config.load(root / "params.yaml").mlflow, root)
    if uri.startswith("http"):
        raise ValueError(f"the tracking URI is already a server ({uri}); nothing to start")
    command = [shutil.which("mlflow") or "mlflow", "server", "--backend-store-uri", uri,
               "--artifacts-destination", str(root / "mlartifacts"),
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    print("lmpipe: " + " ".join(command), flush=True)
    os.execvp(command[0], command)


def retrain(args) -> None:
    """Reproduce what changed since the last run and write reports/retrain.md (CI entry point)."""
    from pipeline import config
    from pipeline.tracking import retrain as retraining
    root = config.repo_root()
    try:
        retraining.run(root, args.base, root / args.report)
    except RuntimeError as error:
        raise SystemExit(f"lmpipe: error: {error}") from None


def compare(args) -> None:
    """The comparison table of the newest pipeline run (or --run), from mlflow.search_runs."""
    from pipeline import config
    from pipeline.evaluation import report
    from pipeline.tracking import mlflow_runs
    params = config.load()
    uri = args.tracking_uri or config.tracking_uri(params.mlflow, config.repo_root())
    parent, runs = mlflow_runs.latest_pipeline_runs(uri, args.experiment or params.mlflow.experiment,
                                                 args.parent_run)
    columns = ["tags.model_kind", "tags.objective", *[f"metrics.{k}" for k in report.KEYS]]
    table = runs.reindex(columns=columns)
    table.columns = ["model", "objective", *report.KEYS]
    table = table.sort_values("model", key=lambda m: m != "ngram", kind="stable")  # ngram first
    for key in ("test_tokens", "model_bytes"):
        table[key] = table[key].astype("Int64")
    if args.markdown:
        print(f"Pipeline run `{parent}`\n")
        print("| " + " | ".join(table.columns) + " |")
        print("|---|---|" + "---:|" * len(report.KEYS))
        for row in table.itertuples(index=False):
            print("| " + " | ".join(_cell(v) for v in row) + " |")
    else:
        print(f"pipeline run {parent}")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def preset(args) -> None:
    """Print a preset as `-S key=value` flags for `dvc exp run` (or its description)."""
    import shlex

    from pipeline import config
    overrides = config.preset_overrides(args.name, args.params, args.presets)
    flags = []
    for key, value in overrides.items():
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        flags += ["-S", f"{key}={text}"]
    print(" ".join(shlex.quote(f) for f in flags))
