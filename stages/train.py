"""Stage train@KIND: data/prepared -> OUT/model.pt (config + state_dict of the best validation
epoch), history.json (val perplexity per epoch), run.json (the MLflow run id); CKPT/ (persist:
true) holds last.ckpt / best.ckpt, from which an interrupted training resumes.
Usage: python -m stages.train KIND data/prepared models/KIND checkpoints/KIND"""

import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from pipeline import config, files
from pipeline.neural import resume
from pipeline.neural.lit import LitLM, best_weights, build_trainer, check_data
from pipeline.neural.rnn import RNNLM, RNNConfig
from pipeline.text.vocab import check_ids, load_vocab
from pipeline.tracking import mlflow_runs


def main(kind: str, data_dir: str, out_dir: str, ckpt_dir: str) -> None:
    params = config.load()
    if kind not in params.models:
        raise ValueError(f"no models.{kind} in params.yaml; known: {', '.join(params.models)}")
    spec, train = params.models[kind], params.train
    config.check_machine(train)
    data, out, ckpts = Path(data_dir), Path(out_dir), Path(ckpt_dir)
    vocab_size = len(load_vocab(data))
    stats = files.read_json(data / "stats.json", data, required=("corpus_hash",))
    # memory-mapped: each DDP rank reads its own columns of train.npy through the page cache
    streams = tuple(files.load_array(data / f"{s}.npy", data, mmap_mode="r") for s in ("train", "valid"))
    for split, stream in zip(("train", "valid"), streams, strict=True):
        check_ids(stream, vocab_size, data / f"{split}.npy", data)
    check_data(spec.bidirectional, *streams, train, world=train.devices * train.num_nodes)
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    architecture = config.as_dict(spec)
    seed = params.seed if architecture["seed"] is None else architecture["seed"]
    del architecture["seed"]   # models.<kind>.seed: a seed sweep reruns this model only
    L.seed_everything(seed, workers=True, verbose=False)
    model_config = RNNConfig(vocab_size=vocab_size, **architecture)
    root = config.repo_root()
    uri = config.tracking_uri(params.mlflow, root)
    fp = resume.fingerprint(model_config.to_dict(), config.as_dict(train), seed,
                            stats["corpus_hash"], vocab_size)
    # under DDP every rank runs this script; only rank 0 manages the checkpoint directory
    zero = rank_zero_only.rank == 0
    if zero:
        mlflow_runs.check_store(uri, params.mlflow.experiment)
        for run in mlflow_runs.reap_orphans(uri, params.mlflow.experiment):
            print(f"lmpipe: MLflow run {run} was left RUNNING by a killed process; marked KILLED")
    # read-only until the store has taken the run: a store that fails keeps every checkpoint
    with torch.device("meta"):   # shapes only, for resume's check: no memory, no draw of the RNG
        shapes = RNNLM(model_config)
    ckpt_path, run_id = resume.existing(ckpts, fp, print if zero else (lambda _: None), shapes)
    if not zero:
        run_id = None
    elif ckpt_path is not None:
        print(f"lmpipe: resuming from {ckpt_path} (MLflow run {run_id})", flush=True)
    if zero and run_id and not mlflow_runs.run_exists(uri, run_id):
        print(f"lmpipe: MLflow run {run_id} of the interrupted training is gone from {uri} "
              "(deleted, or another store); the training resumes into a new run", flush=True)
        run_id = None
    logger = mlflow_runs.training_logger(   # owner tags: a SIGKILLed run can be reaped later
        uri, params.mlflow.experiment, kind,
        {**mlflow_runs.run_tags(kind, params.corpus.source, stats["corpus_hash"], root),
         **mlflow_runs.owner_tags()},
        run_id=run_id, root=root)
    try:   # a run that ends early is marked FAILED (an error) or KILLED (a signal)
        if zero:  # before any step: a kill keeps it
            mlflow_runs.claim(uri, logger.run_id)
            if ckpt_path is None:   # starting afresh: old checkpoints go once the run exists
                resume.clear(ckpts)
            resume.record(ckpts, fp, logger.run_id, finished=False)
        lit = LitLM(RNNLM(model_config), train, *streams, seed=seed, run_id=logger.run_id)
        logger.log_hyperparams(mlflow_runs.flatten({"model": model_config.to_dict(),
                                                 "train": config.as_dict(train), "seed": seed}))
        trainer, precision = build_trainer(train, ckpts, out, logger, config.verbose())
        if zero:
            size = sum(p.numel() for p in lit.model.parameters())
            print(f"train@{kind}: {model_config.cell} ({model_config.impl}) x{model_config.num_layers}"
                  f"{', bidirectional' if model_config.bidirectional else ''}, {size:,} parameters, "
                  f"{train.max_epochs} epoch(s), {precision} on {trainer.strategy.root_device.type}"
                  f"{', resuming' if ckpt_path else ''}; MLflow run {logger.run_id}", flush=True)
        trainer.fit(lit, ckpt_path=ckpt_path, weights_only=True)
    except BaseException as error:
        if zero:
            mlflow_runs.end_run(uri, logger.run_id, mlflow_runs.end_status(error))
        raise
    best = ckpts / resume.BEST
    if best.exists():  # the weights of the epoch with the lowest validation perplexity
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        lit.model.load_state_dict(best_weights(state))   # NT-ASGD: the averaged weights
    if trainer.is_global_zero:
        with files.staged_dir(out) as scratch:   # models/KIND appears complete or not at all
            torch.save(lit.model.checkpoint(), scratch / "model.pt")
            (scratch / "history.json").write_text(json.dumps(lit.history, indent=2))
            (scratch / "run.json").write_text(json.dumps({"run_id": logger.run_id,
                                                          "precision": precision}, indent=2))
        resume.record(ckpts, fp, logger.run_id, finished=True)
        best_ppl = min((h["val_ppl"] for h in lit.history), default=float("nan"))
        print(f"train@{kind}: best val ppl {best_ppl:.2f} after {len(lit.history)} epoch(s) "
              f"-> {out / 'model.pt'}", flush=True)


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
