"""The recurrent language model: embedding -> recurrent stack(s) -> softmax over the vocabulary.
One class, variants as parameters (cell, impl, num_layers, bidirectional). Imports only torch.

Causal (`bidirectional=False`): ŷ<t> = softmax(W_y h<t> + b_y) predicts x<t+1> from x<1..t>.
Bidirectional (cloze): ŷ<t> = softmax(W_y [h→<t-1>, h←<t+1>] + b_y) predicts x<t> from the
forward stack's state after x<1..t-1> and the backward stack's state after x<T..t+1>; the two
directions are separate stacks (also when deep), so no path leads from x<t> to ŷ<t>.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline.neural.cells import RecurrentStack
from pipeline.neural.losses import linear_cross_entropy


@dataclass(frozen=True)
class RNNConfig:
    vocab_size: int
    cell: str = "rnn"            # rnn | gru | lstm
    impl: str = "textbook"       # textbook | fused
    num_layers: int = 1
    bidirectional: bool = False
    embed_dim: int = 128
    hidden_dim: int = 128
    dropout: float = 0.1
    tie_weights: bool = False    # output W_y shares the embedding matrix (needs embed == hidden)
    compile: bool = False        # textbook cells: torch.compile the time loop

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
        self.dropout = nn.Dropout(config.dropout)
        stack = (config.cell, config.impl, config.embed_dim, config.hidden_dim, config.num_layers,
                 config.dropout, config.compile)
        self.forward_stack = RecurrentStack(*stack)
        self.backward_stack = RecurrentStack(*stack) if config.bidirectional else None
        directions = 2 if config.bidirectional else 1
        self.output = nn.Linear(directions * config.hidden_dim, config.vocab_size)  # W_y, b_y
        if config.tie_weights:  # Press & Wolf 2017; Inan et al. 2017
            if directions * config.hidden_dim != config.embed_dim:
                raise ValueError(f"tie_weights needs embed_dim == {directions} x hidden_dim, got "
                                 f"{config.embed_dim} and {config.hidden_dim}; set tie_weights: false "
                                 "or make the sizes match")
            self.output.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """Causal. tokens (B, T) -> logits (B, T, V) for the next token, final state (L, B, S):
        S = H, or 2H ([h; c]) for an LSTM."""
        features, state = self.features(tokens, state)
        return self.output(features), state

    def features(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """Causal, up to the output layer: (dropout(h<t>) (B, T, H), final state (L, B, S))."""
        if self.backward_stack is not None:
            raise ValueError("a bidirectional model fills blanks; call cloze(), not forward()")
        x = self.dropout(self.embedding(tokens))           # (B, T, E)
        hidden, state = self.forward_stack(x, state)        # (B, T, H)
        return self.dropout(hidden), state

    def loss_sum(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed NLL of the targets (IGNORE skipped) under softmax(W_y features + b_y)."""
        return linear_cross_entropy(features, self.output.weight, self.output.bias, targets)

    def cloze(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Bidirectional. tokens (B, L): `<s> x1..xT </s>` padded on the right; lengths (B,).
        Returns logits (B, L-1, V): entry i-1 predicts tokens[:, i] for i = 1..L-1."""
        return self.output(self.cloze_features(tokens, lengths))

    def cloze_features(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """cloze() up to the output layer: dropout([h→<i-1>, h←<i+1>]) (B, L-1, 2H)."""
        if self.backward_stack is None:
            raise ValueError("cloze() needs a bidirectional model")
        batch, length = tokens.shape
        x = self.dropout(self.embedding(tokens))                           # (B, L, E)
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
        return self.dropout(torch.cat([left, right], dim=-1))

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
