"""Recurrent cells. In: inputs (batch, time, features) and an initial state (layers, batch, hidden).
Out: outputs of the top layer (batch, time, hidden) and the final state.

`textbook` cells are the equations of the lecture notes, run through `scan` like tf.scan:
    vanilla  h<t> = tanh(W_h [h<t-1>, x<t>] + b_h)
    GRU      Γr = σ(W_r [h<t-1>, x<t>] + b_r);  Γu = σ(W_u [h<t-1>, x<t>] + b_u)
             h'<t> = tanh(W_h [Γr * h<t-1>, x<t>] + b_h)      (Γr before the product: Cho et al.)
             h<t> = (1 - Γu) * h<t-1> + Γu * h'<t>
    deep     h[l]<t> = f(W_h[l] [h[l]<t-1>, a[l-1]<t>] + b_h[l]);  a[l]<t> = f(W_a[l] h[l]<t> + b_a[l])
Each W [h, x] is split as W_hh h + W_hx x so that the x-part of every time step is one matrix
product hoisted out of the loop. `fused` uses torch.nn.RNN / nn.GRU (cuDNN on GPU): the same
vanilla RNN, but nn.GRU applies its reset gate after the product, r * (W_hn h + b_hn), so it is a
different function from the textbook GRU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def scan(step: Callable, inputs: torch.Tensor, initial: torch.Tensor):
    """cur = initial; for x in inputs (over dim 1): y, cur = step(x, cur). Returns (ys, cur)."""
    state = initial
    outputs = []
    for x in inputs.unbind(1):
        y, state = step(x, state)
        outputs.append(y)
    return torch.stack(outputs, 1), state


def rnn_step(px, h_prev, weight_hh):
    """h<t> = tanh(W_hx x<t> + b_h + W_hh h<t-1>), with W_hx x<t> + b_h precomputed as px."""
    h_new = torch.tanh(px + h_prev @ weight_hh.T)
    return h_new, h_new


def gru_step(px, h_prev, weight_hr, weight_hu, weight_hh):
    """One textbook GRU step; px (B, 3, H) holds the precomputed x parts of Γr, Γu and h'."""
    relevance = torch.sigmoid(px[:, 0] + h_prev @ weight_hr.T)
    update = torch.sigmoid(px[:, 1] + h_prev @ weight_hu.T)
    candidate = torch.tanh(px[:, 2] + (relevance * h_prev) @ weight_hh.T)
    h_new = (1 - update) * h_prev + update * candidate
    return h_new, h_new


def _loop(step: Callable):
    def loop(projected, h, *weights):
        return scan(lambda px, h_prev: step(px, h_prev, *weights), projected, h)
    return loop


class _TextbookLayer(nn.Module):
    """The hoisted input projection, then scan(step) over time. With compile=True the whole time
    loop of a training step is one torch.compile graph, compiled once per (batch, time) shape
    (about a minute each on 2 CPU cores); evaluation (no grad) runs eagerly."""

    step: Callable

    def __init__(self, compile: bool = False):
        super().__init__()
        self.eager = _loop(type(self).step)
        self.compiled = torch.compile(self.eager, dynamic=False) if compile else None

    def loop(self, *args):
        if self.compiled is not None and torch.is_grad_enabled():
            return self.compiled(*args)
        return self.eager(*args)


class TextbookRNNLayer(_TextbookLayer):
    step = staticmethod(rnn_step)

    def __init__(self, input_dim: int, hidden_dim: int, compile: bool = False):
        super().__init__(compile)
        self.weight_hx = nn.Parameter(torch.empty(hidden_dim, input_dim))   # W_h, x part
        self.weight_hh = nn.Parameter(torch.empty(hidden_dim, hidden_dim))  # W_h, h part
        self.bias = nn.Parameter(torch.empty(hidden_dim))                   # b_h
        _init_uniform(self, hidden_dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        projected = x @ self.weight_hx.T + self.bias  # (B, T, H): all time steps at once
        return self.loop(projected, h, self.weight_hh)


class TextbookGRULayer(_TextbookLayer):
    step = staticmethod(gru_step)

    def __init__(self, input_dim: int, hidden_dim: int, compile: bool = False):
        super().__init__(compile)
        self.hidden_dim = hidden_dim
        # rows: [relevance Γr; update Γu; candidate h'] — the x parts of W_r, W_u, W_h
        self.weight_x = nn.Parameter(torch.empty(3 * hidden_dim, input_dim))
        self.weight_hr = nn.Parameter(torch.empty(hidden_dim, hidden_dim))
        self.weight_hu = nn.Parameter(torch.empty(hidden_dim, hidden_dim))
        self.weight_hh = nn.Parameter(torch.empty(hidden_dim, hidden_dim))
        self.bias = nn.Parameter(torch.empty(3 * hidden_dim))               # [b_r; b_u; b_h]
        _init_uniform(self, hidden_dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        xr, xu, xh = (x @ self.weight_x.T + self.bias).chunk(3, dim=-1)  # each (B, T, H)
        projected = torch.stack([xr, xu, xh], dim=2)                        # (B, T, 3, H)
        return self.loop(projected, h, self.weight_hr, self.weight_hu, self.weight_hh)


def _init_uniform(module: nn.Module, hidden_dim: int) -> None:
    bound = 1.0 / math.sqrt(hidden_dim)  # as torch.nn.RNN / GRU initialise
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


class RecurrentStack(nn.Module):
    """num_layers cells of one kind and implementation, one direction.
    state: (num_layers, B, H); x: (B, T, input_dim) -> (B, T, H)."""

    def __init__(self, cell: str, impl: str, input_dim: int, hidden_dim: int, num_layers: int,
                 dropout: float, compile: bool = False):
        super().__init__()
        self.impl, self.num_layers, self.hidden_dim = impl, num_layers, hidden_dim
        if impl == "fused":
            fused = nn.GRU if cell == "gru" else nn.RNN
            self.fused = fused(input_dim, hidden_dim, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
            return
        if impl != "textbook":
            raise ValueError(f"impl={impl!r}: use textbook or fused")
        layer = TextbookGRULayer if cell == "gru" else TextbookRNNLayer
        self.layers = nn.ModuleList(
            layer(input_dim if i == 0 else hidden_dim, hidden_dim, compile) for i in range(num_layers))
        # a[l]<t> = tanh(W_a[l] h[l]<t> + b_a[l]) feeds layer l+1
        self.activations = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers - 1))
        self.dropout = nn.Dropout(dropout)

    def initial_state(self, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(self.num_layers, batch_size, self.hidden_dim)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        if state is None:
            state = self.initial_state(x.shape[0], x)
        if self.impl == "fused":
            return self.fused(x, state.contiguous())
        finals = []
        for i, layer in enumerate(self.layers):
            x, final = layer(x, state[i])
            finals.append(final)
            if i < self.num_layers - 1:
                x = self.dropout(torch.tanh(self.activations[i](x)))
        return x, torch.stack(finals)
