"""The n-gram build of the ngram stage and `lmpipe ngram build` (KenLM's lm/builder). In: a token
stream (TokenFile or Column), orders, memory in bytes. Out: counts and Kneser-Ney model, in memory
or out of core in a spill folder; ARPA text. Errors: ValueError (order), DiscountError, SpillError."""

from __future__ import annotations

import resource
from contextlib import contextmanager, nullcontext

import numpy as np
import pyarrow as pa

from pipeline import out_of_core
from pipeline.ngram import arpa, counting, external, kneser_ney
from pipeline.text.vocab import check_ids, sentence_bounds


def orders(source: external.TokenFile, vocab_size: int, order: int, memory_orders: int) -> int:
    """N of the orders 1..N the ngram stage counts, max(order, 3, memory_orders capped at the
    longest sentence); checks the stream's ids (check_ids) and the order (check_order)."""
    longest = 0
    for lo, hi in external.sentence_blocks(source, 1 << 22):
        block = source[lo:hi]
        check_ids(block, vocab_size, source.path, source.path.parent)
        starts, ends = sentence_bounds(block)
        longest = max(longest, int(np.max(ends - starts + 1, initial=0)))   # with <s> and </s>
    check_order(order, longest, "ngram.order={}", "the train split")
    return max(order, 3, min(memory_orders, longest))   # memory_orders, a measurement: capped


def check_order(order: int, longest: int, option: str, text: str) -> None:
    """Refuse an order above the longest sentence; `option` spells the order ({} its value)."""
    if order > longest:
        raise ValueError(f"{option.format(order)}: {text} has {longest} tokens at most (with <s>, </s>); use {option.format(longest)} or less")


def working(memory: int | None, default: int = 0) -> int:
    """Bytes for the build's tables within `memory` (lmplz's -S, the whole process): it less what
    this process holds already (its peak RSS: the interpreter, numpy, pyarrow), at least a quarter
    of it; None: `default`. Arrow allocates from the system from here on (mimalloc keeps ~70 MiB
    of the ARPA's slices)."""
    pa.set_memory_pool(pa.system_memory_pool())
    if memory is None:
        return default
    held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10   # Linux: KiB
    return max(memory - held, memory // 4)


@contextmanager
def build(source: external.TokenFile | out_of_core.Column, vocab_size: int, order: int, counted: int, memory: int,
          temp_dir: str | None, fallback, remedy: str, progress, budget: str):
    """A context of (counts of orders 1..counted, Kneser-Ney of `order`, spill folder) of `source`:
    in memory (spill None) when counting fits `memory` bytes, else spilled; the same tables."""
    if source.length * external.IN_MEMORY_BYTES * max(counted, 2) <= memory:
        counts = counting.count(source[:], vocab_size, counted, progress)
        yield counts, kneser_ney.estimate(counts.truncated(order), fallback, progress, remedy), None
        return
    with nullcontext(source.spill) if source.spill else out_of_core.Spill(temp_dir) as spill:
        progress(f"counting out of core in {memory >> 20:,} MiB ({budget}), spilling to {spill.path}")
        counts = external.count(source, vocab_size, counted, memory, spill, progress)
        yield counts, kneser_ney.estimate(counts.truncated(order), fallback, progress, remedy, memory,
                                          spill), spill


def write_arpa(model, counts, tokens: tuple[str, ...], handle, memory: int) -> None:
    """`model` as ARPA text into `handle`, formatted in chunks that fit `memory` bytes."""
    row = model.order * (max(len(t.encode()) for t in tokens) + 1) + 26   # bytes of an ARPA line
    arpa.write(model, counts, tokens, handle, chunk=int(np.clip(memory // (16 * row), 4096, 250_000)))
