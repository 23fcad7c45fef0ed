"""Writing outputs so that a killed stage never leaves a half-written file where a complete one
is expected (I/O helper). A file is written under a scratch name beside its target and renamed
into place (atomic on one filesystem); a folder is built beside its target and renamed as a
whole. Whatever a kill leaves is either the previous complete file, nothing, or a scratch
`*.partial*` name (git-ignored) that the next run of the stage removes; DVC records a stage's outputs only after its
command succeeds, so it never accepts a half-done stage either.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a scratch path (same folder, same suffix) to write; on success it replaces `path`."""
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
    """Yield an empty scratch folder; on success it replaces `path` (one rename after removing
    the old one). A relative `path` is built in the working directory (models/ngram in
    ./.models-ngram.partial: never inside models/, which another stage depends on); an absolute
    one beside itself."""
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


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as scratch:
        scratch.write_text(text, encoding="utf-8")
