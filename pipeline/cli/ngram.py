"""`lmpipe ngram build` and `lmpipe ngram query`: KenLM's lmplz and query on plain text files
(or `-`, standard input). The text is read by the rules `prepare` uses for the same tokenizer
(pipeline/text/tokenizers.py); by default KenLM's: one sentence per line, tokens separated by
space and tab, nothing normalised, a blank line an empty sentence, and unlike lmplz a literal
`<unk>` accepted as the unknown word."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from pipeline.text import corpus
from pipeline.text.tokenizers import split_lines
from pipeline.text.vocab import BOS_ID, EOS_ID, encode_text

LMPLZ_FALLBACK = (0.5, 1.0, 1.5)


def build(args) -> None:
    """`lmpipe ngram build`. Raises ValueError naming the argument (TEXT, --order, --arpa,
    --discount-fallback) before any work, or DiscountError (add --discount-fallback)."""
    from pipeline.ngram import arpa, counting, kneser_ney
    def progress(message):
        print(f"lmpipe ngram: {message}", file=sys.stderr, flush=True)
    fallback = _fallback(args.discount_fallback)
    folder = Path(args.arpa).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"--arpa {args.arpa!r}: the folder {str(folder)!r} does not exist; create it "
                         "or write the model elsewhere")
    if Path(args.arpa).is_dir():
        raise ValueError(f"--arpa {args.arpa!r} is a folder; give the path of the file to write "
                         "(e.g. model.arpa)")
    text = _text(args)
    try:
        tokens, stream, _ = encode_text(text, None, args.tokenizer, args.lowercase, args.unk)
    except ValueError as error:   # a reserved <s> or </s> in the text
        raise ValueError(f"{_name(args)}: {error}") from None
    if np.all((stream == BOS_ID) | (stream == EOS_ID)):
        raise ValueError(f"{_name(args)}: {'is empty' if not text else 'holds only blank lines'}; "
                         "give text to count, one sentence per line")
    longest = int(np.diff(np.flatnonzero(stream == BOS_ID), append=len(stream)).max())
    if args.order > longest:
        raise ValueError(f"--order {args.order}: the longest sentence of {_name(args)} has "
                         f"{longest} tokens with <s> and </s>; use --order {longest} or less, "
                         "or more text")
    progress(f"{int(np.sum(stream == BOS_ID)):,} sentences, {len(tokens):,} words in the vocabulary")
    size = len(stream)
    try:
        counts = counting.count(stream, len(tokens), args.order, progress)
        del stream
        model = kneser_ney.estimate(counts, fallback=fallback, progress=progress,
                                    remedy="use a lower --order or more text, or add "
                                           "--discount-fallback (discounts 0.5 1 1.5, as lmplz's "
                                           "--discount_fallback)")
    except MemoryError:   # counting holds every n-gram of every order in memory
        raise ValueError(f"{_name(args)}: out of memory counting its {args.order}-grams "
                         f"({size:,} tokens with <s> and </s>); use less "
                         "text or a lower --order, or a machine with more memory") from None
    counts = counting.NgramCounts(counts.vocab_size, counts.keys, [], [], [])  # writing needs keys only
    try:
        with open(args.arpa, "wb") as handle:
            arpa.write(model, counts, tokens, handle)
    except OSError as error:
        raise ValueError(f"--arpa {args.arpa!r}: cannot write it ({error.strerror or error})") from None
    progress(f"wrote {args.arpa}")


def _fallback(values: list[float] | None) -> tuple[float, float, float] | None:
    """The discounts D1, D2, D3+ of --discount-fallback as lmplz reads them (lmplz_main.cc,
    ParseDiscountFallback): none given is 0.5 1 1.5; one to three values, the last repeated;
    Dk within [0, k]. Raises ValueError naming --discount-fallback."""
    if values is None:
        return None
    if not values:
        return LMPLZ_FALLBACK
    if len(values) > 3:
        raise ValueError(f"--discount-fallback {' '.join(map(str, values))}: give at most three "
                         "discounts, for adjusted counts 1, 2 and 3+ (e.g. 0.5 1 1.5)")
    padded = tuple(values[min(k, len(values) - 1)] for k in range(3))
    for k, value in enumerate(padded, start=1):
        if not 0 <= value <= k:   # also refuses nan
            raise ValueError(f"--discount-fallback: the discount for count {k}{'+' if k == 3 else ''} "
                             f"is {value:g}, outside [0, {k}] (e.g. 0.5 1 1.5)")
    return padded


def _name(args) -> str:
    """How messages name the TEXT argument."""
    return "TEXT - (standard input)" if args.text == "-" else f"TEXT {args.text!r}"


def _text(args) -> str:
    """The text file (or `-`) of the command, each line ended by `\n`, read as `prepare` reads a
    file (a `.gz` decompressed, UTF-8). Raises ValueError naming the TEXT argument when it is
    not a readable file of UTF-8 text; a binary file (a NUL byte) is refused as soon as the
    chunk holding it is read (/dev/zero, a disk image), not after reading all of it."""
    path = Path(args.text)
    if args.text != "-" and (path.is_dir() or not path.exists()):
        what = "is a directory" if path.is_dir() else "no such file"
        raise ValueError(f"{_name(args)}: {what}; give a text file (one sentence per line) or "
                         "- for standard input")
    gz = args.text != "-" and path.suffix == ".gz"
    try:
        if gz:
            _check_decompressed(path, _name(args))
        if args.text == "-":
            data = _read_checked(sys.stdin.buffer, _name(args))
        else:
            with open(path, "rb") as handle:
                data = _read_checked(handle, _name(args), gz)
    except OSError as error:
        raise ValueError(f"{_name(args)}: cannot read it ({error.strerror or error})") from None
    text = corpus.decode(data, _name(args), gz=gz, policy="")
    return "".join(line + "\n" for line in split_lines(text))


CHUNK = 1 << 20   # bytes read at a time, each checked for a NUL byte as it comes in


def _read_checked(handle, name: str, gz: bool = False) -> bytes:
    """All bytes of `handle`, read CHUNK at a time; the first chunk with a NUL byte stops the
    reading with corpus.decode's refusal of a binary file (not for `gz`: compressed bytes hold
    NULs; _check_decompressed checks what they hold)."""
    parts, size = [], 0
    while chunk := handle.read(CHUNK):
        parts.append(chunk)
        nul = -1 if gz else chunk.find(b"\x00")
        if nul >= 0:   # what was read so far, up to the NUL: corpus.decode's own message
            corpus.decode(b"".join(parts[:-1]) + chunk[:nul + 1], name, policy="")
            raise ValueError(f"{name}: looks like a binary file (a NUL byte at byte offset "
                             f"{size + nul}); give UTF-8 text, one sentence per line")
        size += len(chunk)
    return b"".join(parts)


def _check_decompressed(path: Path, name: str) -> None:
    """Decompress the gzip file at `path` CHUNK at a time (memory bounded), refusing what is
    not gzip or holds a NUL byte (a compressed /dev/zero) as soon as it shows."""
    import gzip
    import zlib
    offset = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                nul = chunk.find(b"\x00")
                if nul >= 0:
                    raise ValueError(f"{name}: looks like a binary file (a NUL byte at byte "
                                     f"offset of the decompressed text {offset + nul}); give "
                                     "UTF-8 text, one sentence per line")
                offset += len(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:   # as corpus.decode words it
        raise ValueError(f"{name}: not a valid gzip file ({error})") from None
    except OSError as error:
        if error.errno is not None:
            raise
        raise ValueError(f"{name}: not a valid gzip file ({error})") from None


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


def _peek_model(path: str) -> None:
    """Refuse a MODEL that is binary by its first 64 KiB (decompressed when gzip), as arpa.read
    words it, before arpa.read reads all of it (/dev/zero, a KenLM binary of gigabytes).
    Raises arpa.ArpaError; anything else (missing, a folder, bad gzip) is arpa.read's to say.
    A pipe (`<(zcat m.arpa.gz)`) is left alone: what the peek read would be gone for arpa.read."""
    import gzip
    import stat
    import zlib

    from pipeline.ngram import arpa
    try:
        if stat.S_ISFIFO(os.stat(path).st_mode) or stat.S_ISSOCK(os.stat(path).st_mode):
            return
        with open(path, "rb") as handle:
            head = handle.read(65536)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as stream:
                head = stream.read(65536)
    except (OSError, EOFError, zlib.error):
        return
    if head.startswith(b"mmap lm "):
        raise arpa.ArpaError(f"{path}: a KenLM binary model (build_binary), not ARPA text; give "
                             "the .arpa file it was built from")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise arpa.ArpaError(f"{path}: a binary file (a NUL byte at byte offset {nul}), not ARPA "
                             "text; give an ARPA file (.arpa or .arpa.gz)")


def query(args) -> None:
    """`lmpipe ngram query`. Raises ValueError naming MODEL (missing, not ARPA, refused by
    KenLM's rules) or TEXT (missing, empty, not UTF-8)."""
    from pipeline.ngram import arpa
    text = _text(args)   # first: a model of gigabytes takes a while to read
    if not text:
        raise ValueError(f"{_name(args)}: is empty; give text to score, one sentence per line")
    notes = []
    try:
        _peek_model(args.model)   # arpa.read reads the whole file before looking at it
        model, tokens = arpa.read(args.model, notes, args.orphans)
    except arpa.ArpaError as error:   # "<path>: <what is wrong>"
        raise ValueError(f"MODEL {error}") from None
    for note in notes:
        print(f"lmpipe ngram: {note}", file=sys.stderr, flush=True)
    try:
        summary = query_summary(model, tokens, text, args.tokenizer, args.lowercase, args.unk)
    except ValueError as error:   # a reserved <s> or </s> in the text
        raise ValueError(f"{_name(args)}: {error}") from None
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
