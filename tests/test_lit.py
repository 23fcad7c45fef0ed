"""The Lightning shell on a real Trainer (CPU, tiny): it learns, and its validation perplexity is
the evaluation's perplexity (same tokens, same sums)."""
import math

import lightning as L
import numpy as np
import pytest
import torch

from pipeline.config import TrainParams
from pipeline.evaluation import scoring
from pipeline.neural.batches import train_loader, valid_loader
from pipeline.neural.lit import LitLM
from pipeline.neural.rnn import RNNLM, ModelConfig


def _stream(seed, sentences):
    rng = np.random.default_rng(seed)
    # a learnable language: each sentence counts up from a random start
    parts = []
    for _ in range(sentences):
        start = rng.integers(3, 10)
        parts.append(np.concatenate([[1], np.arange(start, start + rng.integers(2, 8)), [2]]))
    return np.concatenate(parts).astype(np.int32)


def loaders(cloze, train_stream, valid_stream, params, seed):
    return train_loader(cloze, train_stream, params, seed), valid_loader(cloze, valid_stream, params)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fit_learns_and_validation_matches_scoring(bidirectional):
    L.seed_everything(0)
    train = TrainParams(max_epochs=3, batch_size=4, bptt=8, lr=0.01, eval_batch_size=3)
    model = RNNLM(ModelConfig(vocab_size=20, cell="gru", bidirectional=bidirectional, embed_dim=16,
                            hidden_dim=16, dropout=0.0))
    lit = LitLM(model, train)
    train_stream, valid_stream = _stream(0, 200), _stream(1, 30)
    train_loader, valid_loader = loaders(bidirectional, train_stream, valid_stream, train, seed=0)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=0.25)
    trainer.fit(lit, train_loader, valid_loader)
    history = [h["val_ppl"] for h in lit.history]
    assert len(history) == 3 and history[-1] < history[0] < 20
    if bidirectional:
        logprobs = scoring.cloze_scores(model, valid_stream).logprobs
    else:
        logprobs = scoring.causal_scores(model, valid_stream, num_columns=3).logprobs
    assert scoring.summarize(logprobs)["ppl"] == pytest.approx(history[-1], rel=1e-5)
    assert math.isfinite(history[-1])


def test_plateau_schedule_anneals_the_learning_rate():
    L.seed_everything(0)
    train = TrainParams(max_epochs=4, batch_size=4, bptt=8, optimizer="sgd", lr=50.0,
                        lr_schedule="plateau", lr_decay=0.25, eval_batch_size=3)
    lit = LitLM(RNNLM(ModelConfig(vocab_size=20, embed_dim=8, hidden_dim=8, dropout=0.0)), train)
    train_loader, valid_loader = loaders(False, _stream(0, 60), _stream(1, 10), train, seed=0)
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(lit, train_loader, valid_loader)
    history = [h["val_ppl"] for h in lit.history]
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    # ReduceLROnPlateau (patience 0) decays after every epoch that does not beat the best so far
    worse = sum(h >= min(history[:i]) * (1 - 1e-4) for i, h in enumerate(history) if i)
    assert lr == pytest.approx(50.0 * 0.25 ** worse) and worse >= 1


def test_step_schedule_follows_zaremba():
    """lr_decay_start epochs at the full lr, then x lr_decay after every epoch."""
    train = TrainParams(max_epochs=5, batch_size=4, bptt=8, optimizer="sgd", lr=1.0,
                        lr_schedule="step", lr_decay=0.5, lr_decay_start=2, eval_batch_size=3)
    lit = LitLM(RNNLM(ModelConfig(vocab_size=20, embed_dim=8, hidden_dim=8)), train)
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    train_loader, valid_loader = loaders(False, _stream(0, 30), _stream(1, 10), train, seed=0)
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(lit, train_loader, valid_loader)
    assert seen == pytest.approx([1.0, 1.0, 0.5, 0.25, 0.125])


class _Killed(Exception):
    pass


class _KillAt(L.Callback):
    """Dies after `step` optimiser steps, before that step's checkpoint is written (Lightning
    runs ModelCheckpoint callbacks last): the run resumes from the checkpoint of step - 1."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise _Killed


# AWD-LSTM's recipe at once: locked, embedding and between-layer dropout, weight drop (fused:
# through functional_call), AR/TAR, variable BPTT, NT-ASGD with the average running
AWD_MODEL = dict(impl="fused", num_layers=2, dropout_input=0.4, dropout_hidden=0.2,
                 locked_dropout=True, embedding_dropout=0.1, weight_drop=0.3)
AWD_TRAIN = dict(optimizer="nt-asgd", lr=1.0, ar_alpha=2.0, tar_beta=1.0, variable_bptt=True)


@pytest.mark.parametrize(("cell", "bidirectional", "awd"), [
    ("gru", False, False), ("gru", True, False), ("lstm", False, False), ("lstm", False, True)])
def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path, cell, bidirectional, awd):
    """Kill in the second epoch, resume from last.ckpt: same weights, optimiser, history, bit for
    bit on CPU (hidden state, position in the epoch and RNG states are in the checkpoint)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    train = TrainParams(**{**dict(max_epochs=3, batch_size=4, bptt=8, lr=0.01, eval_batch_size=3,
                                  lr_schedule="plateau"), **(AWD_TRAIN if awd else {})})

    def fit(directory, kill_at=None, ckpt_path=None):
        L.seed_everything(0)
        model = RNNLM(ModelConfig(vocab_size=20, cell=cell, bidirectional=bidirectional,
                                embed_dim=16, hidden_dim=16, dropout=0.3, **(AWD_MODEL if awd else {})))
        lit = LitLM(model, train, _stream(0, 120), _stream(1, 30), seed=0)
        if awd and ckpt_path is None:
            lit._start_averaging()   # a resumed run gets its average from the checkpoint
        callbacks = [ModelCheckpoint(dirpath=directory, save_last=True, save_top_k=0,
                                     every_n_train_steps=3)]
        callbacks += [_KillAt(kill_at)] if kill_at else []
        trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, callbacks=callbacks,
                            enable_progress_bar=False, enable_model_summary=False,
                            gradient_clip_val=0.25, deterministic=True, num_sanity_val_steps=0,
                            reload_dataloaders_every_n_epochs=1 if awd else 0)
        trainer.fit(lit, ckpt_path=ckpt_path, weights_only=True)
        return lit, trainer

    whole, trainer = fit(tmp_path / "whole")
    per_epoch = trainer.num_training_batches
    kill_at = per_epoch + per_epoch // 2 + 1   # mid second epoch, one step past a checkpoint
    with pytest.raises(_Killed):
        fit(tmp_path / "cut", kill_at=kill_at)
    resumed, _ = fit(tmp_path / "cut", ckpt_path=tmp_path / "cut" / "last.ckpt")
    assert resumed.history == whole.history and len(whole.history) == 3
    assert awd == (resumed.averaged is not None)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
