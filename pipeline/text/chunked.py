"""The `prepare` stage within `memory` bytes (lmplz's -S; two passes: docs/internals.md). Out: OUT/
{train,valid,test}.npy, vocab.json, units.npz, stats.json: tests/oracle_prepare.py's bytes at any
block size. Errors: CorpusError, SplitError, ValueError; SpillError naming corpus.temp_dir."""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil

from pipeline import files, out_of_core
from pipeline.text import corpus, splits, units
from pipeline.text.tokenizers import TOKENIZERS
from pipeline.text.vocab import BOS_ID, SPECIALS, UNK_ID, Vocab, marker_line, sentence_stream

BYTES_PER_CHAR = 80     # tokenizing a block: its text, code points, classes, offsets, masks
BYTES_PER_TOKEN = 80    # a block of sentences: ids, positions, labels, the streams written


def prepare(params, out: str | Path, memory: int, block: int | None = None, progress=print) -> None:
    """Prepare OUT from params (config.Params) within about `memory` bytes (blocks of `block`
    characters and tokens, default: from `memory`); OUT changes once every output is ready."""
    c = params.corpus
    import pyarrow.compute  # noqa: F401  (the tokenizers' hashing: resident before blocks are sized)
    source = corpus.open_source(c.source, c.encoding_errors, c.sha256, c.valid_source, c.test_source)
    try:
        with out_of_core.Spill(c.temp_dir or None, "lmpipe-prepare-") as spill:
            chars = block or int(np.clip(_left(memory) // BYTES_PER_CHAR, 1 << 12, 1 << 23))
            _prepare(params, Path(out), source, _Scan(source, c, chars, spill), memory, block, progress)
    except out_of_core.SpillError as error:
        raise out_of_core.SpillError(f"corpus.temp_dir: {error}") from None


def _prepare(params, out: Path, source, scan: _Scan, memory: int, block: int | None, progress) -> None:
    c, split = params.corpus, params.split
    progress(f"prepare: read {scan.lines:,} lines from {', '.join(source.files)}")
    sentences = _Sentences(scan, c, source.given)
    wanted = {"train": split.train, "valid": split.valid, "test": split.test}
    method, documents = _divide(sentences, scan, source, params, wanted)
    step = block or max(_left(memory) // BYTES_PER_TOKEN, 1 << 16)   # from what the budget leaves now
    if method == "given":
        progress(f"prepare: split given by the source ({', '.join(source.files)}); split.* unused")
    else:
        progress(f"prepare: split by {method} ({', '.join(f'{k} {v:g}' for k, v in wanted.items())}"
                 f"; 0 = the rest)")
    if sentences.lines_cut:
        progress(f"prepare: {sentences.lines_cut:,} line(s) longer than corpus.max_line_tokens="
                 f"{c.max_line_tokens} were cut into sentences of at most that many tokens")
    vocab = _vocab(scan, sentences, params.vocab, step)
    line_of = {name: sentences.line_of[sentences.part == number]
               for number, name in enumerate(splits.PARTS)}
    empty = next((name for name in ("valid", "test", "train") if not len(line_of[name])), None)
    if empty:
        raise corpus.CorpusError(f"the {empty} split is empty ({', '.join(source.files)}); give it at least one line")
    unit, measured = units.measure(   # the lines' sizes read back from the scan's columns
        lambda lines: {field: column[lines] for field, column in scan.columns.items()},
        line_of, scan.documents if method == "documents" else None)
    if method == "documents" and unit != "documents":
        progress(f"prepare: valid or test holds fewer than {units.MIN_DOCUMENTS} documents; intervals "
                 "resample sentences instead (narrower: neighbours are not independent)")
    stats = {"vocab_size": len(vocab), "split_method": method, "interval_unit": unit,
             "corpus_hash": scan.digest.hexdigest()[:16]}
    if sentences.lines_cut:
        stats["lines_cut"] = sentences.lines_cut
    if c.encoding_errors == "replace":
        stats["replaced_characters"] = scan.replaced
    # streams written under scratch names, then renamed into place: units.npz, valid, test, train
    # (train last: a kill leaves no new train.npy beside older files)
    with files.atomic_file(out / "train.npy") as train, files.atomic_file(out / "test.npy") as test, \
            files.atomic_file(out / "valid.npy") as valid:
        found = _write_streams(scan, sentences, vocab, {"train": train, "test": test, "valid": valid}, step)
        with files.atomic_file(out / units.FILE) as path:
            np.savez(path, **measured)
    for name in ("valid", "test", "train"):
        part = stats[name] = found[name] | ({"documents": documents[name]} if name in documents else {})
        if name != "train":
            part["units"] = len(measured[f"{name}_chars"])
            part.update({field: int(measured[f"{name}_{field}"].sum()) for field in units.FIELDS})
        progress(f"prepare: {name}: {part['sentences']:,} sentences, {part['tokens']:,} tokens, "
                 f"{part['types']:,} types, OOV rate {part['oov_rate']:.2%}")
    files.write_text(out / "vocab.json", json.dumps(vocab.to_json(), ensure_ascii=False))
    files.write_text(out / "stats.json", json.dumps(stats, indent=2))


class _Scan:
    """Pass 1: the corpus' tokens on disk and what is kept of each line (`documents`: int64)."""

    def __init__(self, source, c, chars: int, spill):
        index: dict[str, int] = {}
        self.tokens = spill.file("tokens", np.int32)
        self.columns = {field: spill.file(field, np.int64) for field in units.FIELDS}
        per_line, blank, given_documents = [], [], []
        file_lines = np.zeros(len(source.files) + 1, dtype=np.int64)
        self.digest, self.replaced = hashlib.sha256(), 0
        for file, text, documents in source.blocks(chars):
            # stats' corpus_hash: SHA-256 of the lines joined by "\n" (no newline after the last)
            self.digest.update(("\n" if per_line else "").encode() + text[:-1].encode("utf-8"))
            distinct, codes, counts = TOKENIZERS[c.tokenizer].block(text, c.lowercase, c.unk)
            if (marker := marker_line(distinct, codes, counts)) is not None:
                raise corpus.CorpusError(
                    f"{source.files[file]}: line {file_lines[file + 1] + marker[0] + 1:,} holds {marker[1]!r}, a "
                    "sentence marker; remove the markers from the text (prepare adds <s> and </s> to every line)")
            mapping = np.fromiter((index.setdefault(t, len(index)) for t in distinct), np.int32,
                                  len(distinct))
            self.tokens.append(mapping[codes])
            sizes = units.line_sizes(text)
            for field, column in self.columns.items():
                column.append(sizes[field])
            per_line.append(counts.astype(np.int32) if len(counts) and counts.max() < 2**31
                            else counts)
            blank.append(sizes["blank"])
            file_lines[file + 1] += len(counts)
            if documents is not None:
                given_documents.append(np.asarray(documents, dtype=np.int64))
            self.replaced += text.count("\ufffd")   # reported under encoding_errors: replace
        self.strings = list(index)
        self.per_line = np.concatenate(per_line) if per_line else np.zeros(0, np.int64)
        del per_line
        self.lines = len(self.per_line)
        self.file_start = np.cumsum(file_lines)
        if given_documents:
            self.documents = np.concatenate(given_documents)
        else:   # runs of lines ended by blank lines (which belong to them) or a file's end
            ends = np.concatenate(blank) if blank else np.zeros(0, bool)
            ends[:-1] &= ~ends[1:]
            ends[self.file_start[1:][np.diff(self.file_start) > 0] - 1] = True   # each file's last line
            self.documents = np.cumsum(ends, dtype=np.int64) - ends   # the ends before each line


class _Sentences:
    """The sentences (S) the lines make (oracle_prepare's `sentences`, on lengths), 17 bytes each:
    `line_of`, `length` (int32 while they fit), `start` (int64: first token in the scan's token file),
    `part` (int8, index in splits.PARTS: a given split's, else 0); `lines_cut`."""

    def __init__(self, scan: _Scan, c, given: bool):
        counts, m = scan.per_line, c.max_line_tokens
        cut = (counts > m) if m else np.zeros(len(counts), dtype=bool)
        any_cut = bool(cut.any())
        # sentences of each line: ceil(count / m) when cut, else 1 (0 without tokens, unless blank lines count)
        pieces = np.where(cut, -(-counts // max(m, 1)),
                          (counts > 0) | TOKENIZERS[c.tokenizer].blank_lines_are_sentences
                          ).astype(counts.dtype)
        small = np.int32 if scan.lines < 2**31 and (not len(counts) or counts.max() < 2**31) else np.int64
        line_of, self.lines_cut = [], 0
        bounds = scan.file_start if given else scan.file_start[[0, -1]]   # max_sentences counts in
        for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):   # each split
            if c.max_sentences and pieces[first:last].sum() > c.max_sentences:   # stop in the last kept line
                last = first + int(np.searchsorted(np.cumsum(pieces[first:last]), c.max_sentences)) + 1
            self.lines_cut += int(np.count_nonzero(cut[first:last]))
            line_of.append(np.repeat(np.arange(first, last, dtype=small),
                                     pieces[first:last])[:c.max_sentences or None])
        del pieces
        self.part = np.repeat(np.arange(len(line_of), dtype=np.int8), [len(lines) for lines in line_of])
        self.line_of = line_of[0] if len(line_of) == 1 else np.concatenate(line_of)
        del line_of
        line_counts = counts[self.line_of]
        self.start = np.cumsum(counts, dtype=np.int64)
        self.start -= counts
        self.start = self.start[self.line_of]
        if any_cut:   # which piece of its line each sentence is
            piece = np.arange(len(self.line_of)) - np.searchsorted(self.line_of, self.line_of)
            line_counts = np.where(cut[self.line_of], np.minimum(m, line_counts - piece * m), line_counts)
            self.start += piece * m
        self.length = line_counts.astype(small)
        del line_counts

    def blocks(self, scan: _Scan, step: int):
        """(token ids, part, length) of blocks of sentences of about `step` tokens (a longer one
        alone), contiguous in the scan's token file (ended where corpus.max_sentences dropped some)."""
        gaps = np.flatnonzero(self.start[1:] != self.start[:-1] + self.length[:-1]) + 1
        a, window = 0, step // 2 + 1     # a sentence is at least 2 tokens (<s> </s>)
        while a < len(self.length):       # a cumulative sum over one window at a time
            ends = np.cumsum(self.length[a:a + window] + 2, dtype=np.int64)
            b = a + max(int(np.searchsorted(ends, step, side="right")), 1)
            after = gaps[np.searchsorted(gaps, a, side="right"):]
            b = min(b, int(after[0])) if len(after) else b
            start, length = self.start[a:b], self.length[a:b]
            lo, hi = int(start[0]), int((start + length).max())
            offsets = np.repeat(start - lo - (np.cumsum(length) - length), length) + \
                np.arange(int(length.sum()))
            tokens = scan.tokens[lo:hi][offsets]
            del offsets   # not held while the block is used
            yield tokens, self.part[a:b], length
            a = b


def _left(memory: int) -> int:
    """Bytes of `memory` not yet resident in this process (psutil), at least 1/8 of it."""
    return max(memory - psutil.Process().memory_info().rss, memory // 8)


def _divide(sentences: _Sentences, scan: _Scan, source, params, wanted) -> tuple[str, dict[str, int]]:
    """Sets `sentences.part` unless the source gives it; (method, documents per part)."""
    if not sentences.length[sentences.part == 0].sum():
        train = f"{source.files[0]} (the train split)" if source.given else f"corpus.source={params.corpus.source!r}"
        raise splits.SplitError(f"{train} holds no tokens; give a text with at least one non-blank line")
    if source.given:
        return "given", {}
    document_of = scan.documents[sentences.line_of]
    indices = splits.split(params.split.method, sentences.length, document_of, wanted, params.seed)
    for number, part in enumerate(splits.PARTS):
        sentences.part[indices[part]] = number
    return params.split.method, {part: int(len(np.unique(document_of[indices[part]]))) for part in splits.PARTS}


def _vocab(scan: _Scan, sentences: _Sentences, params, step: int) -> Vocab:
    """Vocab.from_counts of the train sentences' tokens, counted a block of sentences at a time."""
    counts = np.zeros(len(scan.strings), dtype=np.int64)
    for tokens, part, length in sentences.blocks(scan, step):
        counts += np.bincount(tokens[np.repeat(part == 0, length)], minlength=len(counts))
    vocab = Vocab.from_counts({scan.strings[i]: int(counts[i]) for i in np.flatnonzero(counts)},
                              params.min_count, params.max_size)
    if len(vocab) == len(SPECIALS):
        raise corpus.CorpusError(f"the vocabulary is empty: no train word occurs vocab.min_count={params.min_count} times")
    return vocab


def _write_streams(scan: _Scan, sentences: _Sentences, vocab: Vocab, scratch: dict[str, Path],
                   step: int) -> dict[str, dict]:
    """Writes each split's stream to `scratch[split]` (np.save's bytes); its sentences, tokens, types, oov, oov_rate."""
    mapping = vocab.encode(scan.strings)
    found, seen = {}, {name: np.zeros(len(vocab), dtype=bool) for name in splits.PARTS}
    with ExitStack() as stack:
        handles = {name: stack.enter_context(open(scratch[name], "wb")) for name in splits.PARTS}
        for number, name in enumerate(splits.PARTS):
            mine = sentences.part == number
            count, words = int(np.count_nonzero(mine)), int(sentences.length[mine].sum())
            found[name] = {"sentences": count, "tokens": words + count, "types": 0, "oov": 0}
            np.lib.format.write_array_header_1_0(handles[name], {
                "descr": np.dtype(np.int32).str, "fortran_order": False, "shape": (words + 2 * count,)})
        for tokens, part, length in sentences.blocks(scan, step):
            ids, of_token = mapping[tokens], np.repeat(part, length)
            for number, name in enumerate(splits.PARTS):
                stream = sentence_stream(ids[of_token == number], length[part == number])
                handles[name].write(stream.data)
                found[name]["oov"] += int(np.count_nonzero(stream == UNK_ID))
                seen[name][stream[stream != BOS_ID]] = True
    for name, tally in found.items():
        tally["types"] = int(np.count_nonzero(seen[name]))
        tally["oov_rate"] = tally["oov"] / max(tally["tokens"], 1)
    return found

