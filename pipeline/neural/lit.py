"""Lightning shell. In: an RNNLM and train params. Out: a LightningModule whose loss is
J = -(1/T) sum_t log y<t>[target], whose validation perplexity sums NLL and token counts over
the split (never a mean of means), and whose hidden state is carried and detached per window
(truncated BPTT). AR/TAR, NT-ASGD and variable BPTT follow Merity, Keskar & Socher 2017
(AWD-LSTM, arXiv:1708.02182); details: docs/internals.md."""

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

# Lightning cannot see that LitLM restores the position in the epoch itself (train_dataloader
# after on_load_checkpoint), and warns that a mid-epoch resume is unreliable; the resume test
# shows it is exact.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")


class NumericsError(ValueError):
    """The training loss became NaN or infinite; the message names the step, the learning rate
    and the fix."""


# on a GPU the loss is checked every CHECK_EVERY steps (a check waits for the device) and before
# every checkpoint, so a diverged state is never saved; on the CPU after every step
CHECK_EVERY = 25


class LitLM(L.LightningModule):
    """With `train_stream`/`valid_stream` it builds its own loaders, and then a checkpoint resumes
    exactly where it was taken: the carried hidden state, the position in the epoch, the RNG
    states and the history are saved with the weights and the optimiser (on_save_checkpoint)."""

    def __init__(self, model: RNNLM, train: TrainParams, train_stream: np.ndarray | None = None,
                 valid_stream: np.ndarray | None = None, seed: int = 0, run_id: str | None = None):
        super().__init__()
        self.model = model
        self.train_params = train
        self.cloze = model.config.bidirectional
        self.streams, self.seed, self.run_id = (train_stream, valid_stream), seed, run_id
        self.hidden = None
        self.val_hidden = None
        self.val_nll = torch.zeros(())
        self.val_tokens = torch.zeros(())
        self.history: list[dict] = []
        self.epoch_batches = 0   # train batches done in the current epoch
        self._resume_at = 0      # set when restored from a checkpoint taken mid-epoch
        self._resume_epoch = 0
        self._first_bad = None   # the step of the first non-finite loss, on the device
        self.eager_check: bool | None = None   # None: check every step on a lone CPU process
        self.averaged: AveragedModel | None = None   # NT-ASGD's average, once it has started
        self._window_scale = 1.0  # variable BPTT: this step's window length / bptt

    # ---- data -------------------------------------------------------------------------------
    def train_dataloader(self):
        if self.streams[0] is None:
            raise ValueError("LitLM was built without train_stream; pass loaders to Trainer.fit")
        skip, self._resume_at = self._resume_at, 0
        epoch = self.trainer.current_epoch if self._trainer is not None else self._resume_epoch
        return train_loader(self.cloze, self.streams[0], self.train_params, self.seed, skip=skip,
                            epoch=epoch, pin_memory=self._pin(), **self._shard())

    def val_dataloader(self):
        if self.streams[1] is None:
            raise ValueError("LitLM was built without valid_stream; pass loaders to Trainer.fit")
        return valid_loader(self.cloze, self.streams[1], self.train_params, pin_memory=self._pin(),
                            **self._shard())

    def _pin(self) -> bool:
        return self._trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _shard(self) -> dict:
        if self._trainer is None:
            return {"rank": 0, "world": 1}
        return {"rank": self.trainer.global_rank, "world": self.trainer.world_size}

    # ---- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._check_finite()   # never save a diverged model
        if not all(bool(torch.isfinite(t).all()) for t in self.parameters()):
            p = self.train_params
            raise NumericsError(
                f"the weights became NaN or infinite by step {self.global_step} (epoch "
                f"{self.current_epoch}; train.lr={p.lr:g}, train.clip={p.clip:g}); {self._fix()}. "
                "This checkpoint was not written")
        checkpoint["lmpipe"] = {
            "model_config": self.model.config.checkpoint(),
            "mlflow_run_id": self.run_id,
            "history": list(self.history),
            "epoch_batches": self.epoch_batches,
            "hidden": self._gathered_hidden(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def _gathered_hidden(self):
        """Every rank's carried state (on_save_checkpoint runs on all ranks; rank 0 writes)."""
        if self.hidden is None:
            return None
        if self._trainer is None or self.trainer.world_size == 1:
            return self.hidden.detach().cpu().unsqueeze(0)
        return self.all_gather(self.hidden.detach()).cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["lmpipe"]
        self.history = list(state["history"])
        self.epoch_batches = state["epoch_batches"]
        hidden = state["hidden"]   # (world, layers, B, H): one slice per rank
        if hidden is not None and self._trainer is not None:
            rank = self.trainer.global_rank
            hidden = hidden[rank] if rank < len(hidden) else None
        elif hidden is not None:
            hidden = hidden[0]
        self.hidden = None if hidden is None else hidden.to(self.device)
        self._resume_at = self.epoch_batches
        self._resume_epoch = checkpoint["epoch"]
        if any(key.startswith("averaged.") for key in checkpoint["state_dict"]):
            self._start_averaging()   # so that the state_dict loads into it
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # ---- loss -------------------------------------------------------------------------------
    def _loss_sum(self, batch, state, model: RNNLM | None = None, regularize: bool = False):
        """(summed NLL in nats, number of targets, new state, AR + TAR penalty) of one batch."""
        model = self.model if model is None else model
        p = self.train_params
        if self.cloze:
            tokens, lengths = batch
            features, activations = model.cloze_features_and_activations(tokens, lengths)
            targets = cloze_targets(tokens, lengths)
            mask, state = targets != IGNORE, None
        else:
            inputs, targets = batch
            features, activations, state = model.features_and_activations(inputs, state)
            mask = None   # every input position exists (a `<s>` target is still an input)
        penalty = (activation_regularization(features, activations, p.ar_alpha, p.tar_beta, mask)
                   if regularize and (p.ar_alpha or p.tar_beta) else features.new_zeros(()))
        return model.loss_sum(features, targets), (targets != IGNORE).sum(), state, penalty

    def on_train_epoch_start(self):
        self.hidden = None  # each epoch starts the stream afresh
        self.epoch_batches = 0

    def on_train_batch_start(self, batch, batch_index):
        if self.train_params.variable_bptt and not self.cloze:
            self._window_scale = batch[0].shape[1] / self.train_params.bptt

    def training_step(self, batch, batch_index):
        if self.hidden is not None and self.hidden.device != self.device:
            self.hidden = self.hidden.to(self.device)
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
        """One step; with variable BPTT at lr x window length / bptt (the torch optimisers read
        the lr after the closure has run the forward and backward pass), restored afterwards so
        schedulers and checkpoints only ever see the base lr. Then the NT-ASGD average."""
        groups = optimizer.param_groups
        base = [group["lr"] for group in groups]
        for group in groups:
            group["lr"] *= self._window_scale
        try:
            optimizer.step(closure=optimizer_closure)
        finally:
            for group, lr in zip(groups, base, strict=True):
                group["lr"] = lr
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def _start_averaging(self) -> None:
        """NT-ASGD's switch: from the next step on, keep the average of the weights."""
        self.averaged = AveragedModel(self.model, use_buffers=False)
        self.averaged.requires_grad_(False)   # not trained (and not a DDP parameter)

    def evaluation_model(self) -> RNNLM:
        """The weights validation scores: NT-ASGD's average once it has started, else the model."""
        if self.averaged is not None and int(self.averaged.n_averaged) > 0:
            return self.averaged.module
        return self.model

    def _bad_step(self) -> torch.Tensor:
        """The step of the first non-finite loss so far (-1: none), kept on the device."""
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, device=self.device, dtype=torch.int64)
        return self._first_bad

    def _watch(self, loss: torch.Tensor) -> None:
        """Remember the first step whose loss is not finite (without waiting for a GPU), and
        check every step on one CPU process, else every CHECK_EVERY steps — the same steps on
        every rank (under DDP the check is a collective)."""
        first = (~torch.isfinite(loss)) & (self._bad_step() < 0)
        self._first_bad = torch.where(first, self.global_step + 1, self._first_bad)
        eager = self.eager_check
        if eager is None:
            eager = self.device.type == "cpu" and (self._trainer is None or self.trainer.world_size == 1)
        if eager or self.global_step % CHECK_EVERY == 0:
            self._check_finite()

    def _fix(self) -> str:
        p = self.train_params
        return (f"lower train.lr (e.g. to {p.lr / 4:g}) or train.clip"
                f"{' (0 = no clipping; try 0.25)' if not p.clip else ''} and rerun")

    def _check_finite(self) -> None:
        first = self._bad_step()   # created if no step ran yet: every rank joins the reduce
        if self._trainer is not None and self.trainer.world_size > 1:   # the earliest of all ranks
            big = torch.iinfo(torch.int64).max
            first = torch.where(first < 0, big, first)
            first = self.trainer.strategy.reduce(first.clone(), reduce_op=torch.distributed.ReduceOp.MIN)
            first = torch.where(first == big, -1, first)
        if int(first) < 0:
            return
        self._first_bad = first
        p = self.train_params
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer is not None else p.lr
        raise NumericsError(
            f"the training loss became NaN or infinite at step {int(self._first_bad)} (epoch "
            f"{self.current_epoch}) with learning rate {lr:g} (train.lr={p.lr:g}, train.clip="
            f"{p.clip:g}, train.optimizer={p.optimizer}); {self._fix()}. No checkpoint was written "
            "after that step")

    def on_train_epoch_end(self):
        self._check_finite()

    def on_validation_epoch_start(self):
        self.val_hidden = None
        self.val_nll = torch.zeros((), device=self.device, dtype=torch.float64)
        self.val_tokens = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch, batch_index):
        nll, count, state, _ = self._loss_sum(batch, self.val_hidden, self.evaluation_model())
        self.val_hidden = state
        self.val_nll += nll.double()
        self.val_tokens += count.double()

    def on_validation_epoch_end(self):
        nll = self.trainer.strategy.reduce(self.val_nll, reduce_op="sum")
        tokens = self.trainer.strategy.reduce(self.val_tokens, reduce_op="sum")
        mean = float(nll / tokens.clamp(min=1))
        if not math.isfinite(mean) or mean > 700:   # exp(700) is near float64's largest
            p = self.train_params
            raise NumericsError(
                f"the validation loss is {mean:g} nats per token after {self.global_step} steps "
                f"(epoch {self.current_epoch}): training diverged with train.lr={p.lr:g}, "
                f"train.clip={p.clip:g}; {self._fix()}")
        ppl = math.exp(mean)
        self.log("val_ppl", ppl, prog_bar=True, sync_dist=False)
        p = self.train_params
        if not self.trainer.sanity_checking and p.optimizer == "nt-asgd" and self.averaged is None:
            past = [h["val_ppl"] for h in self.history]   # the same on every rank (reduced)
            if nonmonotone_trigger(past, ppl, p.nonmonotone_interval):
                self._start_averaging()
                self.print(f"NT-ASGD: validation stopped improving (val ppl {ppl:.2f} after epoch "
                           f"{self.current_epoch}); averaging the weights from step {self.global_step}")
        if not self.trainer.sanity_checking:
            # the step Lightning's loggers give this val_ppl (the x of MLflow's curve; evaluate
            # logs its metrics at the best epoch's): batches stepped before this epoch's last
            step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
            self.history.append({"epoch": self.current_epoch, "step": step, "val_ppl": ppl})

    def configure_optimizers(self):
        p = self.train_params
        weights = self.model.parameters()   # never the NT-ASGD average
        if p.optimizer in ("sgd", "nt-asgd"):
            optimizer = torch.optim.SGD(weights, lr=p.lr, weight_decay=p.weight_decay)
        else:
            optimizer = torch.optim.AdamW(weights, lr=p.lr, weight_decay=p.weight_decay)
        if p.lr_schedule == "none":
            return optimizer
        if p.lr_schedule == "step":
            # Zaremba et al. 2014: full lr for lr_decay_start epochs, then x lr_decay every epoch
            start, decay = p.lr_decay_start, p.lr_decay
            step = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: decay ** max(0, epoch + 1 - start))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": step, "interval": "epoch"}}
        # anneal when validation perplexity stops improving (pytorch/examples divides lr by 4)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min",
                                                             factor=p.lr_decay, patience=0)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val_ppl", "interval": "epoch"}}


def nonmonotone_trigger(past: list[float], current: float, interval: int) -> bool:
    """NT-ASGD's switch (Merity et al. 2017, Algorithm 1; AWD-LSTM's main.py): more than
    `interval` earlier validations, and `current` worse than the best of all but the last
    `interval` of them. Perplexities or losses alike (the test is monotone)."""
    return len(past) > interval and current > min(past[:-interval])


def best_weights(state_dict: dict) -> dict:
    """The RNNLM's state_dict inside a LitLM checkpoint's `state_dict`: NT-ASGD's average when it
    has started (at least one step averaged), else the trained weights."""
    averaged = {key[len("averaged.module."):]: value for key, value in state_dict.items()
                if key.startswith("averaged.module.")}
    if averaged and int(state_dict["averaged.n_averaged"]) > 0:
        return averaged
    return {key[len("model."):]: value for key, value in state_dict.items()
            if key.startswith("model.")}


def build_trainer(train: TrainParams, ckpts: Path, out: Path, logger,
                  verbose: bool = False) -> tuple[L.Trainer, str]:
    """(Lightning Trainer, precision) for `train`: best.ckpt (lowest val ppl) and last.ckpt
    (every checkpoint_every_n_steps) in `ckpts`, deterministic algorithms, our own sharding;
    Lightning's model summary only when `verbose`."""
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
    limit = train.limit_train_batches   # a fraction, or a whole number of batches
    trainer = L.Trainer(max_epochs=train.max_epochs, accelerator=train.accelerator,
                        devices=train.devices, num_nodes=train.num_nodes, strategy=train.strategy,
                        precision=precision, gradient_clip_val=train.clip or None,
                        limit_train_batches=int(limit) if limit > 1 else limit, logger=logger,
                        log_every_n_steps=25, deterministic=True,
                        use_distributed_sampler=False, default_root_dir=str(out),
                        # variable BPTT: a new cut of the stream into windows every epoch
                        reload_dataloaders_every_n_epochs=1 if train.variable_bptt else 0,
                        callbacks=callbacks, enable_model_summary=verbose)
    return trainer, precision
