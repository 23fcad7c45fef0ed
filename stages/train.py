"""Stage train@KIND: data/prepared -> OUT/model.pt (config + state_dict), history.json (val
perplexity per epoch), run.json (the MLflow run id). Usage: python -m stages.train KIND data/prepared models/KIND"""

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

from pipeline import config, tracking
from pipeline.lit import LitLM, loaders
from pipeline.rnn import RNNLM, RNNConfig


def main(kind: str, data_dir: str, out_dir: str) -> None:
    params = config.load()
    if kind not in params.models:
        raise ValueError(f"no models.{kind} in params.yaml; known: {', '.join(params.models)}")
    spec, train = params.models[kind], params.train
    data, out = Path(data_dir), Path(out_dir)
    vocab_size = len(json.loads((data / "vocab.json").read_text())["tokens"])
    stats = json.loads((data / "stats.json").read_text())
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    L.seed_everything(params.seed, workers=True)
    model_config = RNNConfig(vocab_size=vocab_size, **config.as_dict(spec))
    lit = LitLM(RNNLM(model_config), train)
    train_loader, valid_loader = loaders(spec.bidirectional, np.load(data / "train.npy"),
                                         np.load(data / "valid.npy"), train, params.seed)
    root = config.repo_root()
    uri = config.tracking_uri(params.mlflow, root)
    logger = tracking.training_logger(
        uri, params.mlflow.experiment, kind,
        tracking.run_tags(kind, params.corpus.source, stats["corpus_hash"], root))
    logger.log_hyperparams(tracking.flatten({"model": model_config.to_dict(),
                                             "train": config.as_dict(train), "seed": params.seed}))
    precision = train.precision
    if precision == "auto":
        precision = "bf16-mixed" if torch.cuda.is_available() and train.accelerator != "cpu" else "32-true"
    callbacks = [TQDMProgressBar(refresh_rate=50)]
    if train.early_stopping_patience:
        callbacks.append(EarlyStopping("val_ppl", patience=train.early_stopping_patience))
    trainer = L.Trainer(max_epochs=train.max_epochs, accelerator=train.accelerator,
                        devices=train.devices, num_nodes=train.num_nodes, strategy=train.strategy,
                        precision=precision, gradient_clip_val=train.clip or None,
                        limit_train_batches=train.limit_train_batches, logger=logger,
                        enable_checkpointing=False, log_every_n_steps=25, deterministic=True,
                        use_distributed_sampler=False, default_root_dir=str(out),
                        callbacks=callbacks)
    trainer.fit(lit, train_loader, valid_loader)
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(lit.model.checkpoint(), out / "model.pt")
        (out / "history.json").write_text(json.dumps(lit.history, indent=2))
        (out / "run.json").write_text(json.dumps({"run_id": logger.run_id,
                                                  "precision": precision}, indent=2))


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
