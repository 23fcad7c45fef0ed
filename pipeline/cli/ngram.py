"""`lmpipe ngram build` and `lmpipe ngram query`: KenLM's lmplz and query on plain text files
(one sentence per line, whitespace-separated tokens, no normalisation)."""

from __future__ import annotations

import json
import sys

import numpy as np

from pipeline.text import corpus
from pipeline.text.vocab import encode_text


def build(args) -> None:
    from pipeline.ngram import arpa, counting, kneser_ney
    def progress(message):
        print(f"lmpipe ngram: {message}", file=sys.stderr, flush=True)
    tokens, stream, _ = encode_text("\n".join(corpus.read_lines(args.text)))
    progress(f"{int(np.sum(stream == 1)):,} sentences, {len(tokens):,} words in the vocabulary")
    counts = counting.count(stream, len(tokens), args.order, progress)
    del stream
    model = kneser_ney.estimate(counts, fallback=args.discount_fallback, progress=progress)
    counts = counting.NgramCounts(counts.vocab_size, counts.keys, [], [], [])  # writing needs keys only
    with open(args.arpa, "wb") as handle:
        arpa.write(model, counts, tokens, handle)
    progress(f"wrote {args.arpa}")


def query_summary(model, tokens: tuple[str, ...], text: str) -> dict:
    """KenLM `query -v summary` figures, plus per-sentence log10 totals and OOV counts."""
    _, stream, oov = encode_text(text, tokens)
    logp = model.log10_probs(stream)
    sentence = np.cumsum(stream == 1)[stream != 1] - 1
    num_sentences = int(np.sum(stream == 1))
    total, count = float(logp.sum()), len(logp)
    inside = float(logp[~oov].sum())
    return {"perplexity_including_oovs": 10 ** (-total / count),
            "perplexity_excluding_oovs": 10 ** (-inside / max(count - int(oov.sum()), 1)),
            "oovs": int(oov.sum()), "tokens": count,
            "sentence_totals": np.bincount(sentence, logp, minlength=num_sentences).tolist(),
            "sentence_oovs": np.bincount(sentence, oov, minlength=num_sentences).astype(int).tolist()}


def query(args) -> None:
    from pipeline.ngram import arpa
    model, tokens = arpa.read(args.model)
    summary = query_summary(model, tokens, "\n".join(corpus.read_lines(args.text)))
    if args.json:
        if not args.per_sentence:
            summary = {k: v for k, v in summary.items() if not k.startswith("sentence_")}
        print(json.dumps(summary))
        return
    if args.per_sentence:
        for total, oovs in zip(summary["sentence_totals"], summary["sentence_oovs"], strict=True):
            print(f"Total: {total:.6f} OOV: {oovs}")
    print(f"Perplexity including OOVs:\t{summary['perplexity_including_oovs']}")
    print(f"Perplexity excluding OOVs:\t{summary['perplexity_excluding_oovs']}")
    print(f"OOVs:\t{summary['oovs']}")
    print(f"Tokens:\t{summary['tokens']}")
