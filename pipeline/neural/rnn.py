"""The recurrent language model: embedding -> recurrent stack(s) -> softmax (or Grave et al.
2017's adaptive softmax). In: a ModelConfig (models.<name> + vocab_size). Causal: y<t> predicts
x<t+1> from x<1..t>. Bidirectional (cloze): y<t> = softmax(W_y [h->(t-1), h<-(t+1)] + b_y)
predicts x<t> from separate forward and backward stacks: no path leads from x<t> to y<t>."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError, model_validator
from torch import nn

from pipeline.config import ModelParams, refuse
from pipeline.errors import ParamsError
from pipeline.neural.batches import IGNORE
from pipeline.neural.cells import RecurrentStack
from pipeline.neural.losses import linear_cross_entropy
from pipeline.neural.regularization import LockedDropout, embedding_dropout


class ModelConfig(ModelParams):
    """What RNNLM takes: a model's params and the vocabulary size."""
    vocab_size: int = Field(ge=2)

    @model_validator(mode="after")
    def _vocabulary(self) -> ModelConfig:
        cutoffs, adaptive = list(self.adaptive_cutoffs), self.output_layer == "adaptive"
        if adaptive and cutoffs[-1] >= self.vocab_size - 1:
            raise refuse(f"{{where}}.adaptive_cutoffs={cutoffs}: use word ids below the vocabulary "
                         f"size - 1 ({self.vocab_size - 1}), or softmax")
        if adaptive and self.features // self.adaptive_div_value ** len(cutoffs) < 1:   # last cluster
            raise refuse("{where}.adaptive_div_value leaves the last cluster < 1 dimension")
        return self

    def checkpoint(self) -> dict:
        """The config a model.pt holds: vocab_size first, then the architecture (no seed)."""
        return {"vocab_size": self.vocab_size, **self.model_dump(exclude={"seed", "vocab_size"})}

    @classmethod
    def of(cls, name: str, spec: ModelParams, vocab_size: int) -> ModelConfig:
        """models.<name> on `vocab_size` words; ParamsError naming the key if a rule refuses."""
        try:
            return cls(**spec.model_dump(), vocab_size=vocab_size)
        except ValidationError as error:
            message = error.errors(include_url=False)[0]["ctx"]["message"]
            raise ParamsError(f"params.yaml: {message.replace('{where}', f'models.{name}')}") from None


class RNNLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        if config.tie_weights:   # as pytorch/examples: tied N(0, 1) rows make the logits explode
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        rate, given, locked = config.dropout, config.dropout_input, config.locked_dropout
        self.dropout_input = LockedDropout(rate if given is None else given, locked)
        self.dropout = LockedDropout(rate, locked)            # on the outputs
        between = rate if config.dropout_hidden is None else config.dropout_hidden
        stack = (config.cell, config.impl, config.embed_dim, config.hidden_dim, config.num_layers,
                 between, config.compile, config.weight_drop, locked, config.top_dim)
        self.forward_stack = RecurrentStack(*stack)
        self.backward_stack = RecurrentStack(*stack) if config.bidirectional else None
        self.adaptive = config.output_layer == "adaptive"
        if self.adaptive:
            self.output = nn.AdaptiveLogSoftmaxWithLoss(config.features, config.vocab_size, list(
                config.adaptive_cutoffs), div_value=config.adaptive_div_value)
            return
        self.output = nn.Linear(config.features, config.vocab_size)  # W_y, b_y
        if config.tie_weights:  # Press & Wolf 2017; Inan et al. 2017
            self.output.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """Causal. tokens (B, T) -> logits (B, T, V) of the next token (see logits), state (L, B, S)."""
        features, _, state = self.features_and_activations(tokens, state)
        return self.logits(features), state

    def logits(self, features: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Output layer: features (..., F) -> logits (..., V) (log-probabilities when adaptive);
        given `out` (N, V) for features (N, F), without grad, the logits are written there."""
        if self.adaptive:
            return self.output.log_prob(features.flatten(0, -2)).view(*features.shape[:-1], -1)
        if out is not None:   # the product F.linear makes, into a reused buffer: no page faults
            return torch.addmm(self.output.bias, features, self.output.weight.t(), out=out)
        return self.output(features)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> dropped embeddings (B, T, E): embedding dropout, then input dropout."""
        weight = embedding_dropout(self.embedding.weight, self.config.embedding_dropout, self.training)
        return self.dropout_input(F.embedding(tokens, weight))

    def features_and_activations(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """Causal, up to the output layer: (dropout(h<t>), h<t>) (B, T, H), final state."""
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
        return self.logits(self.cloze_features_and_activations(tokens, lengths)[0])

    def cloze_features_and_activations(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """cloze() up to the output layer: (dropout(J), J), J = [h→<i-1>, h←<i+1>] (B, L-1, 2H)."""
        if self.backward_stack is None:
            raise ValueError("cloze() needs a bidirectional model")
        x = self.embed(tokens)                                             # (B, L, E)
        forward_states, _ = self.forward_stack(x)                          # (B, L, H)
        position = torch.arange(tokens.shape[1], device=tokens.device)
        lengths = lengths.to(tokens.device).unsqueeze(1)
        inside = position < lengths                                        # (B, L)
        # reverse each sentence within its own length; padding stays at the end
        index = torch.where(inside, lengths - 1 - position, position).unsqueeze(-1)
        backward, _ = self.backward_stack(torch.gather(x, 1, index.expand_as(x)))
        backward = torch.gather(backward, 1, index.expand_as(backward)) * inside.unsqueeze(-1)
        # target i uses h→ at i-1 and h← at i+1 (zero past the sentence's end): (B, L-1, 2H)
        joined = torch.cat([forward_states[:, :-1], F.pad(backward[:, 2:], (0, 0, 0, 1))], dim=-1)
        return self.dropout(joined), joined

    def checkpoint(self) -> dict:
        """Checkpoint as data: config + state_dict (load with torch.load(weights_only=True))."""
        return {"config": self.config.checkpoint(), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> RNNLM:
        model = cls(ModelConfig(**{**checkpoint["config"], "compile": False}))   # scores eagerly
        model.load_state_dict(checkpoint["state_dict"])
        return model
