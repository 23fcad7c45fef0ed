"""`lmpipe ngram build` and `lmpipe ngram query`: KenLM's lmplz and query on a text file (or `-`)
read as `prepare` reads the tokenizer's text (default KenLM's: one sentence per line, nothing
normalised, `<unk>` the unknown word). Errors: ValueError naming TEXT, MODEL or the option."""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from pipeline import errors, files, out_of_core
from pipeline.ngram import arpa, builder
from pipeline.ngram.kneser_ney import LMPLZ_FALLBACK
from pipeline.text import corpus
from pipeline.text.vocab import BOS, BOS_ID, EOS, SPECIALS, encode_text

LEAST_WORKING = 32 << 20   # no -S: bytes for the tables at least (the KJV's 3.8 MB of text: this)


def build(args) -> None:
    """`lmpipe ngram build`: TEXT's model as ARPA text at --arpa, within -S; ValueError naming the argument."""
    def progress(message):
        print(f"lmpipe ngram: {message}", file=sys.stderr, flush=True)
    fallback = _fallback(args.discount_fallback)
    folder = Path(args.arpa).resolve().parent
    problem = (f"the folder {str(folder)!r} does not exist" if not folder.is_dir() else
               "is a folder; give the file to write" if Path(args.arpa).is_dir() else None)
    if problem:
        raise ValueError(f"--arpa {args.arpa!r}: {problem}")
    remedy = ("use a lower --order or more text, or add --discount-fallback (discounts 0.5 1 1.5, "
              "as lmplz's --discount_fallback)")
    args.memory = _working(args)
    try:
        with out_of_core.Spill(args.temp_prefix) as spill:
            tokens, stream, longest, sentences = _encode(args, spill)
            progress(f"{sentences:,} sentences, {len(tokens):,} words in the vocabulary")
            builder.check_order(args.order, longest, "--order {}", _name(args))
            with builder.build(stream, len(tokens), args.order, args.order, args.memory, None,
                               fallback, remedy, progress, "-S less the interpreter") as (counts, model, _):
                _write(args, model, counts, tokens)
    except MemoryError:
        raise ValueError(f"{_name(args)}: out of memory for {args.order}-grams; lower -S or --order") from None
    except out_of_core.SpillError as error:
        raise ValueError(f"-T/--temp-prefix {error}") from None
    progress(f"wrote {args.arpa}")


def _write(args, model, counts, tokens: tuple[str, ...]) -> None:
    """The ARPA text at --arpa: a FIFO or /dev/stdout written in place, a file renamed in when whole."""
    target = Path(args.arpa)
    in_place = target.exists() and not target.is_file()
    try:
        with (nullcontext(target) if in_place else files.atomic_file(target)) as path, \
                open(path, "wb") as handle:
            builder.write_arpa(model, counts, tokens, handle, args.memory)
    except out_of_core.SpillError:
        raise
    except OSError as error:
        raise ValueError(f"--arpa {args.arpa!r}: cannot write it ({error.strerror or error})") from None


def _encode(args, spill) -> tuple[tuple[str, ...], out_of_core.Column, int, int]:
    """(vocabulary, token stream in `spill`, longest sentence in tokens with <s> and </s>,
    sentences) of TEXT, encode_text block by block, ids renumbered in order of first use."""
    column = spill.file("tokens", np.int32)
    index = {token: i for i, token in enumerate(SPECIALS)}
    sentences = longest = words = 0
    empty = True
    for block in corpus.read_blocks(args.text, int(np.clip(args.memory // 32, 1 << 16, 1 << 26)),
                                    _name(args)):
        empty = False
        local, ids, _ = encode_text(block, None, args.tokenizer, args.lowercase, args.unk,
                                    markers=SPECIALS if args.skip_symbols else (BOS, EOS))
        if args.skip_symbols:   # lmplz's --skip_symbols: <s>, </s> and <unk> read as spaces
            ids = ids[ids >= 0]
        elif (ids < 0).any():   # one sentence a line: the line is the sentences before it
            first = int(np.argmax(ids < 0))
            raise ValueError(f"{_name(args)}: line {sentences + np.count_nonzero(ids[:first] == BOS_ID):,} "
                             f"holds {local[~ids[first]]!r}{' (lowercased)' * args.lowercase}, a sentence "
                             "marker; remove it, or add --skip-symbols to read it as a space (lmplz's --skip_symbols)")
        ids = np.fromiter((index.setdefault(t, len(index)) for t in local), np.int32, len(local))[ids]
        heads = np.flatnonzero(ids == BOS_ID)
        sentences += len(heads)
        words += len(ids) - 2 * len(heads)
        longest = max(longest, int(np.diff(heads, append=len(ids)).max(initial=0)))
        column.append(ids)
    if not words:
        raise ValueError(f"{_name(args)}: {'is empty' if empty else 'holds only blank lines'}; give text")
    return tuple(index), column, longest, sentences


def _working(args) -> int:
    """Bytes for the build's tables (builder.working): -S less this process; no -S: twice TEXT's
    bytes (a .gz's 8x), at least LEAST_WORKING, so memory follows the n-grams (standard input:
    80% of RAM, as -S)."""
    if args.memory is not None or args.text == "-" or not os.path.isfile(args.text):   # read_blocks names a missing file
        return builder.working(files.parse_size("80%") if args.memory is None else args.memory)
    return builder.working(None, max(os.path.getsize(args.text) * (8 if args.text.endswith(".gz") else 2),
                                     LEAST_WORKING))


def _fallback(values: list[float] | None) -> tuple[float, float, float] | None:
    """--discount-fallback as lmplz reads it (lmplz_main.cc, ParseDiscountFallback): none given
    is 0.5 1 1.5; one to three values, the last repeated; Dk within [0, k]."""
    if not values:   # absent: None; given bare: lmplz's default
        return None if values is None else LMPLZ_FALLBACK
    padded = tuple(values[min(k, len(values) - 1)] for k in range(3))
    wrong = [f"give at most three discounts, not {len(values)}"] if len(values) > 3 else [
        f"the discount for count {k}{'+' if k == 3 else ''} is {value:g}, outside [0, {k}]"
        for k, value in enumerate(padded, start=1) if not 0 <= value <= k]   # also refuses nan
    if wrong:
        raise ValueError(f"--discount-fallback {' '.join(map(str, values))}: {wrong[0]} (e.g. 0.5 1 1.5)")
    return padded


def _name(args) -> str:
    """How messages name the TEXT argument."""
    return "TEXT - (standard input)" if args.text == "-" else f"TEXT {args.text!r}"


def query_summary(model, tokens: tuple[str, ...], text: str, tokenizer: str = "whitespace",
                  lowercase: bool = False, unk: str = "<unk>") -> dict:
    """KenLM `query -v summary` figures, plus per-sentence log10 totals and OOV counts; the text is
    read as KenLM's query reads it (words also separated at \\v and \\f; `<s>`, `</s>`: words)."""
    _, stream, oov = encode_text(text, tokens, tokenizer, lowercase, unk, query=True)
    heads = stream == BOS_ID   # a line's own <s>; markers inside it are ~id, scored as words
    logp = model.log10_probs(np.where(stream < 0, ~stream, stream), np.flatnonzero(heads))
    sentence = np.cumsum(heads)[~heads] - 1
    num_sentences = int(np.sum(heads))
    total, count = float(logp.sum()), len(logp)
    inside = float(logp[~oov].sum())
    return {"perplexity_including_oovs": 10 ** (-total / count),
            "perplexity_excluding_oovs": 10 ** (-inside / max(count - int(oov.sum()), 1)),
            "oovs": int(oov.sum()), "tokens": count,
            "sentence_totals": np.bincount(sentence, logp, minlength=num_sentences).tolist(),
            "sentence_oovs": np.bincount(sentence, oov, minlength=num_sentences).astype(int).tolist()}


def query(args) -> None:
    """`lmpipe ngram query`: KenLM query's summary (or --json) of TEXT under the ARPA MODEL."""
    text = "".join(corpus.read_blocks(args.text, 1 << 20, _name(args)))   # first: a big model reads slowly
    if not text:
        raise ValueError(f"{_name(args)}: is empty; give text to score")
    notes = []
    try:
        model, tokens = arpa.read(args.model, notes, args.orphans)
    except (arpa.ArpaError, OSError) as error:   # "<path>: <what is wrong>"
        raise ValueError(f"MODEL {errors.one_line(error)[0]}") from None
    for note in notes:
        print(f"lmpipe ngram: {note}", file=sys.stderr, flush=True)
    try:
        summary = query_summary(model, tokens, text, args.tokenizer, args.lowercase, args.unk)
    except ValueError as error:   # a reserved <s> or </s> in the text
        raise ValueError(f"{_name(args)}: {error}") from None
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if args.per_sentence or not k.startswith("sentence_")}))
        return
    if args.per_sentence:
        for total, oovs in zip(summary["sentence_totals"], summary["sentence_oovs"], strict=True):
            print(f"Total: {total:.6f} OOV: {oovs}")
    print(f"Perplexity including OOVs:\t{summary['perplexity_including_oovs']}")
    print(f"Perplexity excluding OOVs:\t{summary['perplexity_excluding_oovs']}")
    print(f"OOVs:\t{summary['oovs']}")
    print(f"Tokens:\t{summary['tokens']}")
