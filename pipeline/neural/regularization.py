"""AWD-LSTM's regularisers (Merity, Keskar & Socher 2017, arXiv:1708.02182), torch only:
locked dropout (Gal & Ghahramani 2016), embedding dropout, AR and TAR (weight drop, DropConnect:
F.dropout of the recurrent matrices in cells.py). Every mask comes from torch's global
generator, so a resumed run draws the same masks as an uninterrupted one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LockedDropout(nn.Module):
    """Dropout with one mask (B, 1, F) shared across time: x (B, T, F) -> (B, T, F); with
    `locked=False` standard dropout (a mask per element, Srivastava et al. 2014)."""

    def __init__(self, p: float, locked: bool = True):
        super().__init__()
        self.p, self.locked = p, locked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or not self.locked:
            return F.dropout(x, self.p, self.training)   # x itself when not training or p = 0
        mask = x.new_empty(x.shape[0], 1, x.shape[-1]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


def embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """The embedding matrix (V, E) with whole rows (words) zeroed with probability p, the rest
    scaled by 1 / (1 - p), for the lookup only (a tied output layer keeps the undropped one)."""
    if not training or p == 0.0:
        return weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return weight * mask


def activation_regularization(dropped: torch.Tensor, undropped: torch.Tensor, alpha: float,
                              beta: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """AR + TAR (nats per token) of the last layer's outputs (B, T, H) at the positions `mask`
    (B, T) marks (None: all): alpha x mean(dropped²) + beta x mean((undropped<t> - undropped<t-1>)²)
    over pairs of existing neighbours."""
    total = dropped.new_zeros(())
    weights = (dropped.new_ones(dropped.shape[:2]) if mask is None else mask.to(dropped.dtype)
               ).unsqueeze(-1)                                           # (B, T, 1)
    if alpha:
        count = weights.sum().clamp(min=1) * dropped.shape[-1]
        total = total + alpha * (dropped.pow(2) * weights).sum() / count
    if beta and undropped.shape[1] > 1:
        pairs = weights[:, 1:] * weights[:, :-1]
        count = pairs.sum().clamp(min=1) * undropped.shape[-1]
        total = total + beta * ((undropped[:, 1:] - undropped[:, :-1]).pow(2) * pairs).sum() / count
    return total
