"""ARPA writing. In: an `NGramLM` and its vocabulary. Out: the standard backoff-model text format
that KenLM and SRILM read:

    \\data\\
    ngram 1=<count>
    ...
    \\1-grams:
    <log10 p>\t<w1>\t<log10 backoff>      (backoff omitted at the highest order)
    ...
    \\end\\

`read` loads any such file (ours, KenLM's, SRILM's) back into an `NGramLM` for scoring, the
vocabulary reordered so that `<unk>`, `<s>`, `</s>` take ids 0, 1, 2.

Like lmplz, `<s>` is written with log10 p = 0 (it is never predicted) and words absent from the
training text (e.g. `<unk>`) are written with their interpolated probability. Order-1 entries
are written for every vocabulary word.
"""

from __future__ import annotations

import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import numpy as np

from pipeline.ngram.counting import NgramCounts
from pipeline.ngram.kneser_ney import NGramLM
from pipeline.text.vocab import BOS_ID, EOS_ID, SPECIALS, UNK_ID

PROBABILITY_RULE = ("an ARPA log10 probability is a finite number <= 0 (-99 for \"never\"; -inf "
                    "only for <s>, which is never predicted), else every score using it is wrong")


class ArpaError(ValueError):
    """The file is not a readable ARPA model; the message names the file and the line."""


class _SpacingError(ArpaError):
    """A line is not in the canonical spacing; it may still be one KenLM reads (see _canonical)."""


def _digit_table(width: int, leading_zeros: bool) -> np.ndarray:
    """(10**width, width) uint8: the decimal text of 0..10**width-1; without leading zeros those
    bytes are 0 ("no byte"), but the units digit always shows."""
    numbers = np.arange(10**width)
    powers = 10 ** np.arange(width - 1, -1, -1)
    table = (ord("0") + (numbers[:, None] // powers) % 10).astype(np.uint8)
    if not leading_zeros:
        table[(numbers[:, None] < powers) & (powers > 1)] = 0
    return table


_INTEGER, _THREE, _FOUR = _digit_table(3, False), _digit_table(3, True), _digit_table(4, True)


def _number_bytes(values: np.ndarray) -> np.ndarray:
    """Fixed-point text of log10 values with 7 decimals, as a (M, 12) uint8 matrix where 0 means
    "no byte" (dropped later): sign, up to 3 integer digits, '.', 7 decimals by table lookup.
    Formatting millions of floats one by one is what makes ARPA writing slow. -inf and anything
    below -999 is written as -99, the ARPA convention for "never"."""
    values = np.where(np.isfinite(values) & (values > -999.0), values, -99.0)
    scaled = np.rint(np.abs(values) * 1e7).astype(np.int64)
    integer, fraction = np.divmod(scaled, 10**7)
    out = np.empty((len(values), 12), dtype=np.uint8)
    out[:, 0] = np.where((values < 0) & (scaled > 0), ord("-"), 0)
    out[:, 1:4] = _INTEGER[integer]
    out[:, 4] = ord(".")
    out[:, 5:8] = _THREE[fraction // 10000]
    out[:, 8:12] = _FOUR[fraction % 10000]
    return out


def _word_bytes(tokens: tuple[str, ...]) -> np.ndarray:
    """(V, longest) uint8 matrix of UTF-8 words, 0-padded."""
    encoded = [t.encode("utf-8") for t in tokens]
    matrix = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.uint8)
    for i, word in enumerate(encoded):
        matrix[i, : len(word)] = np.frombuffer(word, dtype=np.uint8)
    return matrix


def _column(byte: str, rows: int) -> np.ndarray:
    return np.full((rows, 1), ord(byte), dtype=np.uint8)


def _lines(model: NGramLM, counts: NgramCounts, words: np.ndarray, n: int, start: int,
           stop: int) -> bytes:
    """ARPA lines of the order-n n-grams start..stop, as bytes."""
    ids = counts.words(n, start, stop)
    rows = len(ids)
    prob = model.log10_prob[n - 1][start:stop]
    if n == 1 and start <= 1 < stop:
        prob = prob.copy()
        prob[1 - start] = 0.0  # <s>: context only, written as lmplz does
    parts = [_number_bytes(prob), _column("\t", rows), words[ids[:, 0]]]
    for column in range(1, n):
        parts += [_column(" ", rows), words[ids[:, column]]]
    if n < model.order:
        parts += [_column("\t", rows), _number_bytes(model.log10_backoff[n - 1][start:stop])]
    parts.append(_column("\n", rows))
    lines = np.concatenate(parts, axis=1)
    return lines[lines != 0].tobytes()


def write(model: NGramLM, counts: NgramCounts, tokens: tuple[str, ...], out: BinaryIO,
          chunk: int = 250_000, threads: int = 2) -> None:
    """Write `model` (estimated from `counts`) as ARPA text (UTF-8) to a binary file, in the
    counts' sorted order. Lines are assembled as byte matrices, `chunk` n-grams at a time, their
    0 bytes dropped; numpy releases the GIL, so `threads` chunks are formatted at once, and at
    most 2 x `threads` chunks wait to be written (memory stays bounded). The model and counts may
    be in memory (`NGramLM`, `NgramCounts`) or on disk (external.DiskModel, DiskCounts): what is
    used is len() and [a:b] slices of their columns, and counts.words(n, a, b)."""
    words = _word_bytes(tokens)
    header = "\\data\\\n" + "".join(f"ngram {n}={len(k)}\n" for n, k in enumerate(model.keys, 1))
    out.write(header.encode())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for n in range(1, model.order + 1):
            out.write(f"\n\\{n}-grams:\n".encode())
            size = len(model.keys[n - 1])
            pending = deque()
            for start in range(0, size, chunk):
                if len(pending) >= 2 * threads:
                    out.write(pending.popleft().result())
                pending.append(pool.submit(_lines, model, counts, words, n, start, start + chunk))
            while pending:
                out.write(pending.popleft().result())
    out.write(b"\n\\end\\\n")


def _fixed(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The byte spans data[starts:ends] as a (rows, width) uint8 matrix, 0-padded: rows of a
    sliding-window view, so no index matrix is built. `data` must end with `width` zero bytes."""
    matrix = np.lib.stride_tricks.sliding_window_view(data, width)[starts]
    matrix[np.arange(width) >= (ends - starts)[:, None]] = 0
    return matrix


_PADDING = 1024


def _floats(data, starts, ends) -> np.ndarray:
    return _fixed(data, starts, ends, 24).view("S24").ravel().astype(np.float64)


def _hash(matrix: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of a 0-padded byte matrix whose width is a multiple of 8."""
    words = matrix.view(np.uint64)
    value = np.full(len(words), 0xCBF29CE484222325, dtype=np.uint64)
    for column in range(words.shape[1]):
        value ^= words[:, column]
        value *= np.uint64(0x100000001B3)
        value ^= value >> np.uint64(29)
    return value


def _line_of(raw: bytes | np.ndarray, offset: int) -> int:
    """1-based line number of byte `offset` (for messages only)."""
    data = raw if isinstance(raw, bytes) else raw[:offset].tobytes()
    return data.count(b"\n", 0, offset) + 1


def _text_of(data: np.ndarray, start: int) -> str:
    end = start
    while end < len(data) and data[end] not in (10, 0) and end - start < 200:
        end += 1
    return data[start:end].tobytes().decode("utf-8", "replace")


def _parse(data: np.ndarray, lo: int, hi: int, n: int, order: int, path, chunk: int = 1_000_000):
    """Yield (log10 p, word spans (rows, n, 2), log10 backoff, line starts) of the lines in
    data[lo:hi] (one section), in chunks, without a Python object per line. Positions index
    `data`. Blank lines are skipped (KenLM's ReadFloat skips whitespace too)."""
    section = data[lo:hi]
    ends = np.flatnonzero(section == 10) + lo
    starts = np.concatenate([[lo], ends[:-1] + 1])
    nonblank = ends > starts
    starts, ends = starts[nonblank], ends[nonblank]
    tabs = np.flatnonzero(section == 9) + lo
    spaces = np.flatnonzero(section == 32) + lo

    def refuse(rows, cause, error=ArpaError):
        line = int(starts_chunk[np.flatnonzero(rows)[0]])
        raise error(f"{path}: line {_line_of(data, line)}: {cause} ({_text_of(data, line)!r})")

    def refuse_spacing(rows, cause):
        refuse(rows, cause, _SpacingError)
    for lo in range(0, len(starts), chunk):
        s, e = starts[lo:lo + chunk], ends[lo:lo + chunk]
        starts_chunk = s
        first = np.searchsorted(tabs, s)
        no_tab = (first >= len(tabs)) | (tabs[np.minimum(first, len(tabs) - 1)] >= e)
        if no_tab.any():
            refuse_spacing(no_tab, f"a line of the {n}-grams section has no tab after its probability")
        tab1 = tabs[first]
        nxt = np.minimum(first + 1, len(tabs) - 1)
        has_backoff = (first + 1 < len(tabs)) & (tabs[nxt] < e)
        tab2 = np.where(has_backoff, tabs[nxt], e)
        prob = _checked_floats(data, s, tab1, refuse_spacing, "probability")
        if np.any(prob > 0):
            refuse(prob > 0, "positive log10 probability (KenLM refuses these: an IRSTLM bug)")
        if np.any(np.isnan(prob)):
            refuse(np.isnan(prob), f"the log10 probability is NaN; {PROBABILITY_RULE}")
        backoff = np.zeros(len(s))
        if has_backoff.any():
            def refuse_backoff(rows, cause, where=has_backoff):
                refuse_spacing(_spread(rows, where), cause)
            backoff[has_backoff] = _checked_floats(data, tab2[has_backoff] + 1, e[has_backoff],
                                                   refuse_backoff, "backoff")
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
            first = word_starts[:, 0]
            never &= ~((word_ends[:, 0] - first == 3) & (data[first] == ord("<"))
                       & (data[first + 1] == ord("s")) & (data[first + 2] == ord(">")))
        if never.any():
            refuse(never, f"the log10 probability is -inf; {PROBABILITY_RULE}")
        yield prob, np.stack([word_starts, word_ends], axis=2), backoff, s


def _spread(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(len(mask), dtype=bool)
    out[np.flatnonzero(mask)[rows]] = True
    return out


def _checked_floats(data, starts, ends, refuse, what) -> np.ndarray:
    try:
        return _floats(data, starts, ends)
    except ValueError:
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            try:
                float(data[a:b].tobytes())
            except ValueError:
                rows = np.zeros(len(starts), dtype=bool)
                rows[i] = True
                refuse(rows, f"the {what} is not a number")
        raise


_UNK_SPELLINGS = (b"<unk>", b"<UNK>")   # KenLM's lm/vocab.cc maps both to the unknown word


def _load(path) -> bytes:
    import gzip
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except IsADirectoryError:
        raise ArpaError(f"{path}: is a directory; give an ARPA file (.arpa or .arpa.gz)") from None
    except FileNotFoundError:
        raise ArpaError(f"{path}: no such file; give an ARPA file (.arpa or .arpa.gz)") from None
    except OSError as error:
        raise ArpaError(f"{path}: cannot read it ({error.strerror})") from None
    if raw[:2] == b"\x1f\x8b":      # gzip by its magic bytes, whatever the name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ArpaError(f"{path}: not a valid gzip file ({error})") from None
    if not raw or raw.isspace():   # (strip would copy a model of gigabytes)
        raise ArpaError(f"{path}: the file is empty; give an ARPA file (.arpa or .arpa.gz)")
    if raw.startswith(b"mmap lm "):   # KenLM's binary format (lm/binary_format.cc, kMagicBeforeVersion)
        raise ArpaError(f"{path}: a KenLM binary model (build_binary), not ARPA text; give the "
                        ".arpa file it was built from")
    nul = raw.find(b"\x00", 0, 65536)
    if nul >= 0:
        raise ArpaError(f"{path}: a binary file (a NUL byte at byte offset {nul}), not ARPA text; "
                        "give an ARPA file (.arpa or .arpa.gz)")
    raw = raw.replace(b"\r\n", b"\n")   # KenLM reads Windows line endings (FilePiece strips \r)
    return raw if raw.endswith(b"\n") else raw + b"\n"


def _header(raw: bytes, path) -> tuple[list[int], int]:
    r"""(declared counts, offset of the first section header), checked as KenLM's
    ReadARPACounts: before \data\ only blank lines and lines starting with #; then one
    `ngram N=COUNT` line per order, N consecutive from 1, until a blank line."""
    position, number = 0, 0
    while True:
        end = raw.find(b"\n", position)
        if end < 0:
            raise ArpaError(f"{path}: not an ARPA file (no \\data\\ line)")
        line, number = raw[position:end], number + 1
        position = end + 1
        if line.strip() == b"" or line.startswith(b"#"):
            continue
        if line.rstrip(b" \t") != b"\\data\\":
            text = line[:60].decode("utf-8", "replace")
            if "\ufffd" in text or any(ch < " " and ch not in "\t\r" for ch in text):
                raise ArpaError(f"{path}: not an ARPA file (line {number}, before any \\data\\ "
                                "line, is binary or not UTF-8); give an ARPA file (.arpa or .arpa.gz)")
            raise ArpaError(f"{path}: line {number}: {text!r} before \\data\\; an ARPA file starts "
                            "with \\data\\ (comments before it must start with #, as KenLM requires)")
        break
    declared = []
    while True:
        end = raw.find(b"\n", position)
        line, number = raw[position:end if end >= 0 else len(raw)], number + 1
        if line.strip() == b"" or line.startswith(b"\\1-grams:"):
            break
        position = end + 1
        fields = line[len(b"ngram "):].split(b"=") if line.startswith(b"ngram ") else []
        try:
            n, count = int(fields[0]), int(fields[1])
        except (IndexError, ValueError):
            raise ArpaError(f"{path}: line {number}: {line[:60].decode('utf-8', 'replace')!r} is "
                            "not a count line `ngram N=COUNT`") from None
        if len(fields) != 2 or n != len(declared) + 1 or count < 0:
            raise ArpaError(f"{path}: line {number}: count lines must be `ngram 1=..`, `ngram 2=..`, "
                            "... in order, with counts >= 0")
        declared.append(count)
        if end < 0:
            break
    if not declared:
        raise ArpaError(f"{path}: line {number}: \\data\\ is followed by no `ngram N=COUNT` line")
    return declared, position


_FIELD = rb"([^ \t\n]+)"


def _canonical(section: bytes, n: int) -> bytes:
    """The entries of an order-n section with KenLM's spacing made canonical: KenLM reads words
    separated by any run of spaces and tabs (ReadDelimited(kARPASpaces)), a 1-gram's probability
    followed by a tab, and a backoff after a tab (ReadBackoff); written here as `p<TAB>w1 .. wn`
    and `<TAB>backoff`. Lines that do not fit (trailing spaces, a wrong number of fields) are left
    as they are, for the parser to refuse with their line number. Two regular-expression passes
    in C, no Python call per line."""
    first = rb"\t[ \t]*" if n == 1 else rb"[ \t]+"
    words = first + _FIELD + b"".join([rb"[ \t]+" + _FIELD] * (n - 1))
    numbered = "\t" + " ".join(f"\\g<{i}>" for i in range(2, n + 2))
    with_backoff = re.compile(rb"(?m)^" + _FIELD + words + rb"\t[ \t]*" + _FIELD + rb"$")
    section = with_backoff.sub(("\\g<1>" + numbered + f"\t\\g<{n + 2}>").encode(), section)
    without = re.compile(rb"(?m)^" + _FIELD + words + rb"$")
    return without.sub(("\\g<1>" + numbered).encode(), section)


def _sections(raw: bytes, position: int, order: int, path) -> list[tuple[int, int]]:
    """(start, end) byte range of each order's entries; checks the `\\N-grams:` header lines
    (blank lines allowed around them) and `\\end\\`, after which only blank lines may follow.
    `raw` ends with a newline and `position` is the start of a line."""
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
            raise ArpaError(f"{path}: line {_line_of(raw, position)}: unexpected text before \\1-grams:")
        position = at + len(marker) + 1
    if raw[position:].strip():
        raise ArpaError(f"{path}: line {_line_of(raw, position)}: text after \\end\\ "
                        f"({raw[position:position + 60].strip().decode('utf-8', 'replace')!r})")
    return bounds


def _rows_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each row of `rows` (R, k), whether it is a row of `table` (T, k); int64 ids."""
    if len(table) == 0:
        return np.zeros(len(rows), dtype=bool)
    view = np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))
    return np.isin(np.ascontiguousarray(rows).view(view).ravel(),
                   np.ascontiguousarray(table).view(view).ravel())


def _insert_blank_contexts(grams: dict, order: int) -> int:
    """SRILM's reading of a pruned file: every missing context (first n-1 words of an n-gram) is
    added as an (n-1)-gram with backoff 0 (log10 1) and its probability to be filled in (NaN),
    highest order first so that the added contexts get their own contexts too. Returns how many
    were added. `grams[n]` = [ids (R, n), log10 p, log10 backoff, line starts]."""
    added = 0
    for n in range(order, 2, -1):
        contexts = np.unique(grams[n][0][:, :n - 1], axis=0)
        missing = contexts[~_rows_in(contexts, grams[n - 1][0])]
        if len(missing):
            added += len(missing)
            ids, prob, backoff, lines = grams[n - 1]
            grams[n - 1] = [np.concatenate([ids, missing]), np.concatenate([prob, np.full(len(missing), np.nan)]),
                            np.concatenate([backoff, np.zeros(len(missing))]),
                            np.concatenate([lines, np.full(len(missing), -1)])]
    return added


def _fill_blank_probabilities(lower: NGramLM, ids: np.ndarray, prob: np.ndarray) -> None:
    """The probability of each added context w1..wk (NaN in `prob`, rows of `ids` in key order):
    what SRILM computes for p(wk | w1..wk-1) without it, the backoff of w1..wk-1 (0 when that is
    an added context too) plus log10 p(wk | w2..wk-1) from `lower` (orders 1..k-1)."""
    rows = np.flatnonzero(np.isnan(prob))
    if not len(rows):
        return
    k = ids.shape[1]
    tails = ids[rows, 1:]                       # w2..wk (then </s>), after a fresh <s>, by orders < k
    inner = (tails == BOS_ID).any(axis=1)       # <s> inside a context: nothing to back off to
    stream = np.concatenate([np.full((len(rows), 1), BOS_ID), np.where(tails == BOS_ID, UNK_ID, tails),
                             np.full((len(rows), 1), EOS_ID)], axis=1).ravel()
    last = lower.log10_probs(stream).reshape(len(rows), k)[:, k - 2]
    back = lower.log10_backoff[k - 2][lower.gram_ids(ids[rows, :-1])]
    prob[rows] = np.where(inner, -99.0, last + back)


def read(path, notes: list[str] | None = None,
         orphans: str = "refuse") -> tuple[NGramLM, tuple[str, ...]]:
    """Load an ARPA file (plain or gzip) written by any toolkit. Returns the model and its
    vocabulary (`<unk>`, `<s>`, `</s>` first). Parsing works on the bytes with numpy (floats and
    words as fixed-width byte strings), so a model of millions of n-grams loads without a Python
    object per n-gram. Raises ArpaError (one line: the file, the line number, the cause) for
    every file KenLM refuses; `notes` receives what KenLM would only warn about. The rules, each
    with the KenLM behaviour it follows:

    - Windows line endings (\\r\\n) are read as \\n (util/file_piece.cc strips the \\r); gzip
      is recognised by its magic bytes.
    - Before \\data\\: blank lines and lines starting with # only (lm/read_arpa.cc,
      ReadARPACounts); any other text is refused.
    - Count lines `ngram N=COUNT`: N consecutive from 1, spaces around the numbers allowed
      (strtol/stringstream skip them), a count of 0 is a section with no entries.
    - Blank lines between sections, around headers and inside sections are skipped
      (ReadNGramHeader and ReadFloat skip whitespace); after \\end\\ only blank lines (ReadEnd).
    - A section holds exactly the declared number of entries (KenLM reads that many and then
      expects the next header); a different number is refused with both numbers.
    - Entries: log10 probability, the words, optional tab and log10 backoff. Words are separated
      by any run of spaces and tabs, and so is an n-gram's probability from its first word; a
      1-gram's probability is followed by a tab (read_arpa.hh: ReadDelimited(kARPASpaces),
      "Expected tab after probability"); trailing spaces are refused (ReadBackoff). A positive probability is refused (KenLM's default for IRSTLM's bug), a
      non-finite backoff too, and so is a non-zero backoff on the highest order. So are a NaN
      probability and -inf for any n-gram but the 1-gram `<s>` (either makes every score
      using it NaN or infinite): -99 is the format's "never".
    - Words: `<unk>` and `<UNK>` are both the unknown word (lm/vocab.cc). Without it, unknown
      words get log10 p = -100 (KenLM's unknown_missing_logprob) and `notes` says so.
      `<s>` or `</s>` missing: refused (Config::sentence_marker_missing = THROW_UP), since every
      sentence end would cost log10 p = -100.
    - A word of an n-gram that is not a 1-gram: refused (ReadNGram), except the unknown word.
    - An n-gram listed twice: refused, naming both lines (KenLM's trie refuses it, trie_sort.cc
      "Duplicate n-gram detected"; its default probing structure silently keeps the first).
    - An n-gram whose context (its first n-1 words) is not an (n-1)-gram: refused, naming the
      first such n-gram and its context (search_hashed.cc: "The context of every n-gram should
      appear as a (n-1)-gram"); it is never attached to another context. `orphans="keep"`
      reads it as SRILM does instead: the n-gram keeps its own context, added as an (n-1)-gram
      with backoff 0 and the probability SRILM would compute for it by backing off.
    """
    raw = _load(path)
    declared, position = _header(raw, path)
    order = len(declared)
    bounds = _sections(raw, position, order, path)
    noted = len(notes) if notes is not None else 0
    try:
        return _read(raw, declared, bounds, path, notes, orphans)
    except _SpacingError:   # spacing other than the usual: make it canonical, read once more
        if notes is not None:
            del notes[noted:]
    pieces, cursor = [], 0
    for n, (lo, hi) in enumerate(bounds, start=1):       # same line numbers, same sections
        pieces += [raw[cursor:lo], _canonical(raw[lo:hi], n)]
        cursor = hi
    raw = b"".join(pieces) + raw[cursor:]
    try:
        return _read(raw, declared, _sections(raw, position, order, path), path, notes, orphans)
    except _SpacingError as error:
        raise ArpaError(str(error)) from None


def _read(raw: bytes, declared: list[int], bounds: list[tuple[int, int]], path, notes, orphans):
    """`read` after the header and section checks: the entries, the vocabulary, the keys."""
    order = len(declared)
    data = np.zeros(len(raw) + _PADDING, dtype=np.uint8)  # zero tail for the sliding windows
    data[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    del raw

    def entries(n):
        parts = list(_parse(data, *bounds[n - 1], n, order, path, **({"chunk": 2**62} if n == 1 else {})))
        found = sum(len(p[0]) for p in parts)
        if found != declared[n - 1]:
            raise ArpaError(f"{path}: the {n}-grams section (line {_line_of(data, bounds[n - 1][0])}) "
                            f"has {found} entries but the header declares ngram {n}={declared[n - 1]}")
        return parts

    # 1-grams: the vocabulary, specials first
    parts = entries(1)
    prob1 = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    spans1 = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 1, 2), int)
    backoff1 = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    lines1 = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, int)
    raw_words = [data[a:b].tobytes() for a, b in spans1[:, 0]]
    unigrams = [(b"<unk>" if w in _UNK_SPELLINGS else w).decode("utf-8", "replace") for w in raw_words]
    seen: dict[str, int] = {}
    for i, word in enumerate(unigrams):
        if word in seen:
            raise ArpaError(f"{path}: line {_line_of(data, int(lines1[i]))}: the 1-gram {raw_words[i].decode('utf-8', 'replace')!r} "
                            f"is listed twice (also line {_line_of(data, int(lines1[seen[word]]))}); KenLM refuses duplicates")
        seen[word] = i
    for marker in ("<s>", "</s>"):
        if marker not in seen:
            raise ArpaError(f"{path}: the ARPA file is missing {marker}; KenLM refuses such a model "
                            f"(every sentence {'start' if marker == '<s>' else 'end'} would be "
                            "unknown); rebuild it with the sentence markers")
    if "<unk>" not in seen and notes is not None:
        notes.append(f"{path}: the ARPA file has no <unk>; unknown words get log10 p = -100, as in KenLM")
    tokens = tuple(SPECIALS) + tuple(w for w in unigrams if w not in SPECIALS)
    vocab_size = len(tokens)
    width = -(-max(len(t.encode("utf-8")) for t in tokens) // 8) * 8
    if width > _PADDING:
        raise ArpaError(f"{path}: a word is longer than {_PADDING} bytes")

    def hashes(words: list[bytes]) -> np.ndarray:
        return _hash(np.array(words, dtype=f"S{width}").view(np.uint8).reshape(len(words), width))
    vocab_hash = hashes([t.encode("utf-8") for t in tokens])
    by_hash = np.argsort(vocab_hash)
    sorted_hash = vocab_hash[by_hash]
    if np.any(sorted_hash[1:] == sorted_hash[:-1]):
        raise ArpaError(f"{path}: two vocabulary words share a 64-bit hash; please report this")
    unk_hashes = hashes(list(_UNK_SPELLINGS))
    unigram_ids = by_hash[np.searchsorted(sorted_hash, hashes([t.encode("utf-8") for t in unigrams]))]
    prob = np.full(vocab_size, -100.0)   # a vocabulary word without a 1-gram entry (<unk>): -100
    prob[unigram_ids] = prob1
    prob[1] = -np.inf                    # <s> is context only
    backoff = np.zeros(vocab_size)
    backoff[unigram_ids] = backoff1
    keys, probs, backoffs = [np.arange(vocab_size, dtype=np.int64)], [prob], [backoff]

    def word_ids(spans, line_starts, n):
        ids = np.empty(spans.shape[:2], dtype=np.int64)
        for column in range(n):
            word_hash = _hash(_fixed(data, spans[:, column, 0], spans[:, column, 1], width))
            word_hash = np.where(np.isin(word_hash, unk_hashes), vocab_hash[0], word_hash)
            where = np.minimum(np.searchsorted(sorted_hash, word_hash), vocab_size - 1)
            missing = sorted_hash[where] != word_hash
            if missing.any():
                row = int(np.flatnonzero(missing)[0])
                word = data[spans[row, column, 0]:spans[row, column, 1]].tobytes().decode("utf-8", "replace")
                raise ArpaError(f"{path}: line {_line_of(data, int(line_starts[row]))}: the {n}-gram "
                                f"word {word!r} is not among the 1-grams (which list the whole "
                                "vocabulary; KenLM refuses this too)")
            ids[:, column] = by_hash[where]
        return ids

    def chunks(n):
        """(word ids (R, n), log10 p, log10 backoff, line starts) of the order-n entries."""
        for prob_n, spans, backoff_n, line_starts in entries(n):
            yield word_ids(spans, line_starts, n), prob_n, backoff_n, line_starts

    grams = {n: chunks(n) for n in range(2, order + 1)}
    if orphans == "keep":      # all n-grams at once: blank contexts are inserted before keys exist
        grams = {n: [np.concatenate(columns) for columns in zip(*chunks(n), strict=True)]
                 if declared[n - 1] else [np.zeros((0, n), np.int64), np.zeros(0), np.zeros(0),
                                          np.zeros(0, np.int64)] for n in grams}
        kept = _insert_blank_contexts(grams, order)
        if kept and notes is not None:
            notes.append(f"{path}: {kept} context(s) of n-grams were missing; kept as SRILM does "
                         "(each n-gram with its own context, backoff 1)")
        grams = {n: [columns] for n, columns in grams.items()}
    for n in range(2, order + 1):
        lower = NGramLM(vocab_size, keys[:], probs[:], backoffs[:], [])   # orders 1..n-1
        key_parts, prob_parts, backoff_parts, line_parts, id_parts = [], [], [], [], []
        for ids, prob_n, backoff_n, line_starts in grams[n]:
            context = lower.gram_ids(ids[:, :-1])
            if np.any(context < 0):
                row = int(np.flatnonzero(context < 0)[0])
                words = " ".join(tokens[i] for i in ids[row])
                raise ArpaError(f"{path}: line {_line_of(data, int(line_starts[row]))}: the {n}-gram "
                                f"{words!r} has no context: {' '.join(words.split(' ')[:-1])!r} is "
                                f"not a {n - 1}-gram. KenLM refuses such a (pruned) file; re-prune "
                                "it so that every context is kept, or read it as SRILM does "
                                "(lmpipe ngram query --orphans keep)")
            key_parts.append(context * vocab_size + ids[:, -1])
            prob_parts.append(prob_n)
            backoff_parts.append(backoff_n)
            line_parts.append(line_starts)
            id_parts.append(ids)
        key = np.concatenate(key_parts) if key_parts else np.zeros(0, np.int64)
        order_of = np.argsort(key, kind="stable")
        key = key[order_of]
        twice = np.flatnonzero(key[1:] == key[:-1])
        if len(twice):
            line_starts = np.concatenate(line_parts)[order_of]
            raise ArpaError(f"{path}: line {_line_of(data, int(max(line_starts[twice[0]], line_starts[twice[0] + 1])))}: "
                            f"an {n}-gram listed twice (also line "
                            f"{_line_of(data, int(min(line_starts[twice[0]], line_starts[twice[0] + 1])))}); "
                            "KenLM refuses duplicates")
        keys.append(key)
        probs.append(np.concatenate(prob_parts)[order_of] if prob_parts else np.zeros(0))
        backoffs.append(np.concatenate(backoff_parts)[order_of] if backoff_parts else np.zeros(0))
        if orphans == "keep":
            _fill_blank_probabilities(lower, np.concatenate(id_parts)[order_of], probs[n - 1])
    return NGramLM(vocab_size, keys, probs, backoffs, [(0.0, 0.0, 0.0)] * order), tokens
