"""The recurrent language model: embedding -> recurrent stack(s) -> softmax over the vocabulary.
One class, variants as parameters (cell, impl, num_layers, bidirectional). Never Lightning.

Causal (`bidirectional=False`): ŷ<t> = softmax(W_y h<t> + b_y) predicts x<t+1> from x<1..t>.
Bidirectional (cloze): ŷ<t> = softmax(W_y [h→<t-1>, h←<t+1>] + b_y) predicts x<t> from the
forward stack's state after x<1..t-1> and the backward stack's state after x<T..t+1>; the two
directions are separate stacks (also when deep), so no path leads from x<t> to ŷ<t>.

Output layer: `softmax` (W_y, b_y over the whole vocabulary; on CPU its loss is computed in
chunks, losses.py) or `adaptive`, the adaptive softmax of Grave, Joulin, Cissé, Grangier & Jégou
2017, "Efficient softmax approximation for GPUs" (torch.nn.AdaptiveLogSoftmaxWithLoss): the
most frequent words (ids below the first cutoff; the vocabulary is sorted by train frequency)
in a head, rarer ones in clusters of smaller dimension. Its log-probabilities are exact and
sum to one over the vocabulary; only their cost is lower.

Regularisation (regularization.py, Merity et al. 2017): dropout on the embeddings
(`dropout_input`), between layers (`dropout_hidden`) and on the outputs (`dropout`), each
locked over time when `locked_dropout`; `embedding_dropout` (whole words); `weight_drop`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.neural.batches import IGNORE
from pipeline.neural.cells import RecurrentStack
from pipeline.neural.losses import linear_cross_entropy
from pipeline.neural.regularization import LockedDropout, embedding_dropout

OUTPUT_LAYERS = ("softmax", "adaptive")


@dataclass(frozen=True)
class RNNConfig:
    vocab_size: int
    cell: str = "rnn"            # rnn | gru | lstm
    impl: str = "textbook"       # textbook | fused
    num_layers: int = 1
    bidirectional: bool = False
    embed_dim: int = 128
    hidden_dim: int = 128
    dropout: float = 0.1         # on the outputs; and on inputs / between layers unless set below
    tie_weights: bool = False    # output W_y shares the embedding matrix (embed == hidden, or the
                                 # last of several causal layers is embed_dim wide)
    compile: bool = False        # textbook cells: torch.compile the time loop
    dropout_input: float | None = None    # on the embeddings (None: `dropout`)
    dropout_hidden: float | None = None   # between layers (None: `dropout`)
    locked_dropout: bool = False          # one mask per sequence, shared by all time steps
    embedding_dropout: float = 0.0        # probability of dropping a whole word's embedding
    weight_drop: float = 0.0              # DropConnect on the hidden-to-hidden matrices
    output_layer: str = "softmax"         # softmax | adaptive
    adaptive_cutoffs: tuple = (2000, 10000)   # word ids where the adaptive softmax's clusters start
    adaptive_div_value: float = 4.0       # each cluster's dimension is the previous one's / this

    def to_dict(self) -> dict:
        return asdict(self)


class RNNLM(nn.Module):
    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        if config.tie_weights:
            # small uniform init, as pytorch/examples: tied N(0, 1) rows make the logits explode
            # (untied, N(0, 1) learns faster in the one-epoch CPU default: deep 58 vs 87 test ppl)
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        rate = config.dropout
        between = rate if config.dropout_hidden is None else config.dropout_hidden
        self.dropout_input = LockedDropout(rate if config.dropout_input is None else config.dropout_input,
                                           config.locked_dropout)
        self.dropout = LockedDropout(rate, config.locked_dropout)            # on the outputs
        # tied deep causal models: the last layer is embed_dim wide (AWD-LSTM: 1150, 1150, 400)
        top = config.embed_dim if config.tie_weights and config.num_layers > 1 \
            and not config.bidirectional else config.hidden_dim
        stack = (config.cell, config.impl, config.embed_dim, config.hidden_dim, config.num_layers,
                 between, config.compile, config.weight_drop, config.locked_dropout, top)
        self.forward_stack = RecurrentStack(*stack)
        self.backward_stack = RecurrentStack(*stack) if config.bidirectional else None
        directions = 2 if config.bidirectional else 1
        features = directions * top
        if config.output_layer not in OUTPUT_LAYERS:
            raise ValueError(f"output_layer={config.output_layer!r}: use one of {', '.join(OUTPUT_LAYERS)}")
        self.adaptive = config.output_layer == "adaptive"
        if self.adaptive:
            cutoffs = [int(c) for c in config.adaptive_cutoffs]
            if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 \
                    or cutoffs[-1] >= config.vocab_size - 1:
                raise ValueError(f"adaptive_cutoffs={cutoffs} must be increasing word ids between 1 "
                                 f"and the vocabulary size - 2 ({config.vocab_size - 2}); lower them "
                                 "or use output_layer: softmax")
            smallest = int(features // config.adaptive_div_value ** len(cutoffs))
            if smallest < 1:
                raise ValueError(f"the adaptive softmax's last cluster would have {features} / "
                                 f"{config.adaptive_div_value:g}^{len(cutoffs)} < 1 dimensions; lower "
                                 "adaptive_div_value, use fewer adaptive_cutoffs or a larger hidden_dim")
            if config.tie_weights:
                raise ValueError("tie_weights needs output_layer: softmax (the adaptive softmax has "
                                 "no single output matrix to share)")
            self.output = nn.AdaptiveLogSoftmaxWithLoss(features, config.vocab_size, cutoffs,
                                                        div_value=config.adaptive_div_value)
            return
        self.output = nn.Linear(features, config.vocab_size)  # W_y, b_y
        if config.tie_weights:  # Press & Wolf 2017; Inan et al. 2017
            if features != config.embed_dim:
                raise ValueError(f"tie_weights needs embed_dim == {directions} x hidden_dim (or, "
                                 "causal with num_layers > 1, a last layer embed_dim wide), got "
                                 f"{config.embed_dim} and {config.hidden_dim}; set tie_weights: false "
                                 "or make the sizes match")
            self.output.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """Causal. tokens (B, T) -> logits (B, T, V) for the next token, final state (L, B, S):
        S = H, or 2H ([h; c]) for an LSTM. softmax(logits) is the model's distribution; with the
        adaptive softmax the logits are already its log-probabilities (natural log)."""
        features, state = self.features(tokens, state)
        return self.logits(features), state

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Output layer: features (..., F) -> logits (..., V) (log-probabilities when adaptive)."""
        if self.adaptive:
            flat = features.reshape(-1, features.shape[-1])
            return self.output.log_prob(flat).view(*features.shape[:-1], -1)
        return self.output(features)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> dropped embeddings (B, T, E): embedding dropout, then input dropout."""
        weight = embedding_dropout(self.embedding.weight, self.config.embedding_dropout, self.training)
        return self.dropout_input(F.embedding(tokens, weight))

    def features(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """Causal, up to the output layer: (dropout(h<t>) (B, T, H), final state (L, B, S))."""
        dropped, _, state = self.features_and_activations(tokens, state)
        return dropped, state

    def features_and_activations(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """(dropout(h<t>), h<t>, final state): the last layer's outputs (B, T, H) with and
        without output dropout, as activation regularisation needs both."""
        if self.backward_stack is not None:
            raise ValueError("a bidirectional model fills blanks; call cloze(), not forward()")
        hidden, state = self.forward_stack(self.embed(tokens), state)      # (B, T, H)
        return self.dropout(hidden), hidden, state

    def loss_sum(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed NLL in nats of the targets (...) (IGNORE skipped) given features (..., F)."""
        if self.adaptive:
            flat, wanted = features.reshape(-1, features.shape[-1]), targets.reshape(-1)
            keep = wanted != IGNORE
            return -self.output(flat[keep], wanted[keep]).output.float().sum()
        return linear_cross_entropy(features, self.output.weight, self.output.bias, targets)

    def cloze(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Bidirectional. tokens (B, L): `<s> x1..xT </s>` padded on the right; lengths (B,).
        Returns logits (B, L-1, V): entry i-1 predicts tokens[:, i] for i = 1..L-1."""
        return self.logits(self.cloze_features(tokens, lengths))

    def cloze_features(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """cloze() up to the output layer: dropout([h→<i-1>, h←<i+1>]) (B, L-1, 2H)."""
        return self.cloze_features_and_activations(tokens, lengths)[0]

    def cloze_features_and_activations(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """(dropout([h→<i-1>, h←<i+1>]), [h→<i-1>, h←<i+1>]), each (B, L-1, 2H)."""
        if self.backward_stack is None:
            raise ValueError("cloze() needs a bidirectional model")
        batch, length = tokens.shape
        x = self.embed(tokens)                                             # (B, L, E)
        forward_states, _ = self.forward_stack(x)                          # (B, L, H)
        position = torch.arange(length, device=tokens.device).expand(batch, length)
        lengths = lengths.to(tokens.device).unsqueeze(1)
        inside = position < lengths
        # reverse each sentence within its own length; padding stays at the end
        reverse = torch.where(inside, lengths - 1 - position, position)
        gather = reverse.unsqueeze(-1).expand_as(x)
        backward_reversed, _ = self.backward_stack(torch.gather(x, 1, gather))
        backward_states = torch.gather(backward_reversed, 1,
                                       reverse.unsqueeze(-1).expand_as(backward_reversed))
        backward_states = backward_states * inside.unsqueeze(-1)           # zero beyond the end
        # target i uses h→ at i-1 and h← at i+1 (zero past the sentence's end)
        zero = backward_states.new_zeros(batch, 1, backward_states.shape[-1])
        right = torch.cat([backward_states[:, 2:], zero], dim=1)           # (B, L-1, H)
        left = forward_states[:, :-1]                                      # (B, L-1, H)
        joined = torch.cat([left, right], dim=-1)
        return self.dropout(joined), joined

    def checkpoint(self) -> dict:
        """Checkpoint as data: config + state_dict (load with torch.load(weights_only=True))."""
        return {"config": self.config.to_dict(), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> RNNLM:
        # compile is a training-speed option; a loaded model scores eagerly
        model = cls(RNNConfig(**{**checkpoint["config"], "compile": False}))
        model.load_state_dict(checkpoint["state_dict"])
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
