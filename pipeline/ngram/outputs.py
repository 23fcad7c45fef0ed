"""The ngram stage's files, one writer each, in a folder that appears whole or not at all: model.npz
(the Kneser-Ney tables), memory.json (n-grams and bytes of a model of each order), model.arpa,
counts.parquet (every counted n-gram); tables in memory or on disk alike. Errors: as builder's."""

from __future__ import annotations

import json
import struct
import time
import zipfile
from itertools import accumulate
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import files, out_of_core
from pipeline.ngram import builder, kneser_ney

PADDING_ID = 0xD935     # a zip extra field that only pads (the ID zipalign uses); readers skip it
SLICE_ROWS = 1 << 20   # spilled counts.parquet: n-grams a slice (~250 MB at order 5), pyarrow's row group


def write(source, tokens: tuple[str, ...], out: Path, order: int, counted: int, memory: int,
          temp_dir: str | None, fallback, progress) -> None:
    """The four files of `source` (orders 1..`counted`, Kneser-Ney of `order`) into `out`."""
    started = time.perf_counter()
    with builder.build(source, len(tokens), order, counted, memory, temp_dir, fallback,
                       kneser_ney.PARAMS_REMEDY, progress, "ngram.memory less the interpreter") as (counts, model, spill):
        step = max(memory // 256, 4096)
        with files.staged_dir(out) as scratch:
            save_npz(scratch / "model.npz", model.arrays(), step)
            sizes = [len(k) for k in counts.keys]   # per order N: its n-grams, entries and bytes of an order-N model
            rows = [{"order": n, "ngrams": size, "model_entries": total,
                     "model_bytes": total * kneser_ney.BYTES_PER_NGRAM}
                    for n, (size, total) in enumerate(zip(sizes, accumulate(sizes), strict=True), start=1)]
            (scratch / "memory.json").write_text(json.dumps(rows, indent=2))
            with open(scratch / "model.arpa", "wb") as handle:
                builder.write_arpa(model, counts, tokens, handle, memory)
            progress("wrote model.arpa")
            write_counts(scratch / "counts.parquet", counts, tokens, None if spill is None else SLICE_ROWS)
            progress(f"wrote counts.parquet; {time.perf_counter() - started:.1f}s in all")


def save_npz(path: str | Path, arrays: dict, step: int) -> None:
    """np.savez's layout of `arrays` (uncompressed, zip64), out_of_core.Column ones written `step`
    entries at a time; each array's data starts 64-byte aligned in the file (an extra field pads
    the member's header: numpy searches a misaligned memory map through a copy of it) and no
    time stamp is stored (the same arrays, the same bytes)."""
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, values in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy")   # 1980-01-01, as zip's epoch
            header = raw.tell() + 30 + len(info.filename) + 20 + 4   # + zip64's extra + ours
            info.extra = struct.pack("<HH", PADDING_ID, -header % 64) + bytes(-header % 64)
            with archive.open(info, "w", force_zip64=True) as member:   # .npy headers end 64-aligned
                if not isinstance(values, out_of_core.Column):
                    np.lib.format.write_array(member, np.asanyarray(values), allow_pickle=False)
                    continue
                np.lib.format.write_array_header_1_0(member, {
                    "descr": np.lib.format.dtype_to_descr(values.dtype), "fortran_order": False,
                    "shape": (values.length,)})
                for lo in range(0, values.length, step):
                    member.write(values[lo:lo + step].data)


def write_counts(path: str | Path, counts, tokens: tuple[str, ...], rows: int | None) -> None:
    """counts.parquet, a row per n-gram (order, ngram: words joined by spaces, key, count,
    adjusted, suffix: -1 at order 1) with pandas' schema, made `rows` at a time (None: at once)."""
    words = pa.array(tokens, pa.string())
    schema = pa.Schema.from_pandas(pd.DataFrame({
        "order": [1], "ngram": pd.Series([""], dtype=object), "key": [0], "count": [0],
        "adjusted": [0], "suffix": [0]}), preserve_index=False)

    def table(n: int, lo: int, hi: int) -> pa.Table:
        grams = counts.words(n, lo, hi)   # the words joined in C, by pyarrow
        text = pc.binary_join_element_wise(*(words.take(grams[:, j]) for j in range(n)), " ")
        suffix = counts.suffix[n - 1][lo:hi] if n > 1 else np.full(hi - lo, -1, dtype=np.int64)
        return pa.table({"order": np.full(hi - lo, n, dtype=np.int64), "ngram": text,
                         "key": counts.keys[n - 1][lo:hi], "count": counts.counts[n - 1][lo:hi],
                         "adjusted": counts.adjusted[n - 1][lo:hi], "suffix": suffix}, schema=schema)
    sizes = [len(k) for k in counts.keys]
    step = rows or max(sizes)
    slices = (table(n, lo, min(lo + step, size)) for n, size in enumerate(sizes, 1)
              for lo in range(0, size, step))
    with pq.ParquetWriter(path, schema) as writer:
        for part in slices if rows else [pa.concat_tables(slices)]:
            writer.write_table(part)
            del part   # freed before the next slice is made, not beside it
