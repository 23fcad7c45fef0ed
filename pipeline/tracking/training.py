"""train@KIND with its MLflow run. In: params, data/prepared. Out: models/KIND (neural/fit.py),
one MLflow run per model (rank zero only), resumed from the training's checkpoint folder
(neural/resume.py) after a kill; a run that ends early is marked FAILED (an error) or KILLED."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from pipeline import errors, files
from pipeline.config import Params, flatten
from pipeline.neural import fit, resume
from pipeline.neural.lit import LitLM, build_trainer
from pipeline.neural.rnn import RNNLM
from pipeline.tracking import mlflow_runs, store

_say = functools.partial(print, flush=True)


def train(params: Params, kind: str, data: Path, out: Path) -> None:
    """Train models.KIND into `out`, resuming from its checkpoint folder (resume.folder) if any."""
    given = fit.inputs(params, kind, data)
    ckpts = resume.folder(kind, given.fingerprint)
    zero = rank_zero_only.rank == 0   # under DDP only rank 0 manages checkpoints and MLflow
    with resume.hold(ckpts, _say) if zero else contextlib.nullcontext():
        _train(params, kind, given, out, ckpts, zero)


def _train(params: Params, kind: str, given: fit.Inputs, out: Path, ckpts: Path, zero: bool) -> None:
    root = files.repo_root()
    uri, experiment = store.tracking_uri(params.mlflow, root), params.mlflow.experiment
    if zero:
        mlflow_runs.check_store(uri, experiment)
        mlflow_runs.reap_orphans(uri, experiment, _say)
    # read-only until the store has taken the run: a store that fails keeps every checkpoint
    ckpt_path, run_id = resume.existing(ckpts, _say if zero else (lambda _: None), given.model)
    if not zero:
        run_id = None
    elif ckpt_path is not None:
        _say(f"lmpipe: resuming from {ckpt_path} (MLflow run {run_id})")
    if zero and run_id and mlflow_runs.active_run(uri, run_id) is None:
        _say(f"lmpipe: MLflow run {run_id} of the interrupted training is gone from {uri} "
             "(deleted, or another store); the training resumes into a new run")
        run_id = None
    tags = {"model_kind": kind, "corpus": params.corpus.source, "corpus_hash": given.corpus_hash,
            **mlflow_runs.git_tags(root), **mlflow_runs.owner_tags()}   # owner: reaped if killed
    mlflow_runs.setup(uri, experiment, root)   # MLflow >= 3.13 rejects the logger's default URI
    logger = MLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_name=kind, tags=tags,
                          run_id=run_id)
    try:
        if zero:  # before any step: a kill keeps it
            mlflow_runs.claim(uri, logger.run_id)
            # afresh, nothing is removed: its checkpoints replace an unusable folder's by name
            resume.record(ckpts, logger.run_id)
        lit = LitLM(RNNLM(given.model), params.train, *given.streams, seed=given.seed)
        logger.log_hyperparams(flatten({"model": given.model.checkpoint(),
                                        "train": params.train.model_dump(), "seed": given.seed}))
        trainer = build_trainer(params.train, ckpts, out, logger, errors.verbose())
        if zero:
            m, size = given.model, sum(p.numel() for p in lit.model.parameters())
            _say(f"train@{kind}: {m.cell} ({m.impl}) x{m.num_layers}"
                 f"{', bidirectional' if m.bidirectional else ''}, {size:,} parameters, "
                 f"{params.train.max_epochs} epoch(s), {trainer.precision} on "
                 f"{trainer.strategy.root_device.type}{', resuming' if ckpt_path else ''}; "
                 f"MLflow run {logger.run_id}")
        trainer.fit(lit, ckpt_path=ckpt_path, weights_only=True)
    except BaseException as error:
        if zero:
            mlflow_runs.end_run(uri, logger.run_id, mlflow_runs.end_status(error))
        raise
    if trainer.is_global_zero:
        best = fit.save(lit, ckpts, out, logger.run_id, trainer.precision)
        _say(f"train@{kind}: best val ppl {best:.2f} after {len(lit.history)} epoch(s) -> "
             f"{out / 'model.pt'}")

