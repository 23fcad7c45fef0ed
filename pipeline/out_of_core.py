"""Arrays larger than memory: flat columns spilled to a private folder (Spill, Column; SpillError
naming the folder and the fix), the uncompressed members of a .npz memory-mapped (mapped_npz) and
read a slice at a time (chunks), their mapped pages handed back to the page cache (release)."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def chunks(array: np.ndarray, rows: int = 1 << 20) -> Iterator[np.ndarray]:
    """Consecutive slices of a 1-D array; a np.memmap's are read from its file, so its pages are
    never mapped into this process (its RSS does not grow by the table)."""
    for lo in range(0, len(array), rows):
        if isinstance(array, np.memmap):
            yield np.fromfile(array.filename, array.dtype, min(rows, len(array) - lo),
                              offset=array.offset + lo * array.itemsize)
        else:
            yield np.asarray(array[lo:lo + rows])


def mapped_npz(path: Path) -> dict:
    """The arrays of a .npz, each memory-mapped where stored uncompressed (outputs.save_npz's,
    64-byte aligned: numpy searches a misaligned map through a copy of it, which still works):
    pages are read as scored and stay reclaimable. Each member is read through once in slices,
    so a damaged one (CRC) raises as np.load would; others (compressed, empty, 0-d) are read."""
    arrays = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            with archive.open(info) as member:
                while member.read(1 << 24):
                    pass
            handle.seek(info.header_offset + 26)   # the local header's name and extra lengths
            handle.seek(info.header_offset + 30 + sum(struct.unpack("<HH", handle.read(4))))
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED or not shape or not all(shape) or dtype.hasobject:
                arrays[name] = np.lib.format.read_array(archive.open(info), allow_pickle=False)
            else:
                arrays[name] = np.memmap(path, dtype, "r", handle.tell(), shape, "F" if fortran else "C")
    return arrays


def release(arrays) -> None:
    """Unmap the pages of each np.memmap among `arrays` from this process (madvise MADV_DONTNEED;
    the file's pages stay in the page cache and fault back in when read again): resident memory
    stays bounded by what is read between two calls, not by the tables (their RSS is reclaimable
    but counted). Other arrays are left alone."""
    for array in arrays:
        mapping = getattr(array, "_mmap", None)   # np.memmap's (and its views') mmap.mmap
        if isinstance(mapping, mmap.mmap):
            mapping.madvise(mmap.MADV_DONTNEED)


class SpillError(OSError):
    """The spill folder cannot be written or read: the folder, what happened, the fix."""


class Spill(AbstractContextManager):
    """A private folder `prefix`XXXX for out-of-core columns under `parent` (default: tempfile's), removed on exit."""

    def __init__(self, parent: str | os.PathLike | None = None, prefix: str = "lmpipe-ngram-"):
        where = Path(parent if parent is not None else tempfile.gettempdir())
        with spilling(where):   # no such folder, not a folder, EACCES, a name too long
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=where))

    def file(self, name: str, dtype) -> Column:
        return Column(self, self.path / name, np.dtype(dtype))

    def __exit__(self, *_) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextmanager
def spilling(folder: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise SpillError(spill_message(folder, error)) from None


def spill_message(folder: Path, error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        return (f"{folder}: no space left for the spilled files ({free:,} bytes free); free "
                "space there, or spill to a larger disk")
    if error.errno == errno.ENOENT:
        return (f"{folder}: no such spill folder, or it vanished while in use (removed by another "
                "program?); give a folder that exists and stays")
    if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"{folder}: cannot write spill files there ({error.strerror}); give a writable folder"
    return f"{folder}: spill files cannot be written or read ({error.strerror or error})"


@dataclass
class Column:
    """A flat binary column in a spill folder: appended in order, read back through a memory map."""
    spill: Spill
    path: Path
    dtype: np.dtype
    length: int = 0

    def append(self, values: np.ndarray) -> None:
        # opened each time: a merge of many runs holds no file open
        with spilling(self.spill.path), open(self.path, "ab") as handle:
            handle.write(np.ascontiguousarray(values, dtype=self.dtype).data)
        self.length += len(values)

    def __len__(self) -> int:
        return self.length

    def _mapped(self) -> np.ndarray:   # a file of length 0 cannot be mapped
        if not self.length:
            return np.empty(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.length,))

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        """A copy of `rows`: a slice (contiguous, as arpa.write takes; read, not mapped: a map
        costs ~80 us, a merge of 100 runs reads 40,000 slices) or row numbers."""
        with spilling(self.spill.path):
            if isinstance(rows, slice) and rows.step in (None, 1):
                start, stop, _ = rows.indices(self.length)
                if stop <= start:
                    return np.empty(0, dtype=self.dtype)
                with open(self.path, "rb") as handle:
                    return np.fromfile(handle, self.dtype, stop - start, offset=start * self.dtype.itemsize)
            return np.array(self._mapped()[rows])

    def search(self, values: np.ndarray) -> np.ndarray:
        """np.searchsorted of `values` in this sorted column, through a memory map."""
        with spilling(self.spill.path):
            return np.searchsorted(self._mapped(), values)

    def remove(self) -> None:
        with spilling(self.spill.path):
            self.path.unlink(missing_ok=True)
