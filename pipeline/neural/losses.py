"""Output layer and loss in one step (CPU): the summed cross-entropy of softmax(W_y h + b_y).
In: h (..., H), W_y (V, H), b_y (V,), targets (...) with IGNORE. Out: the summed NLL in nats,
differentiable in h, W_y, b_y, `chunk` rows at a time: (N, V) logits never whole (docs/internals.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.neural.batches import IGNORE

CHUNK = 256    # rows of logits at a time (measured: 128-256 rows are fastest at V = 12.8k)


def linear_cross_entropy(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         targets: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Σ over non-IGNORE targets of -log softmax(features @ weight.T + bias)[target]."""
    h = features.reshape(-1, features.shape[-1])
    y = targets.reshape(-1)
    if features.device.type != "cpu":
        return F.cross_entropy(F.linear(h, weight, bias).float(), y, ignore_index=IGNORE,
                               reduction="sum")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (h, weight, bias)):
        return _LinearCrossEntropy.apply(h, weight, bias, y, chunk)
    return _chunked(h, weight, bias, y, chunk, grads=False)[0]


def _chunked(h, weight, bias, y, chunk, grads: bool):
    total = torch.zeros((), dtype=torch.float64)
    grad_h, grad_w, grad_b = (torch.zeros_like(t) if grads else None for t in (h, weight, bias))
    for start in range(0, h.shape[0], chunk):
        hc, yc = h[start:start + chunk], y[start:start + chunk]
        keep = yc != IGNORE
        safe = torch.where(keep, yc, 0)
        logits = torch.addmm(bias, hc, weight.T)                        # (c, V)
        lse = torch.logsumexp(logits, dim=1)
        picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1)
        total += ((lse - picked) * keep).sum(dtype=torch.float64)
        if grads:
            g = logits.sub_(lse.unsqueeze(1)).exp_()                   # softmax, in place
            g.scatter_add_(1, safe.unsqueeze(1), -keep.to(g.dtype).unsqueeze(1))  # - onehot
            g.mul_(keep.to(g.dtype).unsqueeze(1))                      # ignored rows: no gradient
            torch.mm(g, weight, out=grad_h[start:start + chunk])
            grad_w.addmm_(g.T, hc)
            grad_b += g.sum(0)
    return total.to(h.dtype), grad_h, grad_w, grad_b


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, y, chunk):
        total, grad_h, grad_w, grad_b = _chunked(h, weight, bias, y, chunk, grads=True)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        return grad_h * grad_output, grad_w * grad_output, grad_b * grad_output, None, None
