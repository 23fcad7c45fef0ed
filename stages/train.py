"""Stage train@KIND: data/prepared -> OUT/model.pt (config + state_dict of the best validation
epoch), history.json (val perplexity per epoch), run.json (the MLflow run id); CKPT/ (persist:
true) holds last.ckpt / best.ckpt, from which an interrupted training resumes.
Usage: python -m stages.train KIND data/prepared models/KIND checkpoints/KIND"""

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from pipeline import config, resume, tracking
from pipeline.lit import LitLM
from pipeline.rnn import RNNLM, RNNConfig


def main(kind: str, data_dir: str, out_dir: str, ckpt_dir: str) -> None:
    params = config.load()
    if kind not in params.models:
        raise ValueError(f"no models.{kind} in params.yaml; known: {', '.join(params.models)}")
    spec, train = params.models[kind], params.train
    data, out, ckpts = Path(data_dir), Path(out_dir), Path(ckpt_dir)
    vocab_size = len(json.loads((data / "vocab.json").read_text())["tokens"])
    stats = json.loads((data / "stats.json").read_text())
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    L.seed_everything(params.seed, workers=True)
    model_config = RNNConfig(vocab_size=vocab_size, **config.as_dict(spec))
    root = config.repo_root()
    uri = config.tracking_uri(params.mlflow, root)
    fp = resume.fingerprint(model_config.to_dict(), config.as_dict(train), params.seed,
                            stats["corpus_hash"], vocab_size)
    # under DDP every rank runs this script; only rank 0 manages the checkpoint directory
    zero = rank_zero_only.rank == 0
    ckpt_path, run_id = (resume.start(ckpts, fp) if zero
                         else (resume.existing(ckpts, fp, lambda _: None)[0], None))
    logger = tracking.training_logger(
        uri, params.mlflow.experiment, kind,
        tracking.run_tags(kind, params.corpus.source, stats["corpus_hash"], root),
        run_id=run_id if run_id and tracking.run_exists(uri, run_id) else None)
    if zero:  # before any step: a kill keeps it
        resume.record(ckpts, fp, logger.run_id, finished=False)
    lit = LitLM(RNNLM(model_config), train, np.load(data / "train.npy"), np.load(data / "valid.npy"),
                seed=params.seed, run_id=logger.run_id)
    logger.log_hyperparams(tracking.flatten({"model": model_config.to_dict(),
                                             "train": config.as_dict(train), "seed": params.seed}))
    precision = train.precision
    if precision == "auto":
        precision = "bf16-mixed" if torch.cuda.is_available() and train.accelerator != "cpu" else "32-true"
    callbacks = [TQDMProgressBar(refresh_rate=50),
                 ModelCheckpoint(dirpath=ckpts, filename="best", monitor="val_ppl", mode="min",
                                 save_top_k=1, enable_version_counter=False),
                 ModelCheckpoint(dirpath=ckpts, save_last=True, save_top_k=0,
                                 every_n_train_steps=train.checkpoint_every_n_steps or None,
                                 enable_version_counter=False)]
    if train.early_stopping_patience:
        callbacks.append(EarlyStopping("val_ppl", patience=train.early_stopping_patience))
    trainer = L.Trainer(max_epochs=train.max_epochs, accelerator=train.accelerator,
                        devices=train.devices, num_nodes=train.num_nodes, strategy=train.strategy,
                        precision=precision, gradient_clip_val=train.clip or None,
                        limit_train_batches=train.limit_train_batches, logger=logger,
                        log_every_n_steps=25, deterministic=True,
                        use_distributed_sampler=False, default_root_dir=str(out),
                        callbacks=callbacks)
    trainer.fit(lit, ckpt_path=ckpt_path, weights_only=True)
    best = ckpts / resume.BEST
    if best.exists():  # the weights of the epoch with the lowest validation perplexity
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        lit.load_state_dict(state)
    if trainer.is_global_zero:
        resume.record(ckpts, fp, logger.run_id, finished=True)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(lit.model.checkpoint(), out / "model.pt")
        (out / "history.json").write_text(json.dumps(lit.history, indent=2))
        (out / "run.json").write_text(json.dumps({"run_id": logger.run_id,
                                                  "precision": precision}, indent=2))


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
