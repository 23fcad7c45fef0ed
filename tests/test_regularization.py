"""AWD-LSTM's regularisers (Merity et al. 2017), each against what its paper defines, on the
textbook and the fused cells; NT-ASGD's average against torch.optim.ASGD; variable BPTT."""
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import TrainParams
from pipeline.neural.batches import StreamWindows
from pipeline.neural.cells import RecurrentStack
from pipeline.neural.lit import LitLM, nonmonotone_trigger
from pipeline.neural.regularization import (
    LockedDropout,
    activation_regularization,
    embedding_dropout,
)
from pipeline.neural.resume import best_weights
from pipeline.neural.rnn import RNNLM, ModelConfig

from .test_lit import _stream


def test_locked_dropout_keeps_one_mask_across_time():
    x = torch.ones(6, 9, 5)
    locked = LockedDropout(0.5).train()(x)
    assert torch.equal(locked, locked[:, :1].expand_as(locked))          # same at every step
    assert set(locked.unique().tolist()) <= {0.0, 2.0} and (locked == 0).any()
    plain = LockedDropout(0.5, locked=False).train()(x)
    assert not torch.equal(plain, plain[:, :1].expand_as(plain))
    assert torch.equal(LockedDropout(0.5).eval()(x), x)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    weight = torch.randn(50, 4)
    dropped = embedding_dropout(weight, 0.4, training=True)
    zero = (dropped == 0).all(dim=1)
    assert zero.any() and not zero.all()
    torch.testing.assert_close(dropped[~zero], weight[~zero] / 0.6)
    assert embedding_dropout(weight, 0.4, training=False) is weight


def test_activation_regularization_by_hand():
    dropped = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]]])     # (1, 3, 2)
    undropped = torch.tensor([[[1.0, 1.0], [2.0, 3.0], [2.0, 0.0]]])
    # AR: mean of squares = (1 + 4 + 9 + 0 + 0 + 1) / 6; TAR: ((1 + 4) + (0 + 9)) / 4
    assert activation_regularization(dropped, undropped, 2.0, 0.0).item() == pytest.approx(2 * 15 / 6)
    assert activation_regularization(dropped, undropped, 0.0, 1.0).item() == pytest.approx(14 / 4)
    mask = torch.tensor([[True, True, False]])   # the third position is padding
    assert activation_regularization(dropped, undropped, 1.0, 1.0, mask).item() == pytest.approx(
        (1 + 4 + 9) / 4 + 5 / 2)


@pytest.mark.parametrize("impl", ["textbook", "fused"])
def test_weight_drop_is_dropconnect_on_the_recurrent_matrix(impl):
    """Training with weight_drop p is the same stack run with the hidden-to-hidden matrix
    replaced by dropout(W_hh) under the same generator state; evaluation uses W_hh itself; the
    gradient reaches the undropped matrix."""
    torch.manual_seed(1)
    stack = RecurrentStack("lstm", impl, 5, 6, num_layers=1, dropout=0.0, weight_drop=0.5)
    layer = stack.fused[0] if impl == "fused" else stack.layers[0]
    name = "weight_hh_l0" if impl == "fused" else "weight_h"
    x = torch.randn(2, 7, 5)
    torch.manual_seed(7)
    out, _ = stack.train()(x)
    torch.manual_seed(7)
    mask_applied = F.dropout(getattr(layer, name).detach(), 0.5, True)
    plain = RecurrentStack("lstm", impl, 5, 6, num_layers=1, dropout=0.0)
    plain.load_state_dict(stack.state_dict())
    target = plain.fused[0] if impl == "fused" else plain.layers[0]
    with torch.no_grad():
        getattr(target, name).copy_(mask_applied)
    torch.testing.assert_close(out, plain.eval()(x)[0])
    plain.load_state_dict(stack.state_dict())
    torch.testing.assert_close(stack.eval()(x)[0], plain(x)[0])       # no drop in evaluation
    stack.train()(x)[0].sum().backward()
    assert getattr(layer, name).grad.abs().sum() > 0


def test_weight_drop_is_the_same_on_textbook_and_fused_lstm():
    """With the textbook weights copied into nn.LSTM, the same generator state draws the same
    DropConnect mask: both implementations train the same function."""
    torch.manual_seed(4)
    textbook = RecurrentStack("lstm", "textbook", 5, 7, 1, 0.0, weight_drop=0.3)
    fused = RecurrentStack("lstm", "fused", 5, 7, 1, 0.0, weight_drop=0.3)
    layer = textbook.layers[0]
    with torch.no_grad():
        fused.fused[0].weight_ih_l0.copy_(layer.weight_x)
        fused.fused[0].weight_hh_l0.copy_(layer.weight_h)
        fused.fused[0].bias_ih_l0.copy_(layer.bias)
        fused.fused[0].bias_hh_l0.zero_()
    x = torch.randn(3, 11, 5)
    torch.manual_seed(9)
    ours, _ = textbook.train()(x)
    torch.manual_seed(9)
    theirs, _ = fused.train()(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


AWD = dict(dropout=0.4, dropout_input=0.5, dropout_hidden=0.3, locked_dropout=True,
           embedding_dropout=0.1, weight_drop=0.5)


@pytest.mark.parametrize("impl", ["textbook", "fused"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_regularised_models_never_see_their_target_while_training(impl, bidirectional):
    """Masks are drawn independently of the data: with every regulariser on (training mode,
    the same generator state), changing the token a position predicts leaves its output."""
    model = RNNLM(ModelConfig(vocab_size=30, cell="lstm", impl=impl, num_layers=2, embed_dim=8,
                            hidden_dim=8, bidirectional=bidirectional, **AWD)).train()
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9, 2]])
    changed = tokens.clone()
    changed[0, 4] = 20
    torch.manual_seed(3)
    if bidirectional:
        a = model.cloze(tokens, torch.tensor([7]))[0, 3]
        torch.manual_seed(3)
        b = model.cloze(changed, torch.tensor([7]))[0, 3]
    else:
        a = model(tokens)[0][0, 3]
        torch.manual_seed(3)
        b = model(changed)[0][0, 3]
    torch.testing.assert_close(a, b)


def test_nonmonotone_trigger_follows_awd_lstm():
    """Switch when the new validation ppl is worse than the best of all but the last n."""
    assert not nonmonotone_trigger([100, 90, 80], 85, 5)                 # too few epochs
    assert not nonmonotone_trigger([100, 90, 80, 70, 60, 50], 95, 5)     # better than 100
    assert nonmonotone_trigger([100, 90, 80, 70, 60, 50], 101, 5)
    assert nonmonotone_trigger([40, 100], 45, 1)            # worse than 40, two epochs back
    assert not nonmonotone_trigger([100, 40], 45, 1)        # worse than the last only
    assert not nonmonotone_trigger([40, 100], 45, 2)


def test_averaging_equals_torch_asgd():
    """The NT-ASGD average after k SGD steps is the mean of the k iterates: what
    torch.optim.ASGD(lambd=0) keeps as `ax` with t0=-1 (AWD-LSTM switches to t0=0, which leaves
    out the first iterate)."""
    from torch.optim.swa_utils import AveragedModel
    torch.manual_seed(0)
    ours, reference = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    reference.load_state_dict(ours.state_dict())
    sgd = torch.optim.SGD(ours.parameters(), lr=0.1)
    asgd = torch.optim.ASGD(reference.parameters(), lr=0.1, lambd=0.0, t0=-1.0)
    average = AveragedModel(ours, use_buffers=False)
    for _ in range(5):
        x = torch.randn(8, 4)
        for model, optimizer in ((ours, sgd), (reference, asgd)):
            optimizer.zero_grad()
            model(x).pow(2).sum().backward()
            optimizer.step()
        average.update_parameters(ours)
    for mine, theirs in zip(average.module.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, asgd.state[theirs]["ax"])


def test_nt_asgd_validates_and_saves_the_average(tmp_path):
    """Once averaging has started, validation scores the averaged weights and best_weights()
    returns them; training goes on with the raw ones."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    L.seed_everything(0)
    train = TrainParams(max_epochs=2, batch_size=4, bptt=8, optimizer="nt-asgd", lr=1.0,
                        eval_batch_size=3)
    lit = LitLM(RNNLM(ModelConfig(vocab_size=20, cell="lstm", embed_dim=8, hidden_dim=8)), train,
                _stream(0, 80), _stream(1, 20), seed=0)
    lit._start_averaging()
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            seen.append([p.detach().clone() for p in module.model.parameters()])

    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        callbacks=[Record(), ModelCheckpoint(dirpath=tmp_path, filename="best",
                                                             monitor="val_ppl")],
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(lit)
    assert int(lit.averaged.n_averaged) == len(seen)
    for i, p in enumerate(lit.averaged.module.parameters()):
        torch.testing.assert_close(p, torch.stack([step[i] for step in seen]).mean(0))
    state = torch.load(tmp_path / "best.ckpt", weights_only=True)["state_dict"]
    saved = best_weights(state)
    assert all(torch.equal(saved[k], v) for k, v in lit.averaged.module.state_dict().items())
    assert not all(torch.equal(saved[k], v) for k, v in lit.model.state_dict().items())


def test_variable_bptt_windows_cover_the_stream_once():
    stream = np.arange(3, 4003)
    epochs = [StreamWindows(stream, 4, 35, variable=True, seed=5, epoch=e) for e in range(3)]
    for windows in epochs:
        inputs = torch.cat([windows[i][0] for i in range(len(windows))], dim=1)
        assert np.array_equal(inputs.numpy(), windows.data[:, :-1])          # every position once
        lengths = np.diff(windows.starts)
        assert lengths.min() >= 5 and lengths.max() <= 55
    assert not np.array_equal(epochs[0].starts, epochs[1].starts)           # a new cut each epoch
    again = StreamWindows(stream, 2, 35, rank=1, world=2, variable=True, seed=5, epoch=1)
    assert np.array_equal(again.starts, epochs[1].starts)                  # every rank the same cut
    fixed = StreamWindows(stream, 4, 35)
    assert [fixed[i][0].shape[1] for i in range(len(fixed))][:-1] == [35] * (len(fixed) - 1)


def test_variable_bptt_scales_the_step_learning_rate():
    """The step's lr is lr x window length / bptt; the base lr is back afterwards."""
    lit = LitLM(RNNLM(ModelConfig(vocab_size=20, embed_dim=4, hidden_dim=4)),
                TrainParams(bptt=10, optimizer="sgd", lr=2.0, variable_bptt=True))
    optimizer = torch.optim.SGD(lit.model.parameters(), lr=2.0)
    seen = []
    optimizer.step = lambda closure=None: seen.append(optimizer.param_groups[0]["lr"])
    lit.on_train_batch_start((torch.zeros(3, 7, dtype=torch.long), None), 0)
    lit.optimizer_step(0, 0, optimizer)
    assert seen == [pytest.approx(1.4)] and optimizer.param_groups[0]["lr"] == 2.0


def test_adaptive_softmax_is_a_distribution_on_the_one_scoring_path():
    from pipeline.evaluation import scoring
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=40, cell="gru", embed_dim=8, hidden_dim=16,
                            output_layer="adaptive", adaptive_cutoffs=(5, 20))).eval()
    tokens = torch.randint(1, 40, (2, 6))
    logits, _ = model(tokens)
    assert logits.shape == (2, 6, 40)
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(2, 6))
    torch.testing.assert_close(torch.log_softmax(logits, -1), logits)   # logits are log-probs
    features, _, _ = model.features_and_activations(tokens)
    targets = torch.randint(1, 40, (2, 6))
    targets[0, 0] = -100
    expected = -logits.gather(-1, targets.clamp(min=0).unsqueeze(-1))[..., 0][targets != -100].sum()
    torch.testing.assert_close(model.loss_sum(features, targets), expected)
    stream = _stream(0, 10)
    summary = scoring.summarize(scoring.causal_scores(model, stream, num_columns=2).logprobs)
    assert summary["ppl"] > 1


def test_adaptive_softmax_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="adaptive_cutoffs"):
        RNNLM(ModelConfig(vocab_size=40, output_layer="adaptive", adaptive_cutoffs=(5, 39)))
    with pytest.raises(ValueError, match="adaptive_div_value"):
        RNNLM(ModelConfig(vocab_size=40, hidden_dim=8, output_layer="adaptive", adaptive_cutoffs=(5, 20)))
    with pytest.raises(ValueError, match="tie_weights"):
        RNNLM(ModelConfig(vocab_size=40, embed_dim=128, output_layer="adaptive", tie_weights=True,
                        adaptive_cutoffs=(5,)))
