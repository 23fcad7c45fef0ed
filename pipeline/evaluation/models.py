"""Trained models behind one interface (LanguageModel, causal or cloze), loaded by weights file
name (LOADERS). In: models/KIND. Out: sentence ln p (nats), next-word distributions, per-token
scores. Errors: StateError naming a damaged or mismatched model file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline import files
from pipeline.evaluation import scoring
from pipeline.neural.batches import pad_sentences
from pipeline.neural.rnn import RNNLM
from pipeline.ngram.backoff import NGramLM
from pipeline.text.tokenizers import tokenize
from pipeline.text.vocab import BOS_ID, EOS_ID, Vocab


def retrain_hint(folder: Path) -> str:
    """The fix for a damaged file of models/KIND: DVC's cached copy, or its stage rerun."""
    stage = "ngram" if folder.name == "ngram" else f"train@{folder.name}"
    return (f"restore it with `dvc checkout -f {folder}` (DVC's cached copy) or rebuild it with "
            f"`dvc repro -f -s {stage}`")


def _recurrent(path: Path, vocab_size: int) -> RecurrentModel:
    checkpoint = files.load_checkpoint(path, ("config", "state_dict"))
    model = _built(RNNLM.from_checkpoint, checkpoint, path, "model", RuntimeError)
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    damage = bad and f"holds NaN or infinite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
    _refuse(path, damage, "trained", model.config.vocab_size, vocab_size)
    return RecurrentModel(model, config=checkpoint["config"])


def _ngram(path: Path, vocab_size: int) -> NgramModel:
    arrays = files.load_arrays(path, ("vocab_size", "discounts"), mapped=True)
    model = _built(NGramLM.from_arrays, arrays, path, "n-gram model")
    _refuse(path, model.problem(), "estimated", model.vocab_size, vocab_size)
    return NgramModel(model)


LOADERS = {"model.npz": _ngram, "model.pt": _recurrent}   # weights file name -> loader


def load_model(path: Path, vocab_size: int) -> LanguageModel:
    """The model of a weights file named in LOADERS or of the folder holding one; StateError when
    it is missing, damaged (NaN weights, NGramLM.problem) or built on another vocabulary size."""
    if path.name not in LOADERS:
        path = next(path / name for name in LOADERS if (path / name).is_file())
    model = LOADERS[path.name](path, vocab_size)
    model.path = path
    return model


def _built(build, data, path: Path, what: str, *also: type[Exception]):
    try:
        return build(data)
    except (TypeError, KeyError, ValueError, *also) as error:
        raise files.damaged(path, f"damaged, not an lmpipe {what} ({type(error).__name__})") from None


def _refuse(path: Path, damage: str | None, built: str, size: int, vocab_size: int) -> None:
    if damage:
        raise files.damaged(path, f"damaged, {damage}", fix=retrain_hint(path.parent))
    if size != vocab_size:
        raise files.StateError(f"{path}: {built} on a {size:,}-token vocabulary but data/prepared "
                               f"has {vocab_size:,}; `dvc checkout` restores both, `dvc repro` "
                               "retrains what is out of date")


def codec(vocab: Vocab, corpus) -> tuple:
    """(encode(text) -> ids, unknown(text) -> its out-of-vocabulary words) as prepare tokenizes."""
    def tokens(text: str) -> list[str]:
        return tokenize(text, corpus.tokenizer, corpus.lowercase, corpus.unk)
    return (lambda text: vocab.encode(tokens(text))), (lambda text: vocab.unknown(tokens(text)))


class LanguageModel:
    """A trained model: sentence_logprobs(sentences) (S,): Σ ln p over every non-`<s>` token of
    each `<s> .. </s>` sentence; next_distributions(prefixes, state) ((B, V) p(w | prefix),
    p(`<s>`) = 0, state); fill_logprobs; stream_scores (scoring.Scores), nbytes(), params()."""

    kind = "causal"
    path: Path | None = None   # the weights file load_model read

    def fill_logprobs(self, fills: list[tuple[np.ndarray, int, np.ndarray]],
                      open_end: bool = False) -> list[np.ndarray]:
        """Per (sentence, position, candidates): a score per candidate for sentence[position].
        Causal: ln p of the completed sentence (open_end: ln p(candidate | left context) only).
        Cloze: ln p(candidate | both sides)."""
        if open_end:
            probs = self.next_distributions([sentence[:position] for sentence, position, _ in fills])[0]
            return [np.log(np.maximum(row[c], 1e-300)) for row, (_, _, c) in zip(probs, fills, strict=True)]
        filled = [np.repeat(sentence[None], len(c), axis=0) for sentence, _, c in fills]
        for rows, (_, position, candidates) in zip(filled, fills, strict=True):
            rows[:, position] = candidates
        logp = self.sentence_logprobs([row for rows in filled for row in rows])
        return np.split(logp, np.cumsum([len(c) for _, _, c in fills])[:-1])


class NgramModel(LanguageModel):
    artifact = "ngram"   # the weights' name among a logged model's artifacts (tracking/serving.py)

    def __init__(self, lm: NGramLM):
        self.lm = lm

    def stream_scores(self, stream):
        return scoring.ngram_scores(self.lm, stream)

    def nbytes(self) -> int:
        return self.lm.nbytes()

    def params(self) -> dict:
        return {"ngram.order": self.lm.order, "ngram.estimator": "interpolated modified Kneser-Ney",
                "ngram.discounts": json.dumps(self.lm.discounts)}

    def sentence_logprobs(self, sentences):
        stream = np.concatenate(sentences).astype(np.int64)
        logp = scoring.ngram_logprobs(self.lm, stream)
        owner = np.repeat(np.arange(len(sentences)), [len(s) - 1 for s in sentences])
        return np.bincount(owner, logp, minlength=len(sentences))

    def next_distributions(self, prefixes, state=None):
        stream = np.concatenate([[*prefix, EOS_ID] for prefix in prefixes]).astype(np.int64)
        after = np.cumsum([len(prefix) for prefix in prefixes]) - 1   # each prefix's EOS_ID
        contexts = scoring.ngram_contexts(stream, self.lm.order)[after]
        return scoring.ngram_distributions(self.lm, contexts), None


class RecurrentModel(LanguageModel):
    artifact = "checkpoint"
    batch_size = 256   # sentences, or candidates, per forward pass

    def __init__(self, model: RNNLM, config: dict | None = None):
        self.model = model.eval()
        self.kind = "cloze" if model.config.bidirectional else "causal"
        self.config = config   # the checkpoint's, as trained

    def stream_scores(self, stream):
        return (scoring.cloze_scores if self.kind == "cloze" else scoring.causal_scores)(self.model, stream)

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def params(self) -> dict:
        return {"model": self.config}

    @torch.no_grad()
    def sentence_logprobs(self, sentences):
        if self.kind == "cloze":   # pseudo-log-likelihood: each token given both sides
            return np.array([scoring.cloze_scores(self.model, s).logprobs.sum() for s in sentences])
        out = []
        for start in range(0, len(sentences), self.batch_size):
            tokens, lengths = pad_sentences(sentences[start:start + self.batch_size])
            features = self.model.features_and_activations(tokens[:, :-1])[0]
            logp = scoring.logp_and_rank(self.model, features.flatten(0, 1), tokens[:, 1:].flatten(),
                                         ranked=False)[0].view(features.shape[:2])
            inside = torch.arange(1, tokens.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
            out.append((logp * inside).sum(1).double().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def fill_logprobs(self, fills, open_end=False):
        """Rows (fill, candidate) batched by length; the softmax only where it is needed: cloze,
        at the blank; causal, at and after the blank, and before it once per fill (its first row)."""
        if open_end:   # prefixes of any length: one at a time
            return [LanguageModel.fill_logprobs(self, [fill], True)[0] for fill in fills]
        rows = [(i, c) for i, (_, _, candidates) in enumerate(fills) for c in range(len(candidates))]
        if self.kind == "cloze":   # every candidate of a fill shares its logits
            rows = [(i, 0) for i in range(len(fills))]
        out, order = [np.zeros(len(c)) for _, _, c in fills], np.argsort([len(fills[i][0]) for i, _ in rows])
        for start in range(0, len(rows), self.batch_size):
            batch = order[start:start + self.batch_size]
            fill, which = (np.array([rows[r][k] for r in batch], dtype=np.int64) for k in (0, 1))
            sentences = [fills[i][0].copy() for i in fill]
            for sentence, i, c in zip(sentences, fill, which, strict=True):
                sentence[fills[i][1]] = fills[i][2][c]
            tokens, lengths = pad_sentences(sentences)
            blank = torch.as_tensor([fills[i][1] - 1 for i in fill]).unsqueeze(1)   # its output index
            if self.kind == "cloze":
                features = self.model.cloze_features_and_activations(tokens, lengths)[0]
                at_blank = features[torch.arange(len(fill)), blank[:, 0]]   # (B, F)
                logp = torch.log_softmax(self.model.logits(at_blank), -1).double().numpy()
                for row, i in enumerate(fill):
                    out[i] = logp[row, fills[i][2]]
                continue
            features = self.model.features_and_activations(tokens[:, :-1])[0]   # (B, T-1, F)
            at = torch.arange(tokens.shape[1] - 1).unsqueeze(0)
            need = (at < lengths.unsqueeze(1) - 1) & ((at >= blank) | torch.as_tensor(which == 0).unsqueeze(1))
            logp = scoring.logp_and_rank(self.model, features[need], tokens[:, 1:][need], ranked=False)[0]
            row = torch.arange(len(fill)).unsqueeze(1).expand_as(need)[need]
            after = (at >= blank).expand_as(need)[need]
            sums = torch.zeros(len(fill), dtype=torch.float64).index_add_(0, row, logp.double() * after)
            before = torch.zeros(len(fill), dtype=torch.float64).index_add_(0, row, logp.double() * ~after)
            for r, (i, c) in enumerate(zip(fill, which, strict=True)):
                out[i][c] += float(sums[r])
                if c == 0:   # the prefix, shared by every candidate of the fill
                    out[i] += float(before[r])
        return out

    @torch.no_grad()
    def next_distributions(self, prefixes, state=None):
        """Prefixes of one length; given the state (L, B, H or 2H) after each prefix but its last
        token, reads only that token."""
        if state is not None:
            tokens = torch.as_tensor(np.array([p[-1] for p in prefixes], dtype=np.int64)).unsqueeze(1)
            logits, state = self.model(tokens, state)
        else:
            logits, state = self.model(torch.as_tensor(np.stack(prefixes).astype(np.int64)))
        probs = torch.softmax(logits[:, -1].float(), -1).double().numpy()
        probs[:, BOS_ID] = 0.0   # never a candidate (not renormalised: ln p as trained)
        return probs, state
