"""Lightning shell. In: an RNNLM and training params. Out: a LightningModule whose loss is the
cross-entropy averaged over time steps and batch (J = -(1/T) Σ_t log ŷ<t>[y<t>]), and whose
validation perplexity sums NLL and token counts over the whole split (never a mean of means).

Causal models keep the hidden state on the module: carried from window to window, detached after
each (truncated BPTT; Lightning 2 has no built-in TBPTT), reset at each epoch start. The
bidirectional model is trained on whole sentences to fill every position from both sides.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.batches import (
    IGNORE,
    BucketBatches,
    Sentences,
    StreamWindows,
    cloze_targets,
    eval_columns,
    pad_sentences,
)
from pipeline.config import TrainParams
from pipeline.rnn import RNNLM


class LitLM(L.LightningModule):
    def __init__(self, model: RNNLM, train: TrainParams):
        super().__init__()
        self.model = model
        self.train_params = train
        self.cloze = model.config.bidirectional
        self.hidden = None
        self.val_hidden = None
        self.val_nll = torch.zeros(())
        self.val_tokens = torch.zeros(())
        self.history: list[dict] = []

    # ---- loss -------------------------------------------------------------------------------
    def _loss_sum(self, batch, state):
        """(summed NLL, number of targets, new state) of one batch."""
        if self.cloze:
            tokens, lengths = batch
            logits = self.model.cloze(tokens, lengths)
            targets = cloze_targets(tokens, lengths)
            state = None
        else:
            inputs, targets = batch
            logits, state = self.model(inputs, state)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE,
                              reduction="sum")
        return nll, (targets != IGNORE).sum(), state

    def on_train_epoch_start(self):
        self.hidden = None  # each epoch starts the stream afresh

    def training_step(self, batch, batch_index):
        nll, count, state = self._loss_sum(batch, self.hidden)
        if state is not None:
            self.hidden = state.detach()  # otherwise backprop runs to the start of the corpus
        loss = nll / count.clamp(min=1)   # average over time steps and batch
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_start(self):
        self.val_hidden = None
        self.val_nll = torch.zeros((), device=self.device, dtype=torch.float64)
        self.val_tokens = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch, batch_index):
        nll, count, state = self._loss_sum(batch, self.val_hidden)
        self.val_hidden = state
        self.val_nll += nll.double()
        self.val_tokens += count.double()

    def on_validation_epoch_end(self):
        nll = self.trainer.strategy.reduce(self.val_nll, reduce_op="sum")
        tokens = self.trainer.strategy.reduce(self.val_tokens, reduce_op="sum")
        ppl = math.exp(float(nll / tokens.clamp(min=1)))
        self.log("val_ppl", ppl, prog_bar=True, sync_dist=False)
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "val_ppl": ppl})

    def configure_optimizers(self):
        p = self.train_params
        if p.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        if p.lr_schedule == "none":
            return optimizer
        # anneal when validation perplexity stops improving (pytorch/examples divides lr by 4)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min",
                                                             factor=p.lr_decay, patience=0)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val_ppl", "interval": "epoch"}}


def loaders(cloze: bool, train_stream: np.ndarray, valid_stream: np.ndarray, params: TrainParams,
            seed: int):
    """(train, valid) DataLoaders. Causal: ordered stream windows (batch_size=None: each item is
    already a batch). Cloze: shuffled batches of padded sentences of similar length."""
    if cloze:
        sentences = Sentences(train_stream)
        lengths = np.array([len(s) for s in sentences.items])
        train = DataLoader(sentences, batch_sampler=BucketBatches(lengths, params.batch_size, seed),
                           collate_fn=pad_sentences)
        valid = DataLoader(Sentences(valid_stream), batch_size=params.eval_batch_size,
                           collate_fn=pad_sentences)
        return train, valid
    train = DataLoader(StreamWindows(train_stream, params.batch_size, params.bptt), batch_size=None)
    inputs, targets, _ = eval_columns(valid_stream, params.eval_batch_size)
    windows = [(inputs[:, i:i + params.bptt], targets[:, i:i + params.bptt])
               for i in range(0, inputs.shape[1], params.bptt)]
    valid = DataLoader(windows, batch_size=None)
    return train, valid
