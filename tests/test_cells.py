"""Textbook cells against independent implementations."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.neural.cells import (
    RecurrentStack,
    TextbookLayer,
    scan,
)


def test_scan_is_the_textbook_loop():
    ys, final = scan(lambda x, cur: (x + cur, x + cur), torch.arange(4.0).view(1, 4), torch.zeros(1))
    assert ys.tolist() == [[0.0, 1.0, 3.0, 6.0]] and final.item() == 6.0


def test_textbook_vanilla_equals_torch_rnn():
    torch.manual_seed(0)
    layer = TextbookLayer("rnn", 5, 7)
    reference = nn.RNN(5, 7, batch_first=True)
    with torch.no_grad():   # W_h [h, x] + b_h  <->  W_ih x + b_ih + W_hh h + b_hh
        reference.weight_ih_l0.copy_(layer.weight_hx)
        reference.weight_hh_l0.copy_(layer.weight_hh)
        reference.bias_ih_l0.copy_(layer.bias)
        reference.bias_hh_l0.zero_()
    x, h0 = torch.randn(3, 11, 5), torch.randn(3, 7)
    ours, ours_final = layer(x, h0)
    theirs, theirs_final = reference(x, h0.unsqueeze(0))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_final, theirs_final[0], atol=1e-5, rtol=0)


def _numpy_gru(x, h, layer):
    """The lecture's GRU in float64 NumPy, one time step at a time."""
    def sigmoid(z):
        return 1 / (1 + np.exp(-z))
    H = layer.hidden_dim
    wx = layer.weight_x.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    W_r = np.concatenate([layer.weight_hr.detach().double().numpy(), wx[:H]], axis=1)
    W_u = np.concatenate([layer.weight_hu.detach().double().numpy(), wx[H:2 * H]], axis=1)
    W_h = np.concatenate([layer.weight_hh.detach().double().numpy(), wx[2 * H:]], axis=1)
    outputs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        gate_r = sigmoid(np.concatenate([h, xt], 1) @ W_r.T + b[:H])
        gate_u = sigmoid(np.concatenate([h, xt], 1) @ W_u.T + b[H:2 * H])
        candidate = np.tanh(np.concatenate([gate_r * h, xt], 1) @ W_h.T + b[2 * H:])
        h = (1 - gate_u) * h + gate_u * candidate
        outputs.append(h)
    return np.stack(outputs, 1)


def test_textbook_gru_equals_numpy_equations():
    torch.manual_seed(1)
    layer = TextbookLayer("gru", 4, 6).double()
    x, h0 = torch.randn(2, 9, 4, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    ours, _ = layer(x, h0)
    np.testing.assert_allclose(ours.detach().numpy(), _numpy_gru(x.numpy(), h0.numpy(), layer), atol=1e-12)


def test_fused_gru_is_a_different_function():
    """nn.GRU applies the reset gate after the product; with the same weights it disagrees."""
    torch.manual_seed(2)
    layer = TextbookLayer("gru", 4, 6)
    fused = nn.GRU(4, 6, batch_first=True)
    H = 6
    with torch.no_grad():  # torch gate order r, z, n; z = 1 - Γu
        fused.weight_ih_l0.copy_(torch.cat([layer.weight_x[:H], -layer.weight_x[H:2 * H], layer.weight_x[2 * H:]]))
        fused.weight_hh_l0.copy_(torch.cat([layer.weight_hr, -layer.weight_hu, layer.weight_hh]))
        fused.bias_ih_l0.copy_(torch.cat([layer.bias[:H], -layer.bias[H:2 * H], layer.bias[2 * H:]]))
        fused.bias_hh_l0.zero_()
    x, h0 = torch.randn(2, 5, 4), torch.randn(2, 6)
    ours, _ = layer(x, h0)
    theirs, _ = fused(x, h0.unsqueeze(0))
    torch.testing.assert_close(ours[:, 0, :0], theirs[:, 0, :0])  # shapes agree
    assert (ours - theirs).abs().max() > 1e-3


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("impl", ["textbook", "fused"])
def test_stack_shapes(cell, impl):
    stack = RecurrentStack(cell, impl, 5, 8, num_layers=3, dropout=0.0)
    out, state = stack(torch.randn(2, 4, 5))
    width = 16 if cell == "lstm" else 8   # an LSTM's state is [h; c]
    assert out.shape == (2, 4, 8) and state.shape == (3, 2, width)
    again, _ = stack(torch.randn(2, 4, 5), state)   # a state it returned is one it takes
    assert again.shape == (2, 4, 8)


def test_compiled_textbook_gru_equals_eager():
    """compile=True (torch.compile of the time loop) is a speed option, not a different model."""
    torch.manual_seed(0)
    eager = TextbookLayer("gru", 4, 6)
    compiled = TextbookLayer("gru", 4, 6, compile=True)
    compiled.load_state_dict(eager.state_dict())
    x, h0 = torch.randn(2, 5, 4), torch.randn(2, 6)
    want, want_final = eager(x, h0)
    want.sum().backward()
    got, got_final = compiled(x, h0)
    got.sum().backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_final, want_final, atol=1e-5, rtol=0)
    for a, b in zip(compiled.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=0)


def _numpy_lstm(x, state, layer):
    """The LSTM equations in float64 NumPy, one time step at a time (gate rows u, f, c', o)."""
    def sigmoid(z):
        return 1 / (1 + np.exp(-z))
    H = layer.hidden_dim
    W = np.concatenate([layer.weight_h.detach().double().numpy(),
                        layer.weight_x.detach().double().numpy()], axis=1)   # W [h, x]
    b = layer.bias.detach().double().numpy()
    h, c = state[:, :H], state[:, H:]
    outputs = []
    for t in range(x.shape[1]):
        z = np.concatenate([h, x[:, t]], 1) @ W.T + b
        update, forget = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])
        candidate, output = np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        c = update * candidate + forget * c
        h = output * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, 1), np.concatenate([h, c], 1)


def test_textbook_lstm_equals_numpy_equations():
    torch.manual_seed(3)
    layer = TextbookLayer("lstm", 4, 6).double()
    x, state = torch.randn(2, 9, 4, dtype=torch.float64), torch.randn(2, 12, dtype=torch.float64)
    ours, final = layer(x, state)
    want, want_final = _numpy_lstm(x.numpy(), state.numpy(), layer)
    np.testing.assert_allclose(ours.detach().numpy(), want, atol=1e-12)
    np.testing.assert_allclose(final.detach().numpy(), want_final, atol=1e-12)


def test_fused_lstm_is_the_same_function():
    """nn.LSTM computes the same equations (gate order i, f, g, o = Γu, Γf, c', Γo; its two
    biases sum to b): the textbook weights copied into it give the same outputs and final
    [h; c]. (Deep stacks differ by design: the textbook one puts a[l] = tanh(W_a h + b_a)
    between layers, cuDNN feeds h[l] on, as for the other cells.)"""
    torch.manual_seed(4)
    layer = TextbookLayer("lstm", 5, 7)
    fused = RecurrentStack("lstm", "fused", 5, 7, num_layers=1, dropout=0.0)
    with torch.no_grad():
        fused.fused[0].weight_ih_l0.copy_(layer.weight_x)
        fused.fused[0].weight_hh_l0.copy_(layer.weight_h)
        fused.fused[0].bias_ih_l0.copy_(layer.bias)
        fused.fused[0].bias_hh_l0.zero_()
    x, state = torch.randn(3, 11, 5), torch.randn(3, 14)
    ours, ours_final = layer(x, state)
    theirs, theirs_final = fused(x, state.unsqueeze(0))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_final, theirs_final[0], atol=1e-5, rtol=0)
