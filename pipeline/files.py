"""Files at the edge: outputs renamed into place from a scratch `*.partial*` name (a kill leaves the
old file or the scratch); readers of earlier stages' outputs (StateError naming the file and the
fix; .npz members memory-mapped through out_of_core); params YAML as DVC reads it (ParamsError);
lmplz's -S sizes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline import out_of_core
from pipeline.errors import ParamsError, StateError


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a scratch path beside `path` to write; on success it replaces `path`."""
    path = Path(path)
    scratch = path.with_name(f".{path.stem}.partial{path.suffix}")
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.unlink(missing_ok=True)
    try:
        yield scratch
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


@contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty scratch folder; on success it replaces `path`. A relative `path` is built in
    the working folder (never inside models/, which another stage depends on)."""
    path = Path(path)
    name = f".{'-'.join(path.parts)}.partial"
    scratch = path.with_name(f".{path.name}.partial") if path.is_absolute() else Path(name)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sha256(path: str | Path, digits: int = 64) -> str:
    """The first `digits` hex digits of the file's SHA-256, read in blocks (a model may exceed memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:digits]


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as scratch:
        scratch.write_text(text, encoding="utf-8")


def damaged(path: str | Path, why: str, fix: str | None = None) -> StateError:
    """StateError "<path>: <why>; <fix>" (default: DVC's cached copy of the file, which `dvc
    checkout` restores also inside a folder output); .problem lacks the fix."""
    path = Path(path)
    fix = fix or (f"restore it with `dvc checkout -f {path}` (DVC's cached copy) or rebuild it "
                  "with `dvc repro`")
    error = StateError(f"{path}: {why}; {fix}")
    error.problem = f"{path}: {why}"
    return error


def _why(error: BaseException, fmt: str) -> str:
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, IsADirectoryError):
        return "a folder where a file should be"
    if isinstance(error, PermissionError | NotADirectoryError):
        return error.strerror
    detail = " ".join(str(error).split()).split(". ")[0][:100]
    if not detail or "pickle" in detail.lower():   # numpy/torch guessing at a foreign file
        return f"damaged, not a readable {fmt}"
    return f"damaged, not a readable {fmt} ({detail})"


READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)   # numpy's, json's


def _load(path: str | Path, fmt: str, read, fix=None, kind: type = dict,
          required: tuple[str, ...] = (), errors: type | tuple = READ_ERRORS):
    """read(path), a `kind` holding every key of `required`; else StateError (see damaged)."""
    path = Path(path)
    try:
        value = read(path)
    except errors as error:
        raise damaged(path, _why(error, fmt), fix) from None
    missing = [key for key in dict.fromkeys(required) if key not in value] if isinstance(value, kind) else None
    if missing != []:
        raise damaged(path, f"has no {', '.join(missing)}" if missing else
                      f"holds a {type(value).__name__}, not a {kind.__name__}", fix)
    return value


def read_json(path: str | Path, kind: type = dict, required: tuple[str, ...] = (),
              fix: str | None = None):
    return _load(path, "JSON file", lambda path: json.loads(path.read_text(encoding="utf-8")),
                 fix, kind, required)


def load_array(path: str | Path, mmap_mode: str | None = None):
    return _load(path, ".npy array", lambda path: np.load(path, mmap_mode=mmap_mode, allow_pickle=False),
                 kind=np.ndarray)


def load_arrays(path: str | Path, required: tuple[str, ...] = (), mapped: bool = False) -> dict:
    """`mapped`: out_of_core.mapped_npz's arrays where it reads the archive; else (and for the message) np.load's."""
    def read(path):
        if mapped:
            with contextlib.suppress(*READ_ERRORS):
                return out_of_core.mapped_npz(path)
        return dict(np.load(path, allow_pickle=False))
    return _load(path, ".npz archive", read, required=required)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    import torch
    return _load(path, "torch checkpoint", lambda path: torch.load(path, map_location="cpu", weights_only=True),
                 required=required, errors=Exception)   # torch raises many kinds


def read_yaml(path: str | Path) -> Any:
    """The YAML at `path` as DVC reads params (ruamel safe, YAML 1.2, duplicate keys refused).
    Raises ParamsError (file, line and column) for text that is not UTF-8 or not YAML."""
    path = Path(path)
    try:
        return YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text (byte offset {error.start}); save it as UTF-8") from None
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = " ".join(f"{getattr(error, 'context', '') or ''} {getattr(error, 'problem', '') or ''}".split())
        raise ParamsError(f"{path}: not valid YAML{where}: {what or ' '.join(str(error).split())}; "
                          "fix the file") from None


def repo_root() -> Path:
    """The project root: DVC sets DVC_ROOT inside (queued) experiments, whose cwd is a clone; else the cwd."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def relative(path: Path) -> Path:
    """`path` relative to the current folder when inside it, as messages name files."""
    resolved, here = path.resolve(), Path.cwd().resolve()
    return resolved.relative_to(here) if resolved.is_relative_to(here) else path


def parse_size(text: str | int) -> int:
    """Bytes of a memory size as lmplz's -S reads it (util/usage.cc ParseSize): a number and b, K,
    M, G, T (powers of 1024; none: K) or % (of physical memory). ValueError below 1 MiB or unreadable."""
    text = str(text).strip()
    units = {"b": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number, suffix = (text[:-1], text[-1]) if text[-1:] in (*units, "%") else (text, "K")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a memory size; give e.g. 100M, 2G or 50% (of RAM)") from None
    if suffix == "%":
        size = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * value / 100)
    else:
        size = int(value * units[suffix])
    if not size >= 1 << 20:
        raise ValueError(f"{text!r} is {size:,} bytes, below the least budget of 1M; give e.g. 100M")
    return size
