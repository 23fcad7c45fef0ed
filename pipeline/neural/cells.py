"""Recurrent cells. In: x (B, T, I), state (L, B, S). Out: the top layer's outputs (B, T, H), the
final state (L, B, S); S = H for rnn and gru, 2H ([h; c]) for lstm. `textbook`: the lecture's
equations through `scan` (GRU: Γr before the product, Cho et al. 2014); `fused`: torch.nn.RNN/GRU/
LSTM (nn.GRU applies r after it: another function). Equations: docs/internals.md."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.neural.regularization import LockedDropout


def scan(step: Callable, inputs: torch.Tensor, initial: torch.Tensor, *weights: torch.Tensor):
    """(the outputs stacked on dim 1, the final state) of `step` run over dim 1 of `inputs`."""
    state, outputs = initial, []
    for x in inputs.unbind(1):
        y, state = step(x, state, *weights)
        outputs.append(y)
    return torch.stack(outputs, 1), state


def rnn_step(px, h_prev, weight_hh):
    """h<t> = tanh(W_hx x<t> + b_h + W_hh h<t-1>), with W_hx x<t> + b_h precomputed as px (B, 1, H)."""
    h_new = torch.tanh(px[:, 0] + h_prev @ weight_hh.T)
    return h_new, h_new


def gru_step(px, h_prev, weight_hr, weight_hu, weight_hh):
    """One textbook GRU step; px (B, 3, H) holds the precomputed x parts of Γr, Γu and h'."""
    relevance = torch.sigmoid(px[:, 0] + h_prev @ weight_hr.T)
    update = torch.sigmoid(px[:, 1] + h_prev @ weight_hu.T)
    candidate = torch.tanh(px[:, 2] + (relevance * h_prev) @ weight_hh.T)
    h_new = (1 - update) * h_prev + update * candidate
    return h_new, h_new


def lstm_step(px, state, weight_h):
    """One textbook LSTM step. px (B, 4, H): the precomputed x parts (with b) of Γu, Γf, c'<t>
    and Γo; state (B, 2H) = [h<t-1>; c<t-1>]. Returns (h<t>, [h<t>; c<t>])."""
    h_prev, c_prev = state.chunk(2, dim=-1)
    gates = px + (h_prev @ weight_h.T).view_as(px)                  # (B, 4, H)
    update, forget, output = (torch.sigmoid(gates[:, i]) for i in (0, 1, 3))
    candidate = torch.tanh(gates[:, 2])
    c_new = update * candidate + forget * c_prev
    h_new = output * torch.tanh(c_new)
    return h_new, torch.cat([h_new, c_new], dim=-1)


# each cell's step and weights (name, rows in units of H, columns: "x" input_dim, "h" hidden_dim,
# None a vector): the x weight first, the bias last, the hidden-to-hidden ones between
TEXTBOOK = {
    "rnn": (rnn_step, (("weight_hx", 1, "x"), ("weight_hh", 1, "h"), ("bias", 1, None))),
    # weight_x rows [Γr; Γu; h'] are the x parts of W_r, W_u, W_h; bias [b_r; b_u; b_h]
    "gru": (gru_step, (("weight_x", 3, "x"), ("weight_hr", 1, "h"), ("weight_hu", 1, "h"),
                       ("weight_hh", 1, "h"), ("bias", 3, None))),
    # rows [update Γu; forget Γf; candidate c'; output Γo] (torch.nn.LSTM's i, f, g, o)
    "lstm": (lstm_step, (("weight_x", 4, "x"), ("weight_h", 4, "h"), ("bias", 4, None))),
}


class TextbookLayer(nn.Module):
    """One layer of TEXTBOOK[cell]: x (B, T, I), state (B, S) -> (B, T, H), (B, S). Weights drawn
    from U(-1/sqrt(H), 1/sqrt(H)) as torch.nn.RNN / GRU initialise; compile=True: a training
    step's time loop is one torch.compile graph (no-grad runs eagerly)."""

    def __init__(self, cell: str, input_dim: int, hidden_dim: int, compile: bool = False,
                 weight_drop: float = 0.0):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.weight_drop = weight_drop   # DropConnect probability on the hidden-to-hidden matrices
        step, weights = TEXTBOOK[cell]
        columns, bound = {"x": (input_dim,), "h": (hidden_dim,), None: ()}, 1.0 / math.sqrt(hidden_dim)
        for name, rows, kind in weights:
            weight = torch.empty(rows * hidden_dim, *columns[kind]).uniform_(-bound, bound)
            self.register_parameter(name, nn.Parameter(weight))
        self.eager = functools.partial(scan, step)
        self.compiled = torch.compile(self.eager, dynamic=False) if compile else None

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        weight_x, *hidden, bias = self.parameters()   # in TEXTBOOK's order
        # (B, T, rows, H): every time step's x parts at once
        projected = (x @ weight_x.T + bias).unflatten(-1, (-1, self.hidden_dim))
        # weight drop (DropConnect): one mask per forward pass, every time step and sequence
        hidden = [F.dropout(weight, self.weight_drop, self.training) for weight in hidden]
        loop = self.compiled if self.compiled is not None and torch.is_grad_enabled() else self.eager
        return loop(projected, state, *hidden)


class RecurrentStack(nn.Module):
    """num_layers cells of one kind, one direction: x (B, T, input_dim), state (L, B, S) -> (B, T,
    output_dim), (L, B, S); output_dim (default hidden_dim): the last layer's width (AWD-LSTM's tied
    models: embed_dim). `dropout` acts between layers (locked: a mask per sequence)."""

    def __init__(self, cell: str, impl: str, input_dim: int, hidden_dim: int, num_layers: int,
                 dropout: float, compile: bool = False, weight_drop: float = 0.0,
                 locked: bool = False, output_dim: int | None = None):
        super().__init__()
        self.impl, self.num_layers, self.lstm = impl, num_layers, cell == "lstm"
        self.widths = [hidden_dim] * (num_layers - 1) + [output_dim or hidden_dim]
        self.state_dim = (2 if self.lstm else 1) * max(self.widths)
        self.weight_drop = weight_drop
        self.dropout = LockedDropout(dropout, locked)
        sizes = [input_dim, *self.widths[:-1]]
        if impl == "fused":
            fused = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
            self.fused = nn.ModuleList(fused(n, w, 1, batch_first=True)
                                       for n, w in zip(sizes, self.widths, strict=True))
            return
        self.layers = nn.ModuleList(TextbookLayer(cell, n, w, compile, weight_drop)
                                    for n, w in zip(sizes, self.widths, strict=True))
        # a[l]<t> = tanh(W_a[l] h[l]<t> + b_a[l]) feeds layer l+1
        self.activations = nn.ModuleList(nn.Linear(w, w) for w in self.widths[:-1])

    def _fused_layer(self, module: nn.Module, x: torch.Tensor, state: torch.Tensor):
        """One fused layer: x (B, T, in), state (B, S) -> (B, T, H), (B, S)."""
        initial = state.unsqueeze(0)   # [h; c] splits into nn.LSTM's (h, c)
        initial = tuple(part.contiguous() for part in initial.chunk(2, -1)) if self.lstm else initial.contiguous()
        if self.training and self.weight_drop:
            weights = dict(module.named_parameters())
            weights["weight_hh_l0"] = F.dropout(weights["weight_hh_l0"], self.weight_drop, True)
            out, final = torch.func.functional_call(module, weights, (x, initial))
        else:
            out, final = module(x, initial)
        final = torch.cat(final, dim=-1) if self.lstm else final
        return out, final[0]

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        if state is None:
            state = x.new_zeros(self.num_layers, x.shape[0], self.state_dim)
        finals = []
        for i, width in enumerate(self.widths):
            size = (2 if self.lstm else 1) * width
            if self.impl == "fused":
                x, final = self._fused_layer(self.fused[i], x, state[i, :, :size])
            else:
                x, final = self.layers[i](x, state[i, :, :size])
            finals.append(F.pad(final, (0, self.state_dim - size)))   # a narrower layer: zeros
            if i < self.num_layers - 1:
                if self.impl == "textbook":
                    x = torch.tanh(self.activations[i](x))
                x = self.dropout(x)
        return x, torch.stack(finals)
