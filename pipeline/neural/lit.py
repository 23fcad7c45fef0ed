"""Lightning shell. In: an RNNLM and train params. Out: a LightningModule: loss J = -(1/T)
sum_t log y<t>[target]; validation perplexity from the split's summed NLL and token counts; the
hidden state carried and detached per window (truncated BPTT). AR/TAR, NT-ASGD and variable BPTT:
Merity, Keskar & Socher 2017 (AWD-LSTM, arXiv:1708.02182); details: docs/internals.md."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from torch.optim.swa_utils import AveragedModel

from pipeline.config import TrainParams
from pipeline.neural.batches import IGNORE, cloze_targets, train_loader, valid_loader
from pipeline.neural.regularization import activation_regularization
from pipeline.neural.rnn import RNNLM

# LitLM restores its place in the epoch itself (train_dataloader): Lightning's warning is moot
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")


class NumericsError(ValueError):
    """The loss or weights became NaN or infinite; names the step, train.lr and the fix."""


CHECK_EVERY = 25   # steps between loss checks on a GPU (a check waits for the device)
NONE = torch.iinfo(torch.int64).max   # no non-finite step yet


class LitLM(L.LightningModule):
    """Given the streams it builds its own loaders; a checkpoint then resumes exactly (hidden
    state, position in the epoch, RNG states and history: on_save_checkpoint)."""

    def __init__(self, model: RNNLM, train: TrainParams, train_stream: np.ndarray | None = None,
                 valid_stream: np.ndarray | None = None, seed: int = 0):
        super().__init__()
        self.model = model
        self.train_params = train
        self.cloze = model.config.bidirectional
        self.streams, self.seed = (train_stream, valid_stream), seed
        self.hidden = self.val_hidden = None   # carried (layers, B, S) states
        self.history: list[dict] = []
        self.epoch_batches = 0   # train batches done in the current epoch
        self._resume_at = 0      # set when restored from a checkpoint taken mid-epoch
        self.eager_check: bool | None = None   # check every step (None: on a lone CPU process)
        self.averaged: AveragedModel | None = None   # NT-ASGD's average, once it has started
        self._window_scale = 1.0  # variable BPTT: this step's window length / bptt

    def train_dataloader(self):
        skip, self._resume_at = self._resume_at, 0
        return train_loader(self.cloze, self.streams[0], self.train_params, self.seed, skip=skip,
                            epoch=self.trainer.current_epoch, **self._placement())

    def val_dataloader(self):
        return valid_loader(self.cloze, self.streams[1], self.train_params, **self._placement())

    def _placement(self) -> dict:   # this rank's share; pinned memory for a GPU
        return {"pin_memory": self.trainer.strategy.root_device.type == "cuda",
                "rank": self.global_rank, "world": self.trainer.world_size}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._check_finite()   # never save a diverged model
        if not all(bool(torch.isfinite(t).all()) for t in self.parameters()):
            raise NumericsError(f"the weights became NaN or infinite by step {self.global_step} "
                                f"{self._fix()}; no checkpoint written")
        hidden = None if self.hidden is None else self.all_gather(self.hidden.detach())   # every rank's
        checkpoint["lmpipe"] = {
            "history": list(self.history),
            "epoch_batches": self.epoch_batches,
            "hidden": None if hidden is None else hidden.reshape(-1, *self.hidden.shape).cpu(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["lmpipe"]
        self.history = list(state["history"])
        self._resume_at = self.epoch_batches = state["epoch_batches"]
        hidden = state["hidden"]   # (world, layers, B, H): a slice per rank (world is in the fingerprint)
        device = self.trainer.strategy.root_device   # the model is not on it yet
        self.hidden = None if hidden is None else hidden[self.global_rank].to(device)
        if any(key.startswith("averaged.") for key in checkpoint["state_dict"]):
            self._start_averaging()   # so that the state_dict loads into it
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _loss_sum(self, batch, state, model: RNNLM | None = None, regularize: bool = False):
        """(summed NLL in nats, number of targets, new state, AR + TAR penalty or None) of a batch."""
        model = self.model if model is None else model
        p = self.train_params
        if self.cloze:
            tokens, lengths = batch
            features, activations = model.cloze_features_and_activations(tokens, lengths)
            targets, state = cloze_targets(tokens, lengths), None
        else:
            inputs, targets = batch
            features, activations, state = model.features_and_activations(inputs, state)
        kept = targets != IGNORE   # AR/TAR: a causal `<s>` target is still an input (mask None)
        penalty = activation_regularization(features, activations, p.ar_alpha, p.tar_beta,
                                            kept if self.cloze else None) if regularize else None
        return model.loss_sum(features, targets), kept.sum(), state, penalty

    def on_train_epoch_start(self):
        self.hidden = None  # each epoch starts the stream afresh
        self.epoch_batches = 0

    def on_train_batch_start(self, batch, batch_index):
        if self.train_params.variable_bptt and not self.cloze:
            self._window_scale = batch[0].shape[1] / self.train_params.bptt

    def training_step(self, batch, batch_index):
        nll, count, state, penalty = self._loss_sum(batch, self.hidden, regularize=True)
        if state is not None:
            self.hidden = state.detach()  # otherwise backprop runs to the start of the corpus
        cross_entropy = nll / count.clamp(min=1)   # average over time steps and batch
        loss = cross_entropy + penalty
        self._watch(loss.detach())
        self.epoch_batches += 1
        # a tensor, not a float: no host-device synchronisation per step
        self.log("train_loss", cross_entropy.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def optimizer_step(self, epoch, batch_index, optimizer, optimizer_closure=None):
        """A step at lr x window / bptt (variable BPTT; base lr restored), then NT-ASGD's average."""
        base = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] *= self._window_scale
        optimizer.step(closure=optimizer_closure)
        for group, lr in zip(optimizer.param_groups, base, strict=True):
            group["lr"] = lr
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def _start_averaging(self) -> None:   # NT-ASGD: average the weights from the next step on
        self.averaged = AveragedModel(self.model, use_buffers=False)
        self.averaged.requires_grad_(False)   # not trained (and not a DDP parameter)

    def evaluation_model(self) -> RNNLM:   # NT-ASGD's average once it has started
        started = self.averaged is not None and int(self.averaged.n_averaged) > 0
        return self.averaged.module if started else self.model

    def on_fit_start(self):   # the step of the first non-finite loss (or NONE), on the device
        self._first_bad = torch.full((), NONE, device=self.device, dtype=torch.int64)
        if self.eager_check is None:   # every step on a lone CPU process
            self.eager_check = self.device.type == "cpu" and self.trainer.world_size == 1

    def _watch(self, loss: torch.Tensor) -> None:
        """Remember the first non-finite step on the device; check it every step (eager_check),
        else every CHECK_EVERY steps (the same steps on every rank: a collective)."""
        bad = torch.where(torch.isfinite(loss), NONE, self.global_step + 1)
        self._first_bad = torch.minimum(self._first_bad, bad)   # steps only grow: the first
        if self.eager_check or self.global_step % CHECK_EVERY == 0:
            self._check_finite()

    def _fix(self) -> str:
        p = self.train_params
        return (f"(epoch {self.current_epoch}; train.lr={p.lr:g}, train.clip={p.clip:g}); lower "
                f"train.lr (e.g. to {p.lr / 4:g}) or train.clip"
                f"{' (0 = no clipping; try 0.25)' if not p.clip else ''} and rerun")

    def _check_finite(self) -> None:
        first = int(self.trainer.strategy.reduce(self._first_bad.clone(), reduce_op="min"))
        if first != NONE:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise NumericsError(f"the training loss became NaN or infinite at step {first} at lr "
                                f"{lr:g} {self._fix()}; no later checkpoint")

    def on_train_epoch_end(self):
        self._check_finite()

    def on_validation_epoch_start(self):
        self.val_hidden = None
        self.val_sums = torch.zeros(2, device=self.device, dtype=torch.float64)   # NLL, tokens

    def validation_step(self, batch, batch_index):
        nll, count, self.val_hidden, _ = self._loss_sum(batch, self.val_hidden, self.evaluation_model())
        self.val_sums += torch.stack([nll.double(), count.double()])

    def on_validation_epoch_end(self):
        nll, tokens = self.trainer.strategy.reduce(self.val_sums, reduce_op="sum")
        mean = float(nll / tokens.clamp(min=1))
        if not math.isfinite(mean) or mean > 700:   # exp(700) is near float64's largest
            raise NumericsError(f"the validation loss is {mean:g} nats per token after "
                                f"{self.global_step} steps {self._fix()}")
        ppl = math.exp(mean)
        self.log("val_ppl", ppl, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        p = self.train_params
        past = [h["val_ppl"] for h in self.history]   # the same on every rank (reduced)
        if p.optimizer == "nt-asgd" and self.averaged is None and nonmonotone_trigger(
                past, ppl, p.nonmonotone_interval):
            self._start_averaging()
            self.print(f"NT-ASGD: validation stopped improving (val ppl {ppl:.2f} after epoch "
                       f"{self.current_epoch}); averaging the weights from step {self.global_step}")
        # the step Lightning's loggers give this val_ppl (the x of MLflow's curve)
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
        self.history.append({"epoch": self.current_epoch, "step": step, "val_ppl": ppl})

    def configure_optimizers(self):
        p = self.train_params
        kind = torch.optim.SGD if p.optimizer in ("sgd", "nt-asgd") else torch.optim.AdamW
        optimizer = kind(self.model.parameters(), lr=p.lr, weight_decay=p.weight_decay)  # not the average
        if p.lr_schedule == "none":
            return optimizer
        if p.lr_schedule == "step":   # Zaremba et al. 2014: full lr for lr_decay_start epochs, then
            scheduler = torch.optim.lr_scheduler.LambdaLR(   # x lr_decay every epoch
                optimizer, lambda epoch: p.lr_decay ** max(0, epoch + 1 - p.lr_decay_start))
        else:   # plateau: anneal when validation perplexity stops improving (pytorch/examples: / 4)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=p.lr_decay, patience=0)
        return {"optimizer": optimizer,   # monitor: read by ReduceLROnPlateau only
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_ppl", "interval": "epoch"}}


def nonmonotone_trigger(past: list[float], current: float, interval: int) -> bool:
    """NT-ASGD's switch (Merity et al. 2017, Algorithm 1): more than `interval` earlier
    validations, and `current` worse than the best of all but the last `interval` of them."""
    return len(past) > interval and current > min(past[:-interval])


def build_trainer(train: TrainParams, ckpts: Path, out: Path, logger,
                  verbose: bool = False) -> L.Trainer:
    """A Lightning Trainer: best.ckpt (lowest val ppl) and last.ckpt (every
    checkpoint_every_n_steps) in `ckpts`, deterministic, our own sharding."""
    gpu = torch.cuda.is_available() and train.accelerator != "cpu"
    precision = ("bf16-mixed" if gpu else "32-true") if train.precision == "auto" else train.precision
    callbacks = [TQDMProgressBar(refresh_rate=50),
                 ModelCheckpoint(dirpath=ckpts, filename="best", monitor="val_ppl", mode="min",
                                 save_top_k=1, enable_version_counter=False),
                 ModelCheckpoint(dirpath=ckpts, save_last=True, save_top_k=0,
                                 every_n_train_steps=train.checkpoint_every_n_steps or None,
                                 enable_version_counter=False)]
    if train.early_stopping_patience:
        callbacks.append(EarlyStopping("val_ppl", patience=train.early_stopping_patience))
    limit = train.limit_train_batches   # a fraction, or a whole number of batches
    return L.Trainer(max_epochs=train.max_epochs, accelerator=train.accelerator,
                     devices=train.devices, num_nodes=train.num_nodes, strategy=train.strategy,
                     precision=precision, gradient_clip_val=train.clip or None,
                     limit_train_batches=int(limit) if limit > 1 else limit, logger=logger,
                     log_every_n_steps=25, deterministic=True,
                     use_distributed_sampler=False, default_root_dir=str(out),
                     # variable BPTT: a new cut of the stream into windows every epoch
                     reload_dataloaders_every_n_epochs=1 if train.variable_bptt else 0,
                     callbacks=callbacks, enable_model_summary=verbose)
