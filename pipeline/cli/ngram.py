"""`lmpipe ngram build` and `lmpipe ngram query`: KenLM's lmplz and query on plain text files
(or `-`, standard input). The text is read by the rules `prepare` uses for the same tokenizer
(pipeline/text/tokenizers.py); by default KenLM's: one sentence per line, tokens separated by
space and tab, nothing normalised, a blank line an empty sentence, and unlike lmplz a literal
`<unk>` accepted as the unknown word."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.text import corpus
from pipeline.text.vocab import encode_text


def build(args) -> None:
    from pipeline.ngram import arpa, counting, kneser_ney
    def progress(message):
        print(f"lmpipe ngram: {message}", file=sys.stderr, flush=True)
    folder = Path(args.arpa).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"--arpa {args.arpa!r}: the folder {str(folder)!r} does not exist; create it "
                         "or write the model elsewhere")
    tokens, stream, _ = encode_text(_text(args), None, args.tokenizer, args.lowercase, args.unk)
    progress(f"{int(np.sum(stream == 1)):,} sentences, {len(tokens):,} words in the vocabulary")
    counts = counting.count(stream, len(tokens), args.order, progress)
    del stream
    model = kneser_ney.estimate(counts, fallback=args.discount_fallback, progress=progress,
                                remedy="use a lower --order or more text, or add --discount-fallback "
                                       "(discounts 0.5 1 1.5, as lmplz's --discount_fallback)")
    counts = counting.NgramCounts(counts.vocab_size, counts.keys, [], [], [])  # writing needs keys only
    try:
        with open(args.arpa, "wb") as handle:
            arpa.write(model, counts, tokens, handle)
    except OSError as error:
        raise ValueError(f"--arpa {args.arpa!r}: cannot write it ({error.strerror})") from None
    progress(f"wrote {args.arpa}")


def _text(args) -> str:
    """The text file (or `-`) of the command, each line ended by `\n`. Raises ValueError naming
    the TEXT argument when it is not a readable file."""
    if args.text != "-" and not Path(args.text).is_file():
        what = "is a directory" if Path(args.text).is_dir() else "no such file"
        raise ValueError(f"TEXT {args.text!r}: {what}; give a text file (one sentence per line) or "
                         "- for standard input")
    return "".join(line + "\n" for line in corpus.read_lines(args.text))


def query_summary(model, tokens: tuple[str, ...], text: str, tokenizer: str = "whitespace",
                  lowercase: bool = False, unk: str = "<unk>") -> dict:
    """KenLM `query -v summary` figures, plus per-sentence log10 totals and OOV counts; the text is
    read as KenLM's query reads it (words also separated at \\v and \\f)."""
    _, stream, oov = encode_text(text, tokens, tokenizer, lowercase, unk, query=True)
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
    notes = []
    model, tokens = arpa.read(args.model, notes, args.orphans)
    for note in notes:
        print(f"lmpipe ngram: {note}", file=sys.stderr, flush=True)
    summary = query_summary(model, tokens, _text(args), args.tokenizer, args.lowercase, args.unk)
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
