"""The chunked output layer + cross-entropy equals torch's linear + cross_entropy: loss and the
gradients of features, W_y and b_y, with IGNORE targets skipped, for any chunk size."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.neural.batches import IGNORE
from pipeline.neural.losses import linear_cross_entropy
from pipeline.neural.rnn import RNNLM, ModelConfig


def _inputs(seed=0, rows=37, dim=8, vocab=50):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, dim, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, dim, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(vocab, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, vocab, (rows,), generator=g)
    y[::5] = IGNORE
    return h, w, b, y


@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_matches_linear_then_cross_entropy(chunk):
    h, w, b, y = _inputs()
    expected = F.cross_entropy(F.linear(h, w, b), y, ignore_index=IGNORE, reduction="sum")
    (expected * 0.3).backward()
    want = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    got = linear_cross_entropy(h, w, b, y, chunk=chunk)
    (got * 0.3).backward()
    assert torch.allclose(got, expected, rtol=1e-12)
    for t, g in zip((h, w, b), want, strict=True):
        assert torch.allclose(t.grad, g, rtol=1e-10, atol=1e-12)


def test_without_grad_gives_the_same_loss():
    h, w, b, y = _inputs(seed=1)
    with torch.no_grad():
        expected = F.cross_entropy(F.linear(h, w, b), y, ignore_index=IGNORE, reduction="sum")
        got = linear_cross_entropy(h, w, b, y, chunk=5)
    assert torch.allclose(got, expected, rtol=1e-12)


def test_tied_model_gradient_reaches_the_embedding():
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=30, embed_dim=6, hidden_dim=6, tie_weights=True,
                            dropout=0.0)).double()
    tokens = torch.randint(0, 30, (3, 9))
    features, _, _ = model.features_and_activations(tokens[:, :-1])
    model.loss_sum(features, tokens[:, 1:]).backward()
    ours = model.embedding.weight.grad.clone()
    model.zero_grad()
    logits, _ = model(tokens[:, :-1])
    F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="sum").backward()
    assert torch.allclose(ours, model.embedding.weight.grad, rtol=1e-10, atol=1e-12)
