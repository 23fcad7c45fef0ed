"""ARPA text checked as KenLM's lm/read_arpa.cc reads it, with numpy and Arrow, no Python object per line.
In: a path. Out: bytes, declared counts, section bounds, (log10 p, word spans, log10 backoff, line
starts) chunks. Errors: ArpaError naming the file and line (SpacingError: see canonical)."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PROBABILITY_RULE = ("an ARPA log10 probability is a finite number <= 0 (-99 for \"never\"; -inf "
                    "only for <s>, which is never predicted), else every score using it is wrong")
PADDING = 1024                          # zero bytes after the text, for the sliding windows
UNK_SPELLINGS = (b"<unk>", b"<UNK>")   # KenLM's lm/vocab.cc maps both to the unknown word


class ArpaError(ValueError):
    """Not a readable ARPA model."""


class SpacingError(ArpaError):
    """A line not in the canonical spacing (KenLM may still read it)."""


def fixed(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """data[starts:ends] as a (rows, width) uint8 matrix, 0-padded; `data` ends with `width` zeros."""
    matrix = np.lib.stride_tricks.sliding_window_view(data, width)[starts]
    matrix[np.arange(width) >= (ends - starts)[:, None]] = 0
    return matrix


def line_of(raw: bytes | np.ndarray, offset: int) -> int:
    """1-based line number of byte `offset` (for messages only)."""
    data = raw if isinstance(raw, bytes) else raw[:offset].tobytes()
    return data.count(b"\n", 0, offset) + 1


def _text_of(data: np.ndarray | bytes, start: int) -> str:
    return re.split(rb"[\n\0]", bytes(data[start:start + 200]))[0].decode("utf-8", "replace")


def entries(data: np.ndarray, lo: int, hi: int, n: int, order: int, path, chunk: int = 1_000_000):
    """(log10 p, word spans (rows, n, 2), log10 backoff, line starts) of the nonblank lines of the
    section data[lo:hi], `chunk` lines at a time. Rules: lm/read_arpa.hh (ReadNGram, ReadBackoff)."""
    section = data[lo:hi]
    ends = np.flatnonzero(section == 10) + lo
    starts = np.concatenate([[lo], ends[:-1] + 1])
    nonblank = ends > starts
    starts, ends = starts[nonblank], ends[nonblank]
    tabs = np.append(np.flatnonzero(section == 9) + lo, hi)
    spaces = np.flatnonzero(section == 32) + lo
    for at in range(0, max(len(starts), 1), chunk):   # one chunk, empty, for an empty section
        yield _entries(data, starts[at:at + chunk], ends[at:at + chunk], tabs, spaces, n, order, path)


def _entries(data, s, e, tabs, spaces, n: int, order: int, path):
    """`entries` of the lines starting at s and ending at e (tabs, spaces: the section's)."""
    def refuse(rows, cause, error=ArpaError, lines=s):   # rows: a mask over `lines`
        line = int(lines[np.flatnonzero(rows)[0]])
        raise error(f"{path}: line {line_of(data, line)}: {cause} ({_text_of(data, line)!r})")

    def refuse_spacing(rows, cause, lines=s):
        refuse(rows, cause, SpacingError, lines)
    first = np.searchsorted(tabs, s)   # tabs ends with one after every line
    tab1 = tabs[first]
    if np.any(tab1 >= e):
        refuse_spacing(tab1 >= e, f"a line of the {n}-grams section has no tab after its probability")
    has_backoff = tabs[first + 1] < e
    tab2 = np.where(has_backoff, tabs[first + 1], e)
    prob = _checked_floats(data, s, tab1, refuse_spacing, "probability")
    if np.any(prob > 0):
        refuse(prob > 0, "positive log10 probability (KenLM refuses these: an IRSTLM bug)")
    if np.any(np.isnan(prob)):
        refuse(np.isnan(prob), f"the log10 probability is NaN; {PROBABILITY_RULE}")
    backoff = np.zeros(len(s))
    backoff[has_backoff] = _checked_floats(data, tab2[has_backoff] + 1, e[has_backoff],
                                           partial(refuse_spacing, lines=s[has_backoff]), "backoff")
    if not np.all(np.isfinite(backoff)):
        refuse(~np.isfinite(backoff), "the backoff is not a finite number")
    if n == order and np.any(backoff != 0):
        refuse(backoff != 0, f"a backoff on a {n}-gram, the highest order (KenLM refuses it)")
    lo_space, hi_space = np.searchsorted(spaces, tab1), np.searchsorted(spaces, tab2)
    if np.any(hi_space - lo_space != n - 1):
        refuse_spacing(hi_space - lo_space != n - 1, f"a line of the {n}-grams section does not have "
                       f"{n} words separated by single spaces")
    inner = spaces[lo_space[:, None] + np.arange(n - 1)] if n > 1 else np.zeros((len(s), 0), int)
    word_starts = np.concatenate([tab1[:, None] + 1, inner + 1], axis=1)
    word_ends = np.concatenate([inner, tab2[:, None]], axis=1)
    if np.any(word_ends <= word_starts):
        refuse_spacing((word_ends <= word_starts).any(axis=1), "an empty word")
    never = np.isneginf(prob)
    if n == 1 and never.any():   # <s> is context only: lmplz writes it -99, others -inf
        never &= fixed(data, word_starts[:, 0], word_ends[:, 0], 8).view("S8").ravel() != b"<s>"
    if never.any():
        refuse(never, f"the log10 probability is -inf; {PROBABILITY_RULE}")
    return prob, np.stack([word_starts, word_ends], axis=2), backoff, s


def _checked_floats(data, starts, ends, refuse, what) -> np.ndarray:
    """The numbers of data[starts:ends] (spans in file order), any length, read by Arrow as strtod
    reads them (no spaces, no `_`; inf and nan words too, judged by value); refuses the first it cannot."""
    bounds = np.empty(2 * len(starts) + 1, dtype=np.int64)   # row 2i: data[starts[i]:ends[i]]
    bounds[:-1:2], bounds[1::2], bounds[-1] = starts, ends, ends[-1] if len(ends) else 0
    rows = pa.Array.from_buffers(pa.large_binary(), 2 * len(starts), [None, pa.py_buffer(bounds),
                                                                       pa.py_buffer(data)])
    text = rows.take(np.arange(0, len(rows), 2))
    try:
        return pc.cast(text, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        lo, hi = 0, len(text)   # halve the span holding a number Arrow cannot read
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if not _readable(text[lo:mid]) else (mid, hi)
        refuse(np.arange(len(text)) == lo, f"the {what} is not a number")


def _readable(text) -> bool:
    try:
        pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        return False
    return True


def load(path) -> bytes:
    """The text of an ARPA file (gzip by its magic bytes), \\r\\n read as \\n (KenLM's FilePiece),
    ending with a newline; refuses bad gzip, an empty file, and by its first 64 KiB a binary one."""
    with open(path, "rb") as handle:   # OSError (missing, a folder) names the file itself
        stream = gzip.GzipFile(fileobj=handle) if handle.peek(2)[:2] == b"\x1f\x8b" else handle
        try:
            head = stream.read(65536)   # checked before the rest is read: /dev/zero never ends
            binary = ("a KenLM binary model; give the .arpa file it was built from"   # lm/binary_format.cc
                      if head.startswith(b"mmap lm ") else f"a binary file (a NUL byte at offset "
                      f"{head.find(0)}); give an ARPA file" if 0 in head else None)
            if binary:
                raise ArpaError(f"{path}: {binary}")
            raw = head + stream.read()
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise ArpaError(f"{path}: not a valid gzip file ({error})") from None
    if not raw or raw.isspace():   # (strip would copy a model of gigabytes)
        raise ArpaError(f"{path}: the file is empty; give an ARPA file")
    raw = raw.replace(b"\r\n", b"\n")
    return raw if raw.endswith(b"\n") else raw + b"\n"


def header(raw: bytes, path) -> tuple[list[int], int]:
    r"""(declared counts, offset of the first section), checked as KenLM's ReadARPACounts."""
    lines = io.BytesIO(raw)   # line by line: a header of a few lines, a file of gigabytes
    number, line = 1, lines.readline()
    while line and (not line.strip() or line.startswith(b"#")):   # before \data\: blank, # comments
        number, line = number + 1, lines.readline()
    if line.rstrip(b" \t\n") != b"\\data\\":
        text = line[:60].rstrip(b"\n").decode("utf-8", "replace")
        binary = "\ufffd" in text or any(ch < " " and ch not in "\t\r" for ch in text)
        cause = "is binary or not UTF-8" if binary else f"{text!r} is not \\data\\ (comments start #)"
        raise ArpaError(f"{path}: line {number}: {cause}; give an ARPA file")
    declared, position, line = [], lines.tell(), lines.readline()
    while not declared or line.strip() and not line.startswith(b"\\1-grams:"):   # at least ngram 1=
        number += 1
        try:   # int() as Python reads it (spaces, a sign, _); a wrong field count fails too
            n, count = map(int, line[len(b"ngram "):].split(b"=") if line.startswith(b"ngram ") else [])
        except ValueError:
            n = count = -1
        if n != len(declared) + 1 or count < 0:
            raise ArpaError(f"{path}: line {number}: {_text_of(line, 0)!r} is not `ngram {len(declared) + 1}=COUNT` (ngram 1=, 2=, ...)")
        declared.append(count)
        position += len(line)
        line = lines.readline()
    return declared, position


_FIELD, _LEAD = rb"([^ \t\n]+)", rb"(?m)^[ \t\v\f]*"


def canonical(section: bytes, n: int) -> bytes:
    """An order-n section respaced `p<TAB>w1 .. wn[<TAB>backoff]` where KenLM reads other runs of
    spaces and tabs (ReadDelimited(kARPASpaces); before p, SkipSpaces); lines that do not fit are
    left for the parser."""
    section = re.sub(rb"(?m)^[ \t\v\f]+$", b"", section)
    first = rb"\t[ \t]*" if n == 1 else rb"[ \t]+"
    words = first + _FIELD + b"".join([rb"[ \t]+" + _FIELD] * (n - 1))
    numbered = "\t" + " ".join(f"\\g<{i}>" for i in range(2, n + 2))
    with_backoff = re.compile(_LEAD + _FIELD + words + rb"\t[ \t]*" + _FIELD + rb"$")
    section = with_backoff.sub(("\\g<1>" + numbered + f"\t\\g<{n + 2}>").encode(), section)
    without = re.compile(_LEAD + _FIELD + words + rb"$")
    return without.sub(("\\g<1>" + numbered).encode(), section)


def sections(raw: bytes, position: int, order: int, path) -> list[tuple[int, int]]:
    """(start, end) byte range of each order's entries; checks the `\\N-grams:` lines and `\\end\\`."""
    bounds = []
    for n in range(1, order + 2):
        marker = f"\\{n}-grams:".encode() if n <= order else b"\\end\\"
        at = raw.find(b"\n" + marker + b"\n", position - 1)
        if at < 0:
            what = "\\end\\" if n > order else f"the {n}-grams section (a line \\{n}-grams:)"
            raise ArpaError(f"{path}: {what} is missing; the header declares {order} orders")
        at += 1
        if n > 1:
            bounds.append((position, at))
        elif raw[position:at].strip():
            raise ArpaError(f"{path}: line {line_of(raw, position)}: unexpected text before \\1-grams:")
        position = at + len(marker) + 1
    if raw[position:].strip():
        raise ArpaError(f"{path}: line {line_of(raw, position)}: text after \\end\\ ({_text_of(raw[position:].lstrip(), 0)!r})")
    return bounds
