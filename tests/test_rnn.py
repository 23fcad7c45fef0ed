"""The model's contracts: causality, and the bidirectional model never seeing its target."""
import pytest
import torch

from pipeline.config import ModelParams
from pipeline.errors import ParamsError
from pipeline.neural.rnn import RNNLM, ModelConfig


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize(("cell", "impl"), [("rnn", "textbook"), ("gru", "textbook"),
                                            ("lstm", "textbook"), ("lstm", "fused")])
def test_bidirectional_prediction_ignores_its_own_token(cell, impl, num_layers):
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=20, cell=cell, impl=impl, num_layers=num_layers,
                            bidirectional=True, embed_dim=8, hidden_dim=8, dropout=0.0)).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9, 2], [1, 10, 11, 12, 2, 2, 2]])
    lengths = torch.tensor([7, 5])
    before = model.cloze(tokens, lengths)
    for t in range(1, 6):
        changed = tokens.clone()
        changed[:, t] = 19
        after = model.cloze(changed, lengths)
        # logits index t-1 predict position t: unchanged
        torch.testing.assert_close(after[:, t - 1], before[:, t - 1])
        # but a neighbour's prediction does see it (the model is not trivially blind)
        assert (after[0, t] - before[0, t]).abs().max() > 1e-6 or t == 6


def test_bidirectional_padding_does_not_leak():
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=20, bidirectional=True, embed_dim=8, hidden_dim=8, dropout=0.0)).eval()
    alone = model.cloze(torch.tensor([[1, 10, 11, 2]]), torch.tensor([4]))
    padded = model.cloze(torch.tensor([[1, 10, 11, 2, 7, 7]]), torch.tensor([4]))
    torch.testing.assert_close(padded[:, :3], alone)


@pytest.mark.parametrize("impl", ["textbook", "fused"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_causal_prediction_ignores_the_future(cell, impl):
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=20, cell=cell, impl=impl, num_layers=2, embed_dim=8,
                            hidden_dim=8, dropout=0.0)).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    before, _ = model(tokens)
    changed = tokens.clone()
    changed[0, 3] = 19
    after, _ = model(changed)
    torch.testing.assert_close(after[:, :3], before[:, :3])
    assert (after[:, 3] - before[:, 3]).abs().max() > 1e-6


def test_wrong_mode_is_a_clear_error():
    causal = RNNLM(ModelConfig(vocab_size=5))
    with pytest.raises(ValueError, match="needs a bidirectional model"):
        causal.cloze(torch.ones(1, 3, dtype=torch.long), torch.tensor([3]))
    bidirectional = RNNLM(ModelConfig(vocab_size=5, bidirectional=True))
    with pytest.raises(ValueError, match="call cloze"):
        bidirectional(torch.ones(1, 3, dtype=torch.long))


def test_weight_tying_shares_the_embedding():
    model = RNNLM(ModelConfig(vocab_size=30, embed_dim=8, hidden_dim=8, tie_weights=True))
    assert model.output.weight is model.embedding.weight
    untied = RNNLM(ModelConfig(vocab_size=30, embed_dim=8, hidden_dim=8))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in untied.parameters()) - 30 * 8
    with pytest.raises(ValueError, match="tie_weights"):
        RNNLM(ModelConfig(vocab_size=30, embed_dim=8, hidden_dim=16, tie_weights=True))


def test_checkpoint_is_data_and_round_trips(tmp_path):
    model = RNNLM(ModelConfig(vocab_size=12, cell="gru", num_layers=2, embed_dim=6, hidden_dim=6,
                            tie_weights=True))
    torch.save(model.checkpoint(), tmp_path / "model.pt")
    loaded = RNNLM.from_checkpoint(torch.load(tmp_path / "model.pt", weights_only=True))
    assert loaded.config == model.config
    tokens = torch.tensor([[1, 4, 5, 6]])
    torch.testing.assert_close(loaded.eval()(tokens)[0], model.eval()(tokens)[0])


@pytest.mark.parametrize("impl", ["textbook", "fused"])
def test_tied_deep_model_has_an_embedding_wide_last_layer(impl):
    """AWD-LSTM's shape: layers hidden_dim, hidden_dim, then embed_dim wide so that the output
    layer can share the embedding; the state keeps one shape (L, B, 2 x hidden) and carrying it
    over a cut gives the same outputs as one pass."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=30, cell="lstm", impl=impl, num_layers=3, embed_dim=6,
                            hidden_dim=10, tie_weights=True)).eval()
    assert model.output.weight is model.embedding.weight
    assert model.forward_stack.widths == [10, 10, 6]
    tokens = torch.randint(0, 30, (2, 9))
    whole, state = model(tokens)
    assert state.shape == (3, 2, 20) and torch.all(state[2, :, 12:] == 0)
    first, carried = model(tokens[:, :4])
    rest, again = model(tokens[:, 4:], carried)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)
    torch.testing.assert_close(again, state)


def test_vocabulary_rules_name_the_model():
    spec = ModelParams(output_layer="adaptive", adaptive_cutoffs=(5, 39))
    with pytest.raises(ParamsError, match=r"models\.gru\.adaptive_cutoffs=\[5, 39\]: .*\(39\)"):
        ModelConfig.of("gru", spec, 40)
    assert ModelConfig.of("gru", spec, 41).checkpoint()["vocab_size"] == 41
