"""A trained lmpipe model as an MLflow pyfunc (docs/mlflow.md#serving): predict(sentences) -> each
one's ln P (nats; bidirectional: pseudo-log-likelihood), tokenized as the corpus was. Artifacts:
weights (models.LOADERS), "vocab" (vocab.json), "corpus" (corpus.json: tokenizer settings)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc

from pipeline.evaluation.models import LOADERS, load_model
from pipeline.neural.batches import sentences_of
from pipeline.text.tokenizers import tokenize
from pipeline.text.vocab import load_vocab


class SentenceScorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        artifacts = context.artifacts
        self.vocab = load_vocab(Path(artifacts["vocab"]).parent)
        self.corpus = json.loads(Path(artifacts["corpus"]).read_text())
        weights = next(Path(p) for p in artifacts.values() if Path(p).name in LOADERS)
        self.model = load_model(weights, len(self.vocab))

    def predict(self, context, model_input: list[str], params=None) -> list[float]:
        if hasattr(model_input, "iloc"):     # a DataFrame: its first column
            model_input = model_input.iloc[:, 0].tolist()
        c = self.corpus
        tokenized = [tokenize(str(s), c["tokenizer"], c["lowercase"], c["unk"]) for s in model_input]
        sentences = sentences_of(self.vocab.stream(tokenized))
        return [float(v) for v in self.model.sentence_logprobs(sentences)]
