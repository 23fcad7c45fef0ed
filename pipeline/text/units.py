"""Resampling units and the text's size, for valid and test. Out: units.npz: {split}_unit (S,),
each sentence's unit (a document when valid and test hold MIN_DOCUMENTS each, else a line), and
per unit (U,) int64 chars (code points), bytes (UTF-8), words (str.split) of the text as read,
each + 1 for the `\\n`. Errors: check raises StateError naming the file and the array."""

from __future__ import annotations

import numpy as np

from pipeline import files
from pipeline.text.tokenizers import SPACE_CLASS, code_point_classes, per_line, utf8_widths

FILE = "units.npz"   # in data/prepared: {split}_unit, {split}_chars, {split}_bytes, {split}_words
FIELDS = ("chars", "bytes", "words")
MIN_DOCUMENTS = 10   # fewer documents in valid or test: resample sentences (prepare says so)


def text_units(lines, line_of: np.ndarray,
               document_of: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{"unit": (S,) each sentence's unit, FIELDS: (U,) each unit's size} (int64) of the sentences'
    lines `line_of` in `lines` (list[str], or sorted indices -> FIELDS); units: `document_of`, else lines."""
    line_of = np.asarray(line_of, dtype=np.int64)
    key = line_of if document_of is None else np.asarray(document_of, dtype=np.int64)[line_of]
    keys, unit = np.unique(key, return_inverse=True)
    unit = unit.reshape(-1).astype(np.int64)
    used, first = np.unique(line_of, return_index=True)   # a line cut in pieces counts once
    sizes = lines(used) if callable(lines) else line_sizes("".join(lines[i] + "\n" for i in used))
    return {"unit": unit} | {field: np.bincount(unit[first], weights=sizes[field].astype(np.float64),
                                                minlength=len(keys)).astype(np.int64) for field in FIELDS}


def line_sizes(text: str) -> dict[str, np.ndarray]:
    """FIELDS of every line of `text` (whole lines) as `text_units` counts them (int64, (lines,)),
    and "blank" (bool, (lines,)): only spaces, tabs and `\\r` (a blank line ends a document)."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    carriage = (points == 13) & np.append(points[1:] == 10, False)   # a `\r` ending a line
    space = code_point_classes()[points] == SPACE_CLASS
    word_start = ~space
    word_start[1:] &= space[:-1]
    solid = (points != 32) & (points != 9) & (points != 13) & (points != 10)
    return {"chars": per_line(~carriage, points),
            "bytes": per_line(utf8_widths(points) - carriage, points),
            "words": per_line(word_start, points) + 1, "blank": per_line(solid, points) == 0}


def measure(lines, line_of: dict[str, np.ndarray],
            document_of: np.ndarray | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """(the unit used, FILE's arrays) of valid and test (`line_of[split]`: its sentences' lines):
    documents when given and MIN_DOCUMENTS each, else lines ("sentences")."""
    enough = document_of is not None and min(len(np.unique(document_of[line_of[split]]))
                                             for split in ("valid", "test")) >= MIN_DOCUMENTS
    return "documents" if enough else "sentences", {
        f"{split}_{field}": values for split in ("valid", "test")
        for field, values in text_units(lines, line_of[split], document_of if enough else None).items()}


def check(arrays: dict[str, np.ndarray], sentences: dict[str, int], path, folder) -> None:
    """StateError naming `path` (FILE of `folder`) and the array unless for each split of `sentences`
    ({split: count}) `{split}_unit` holds one id in [0, U) per sentence, each `{split}_<field>` U sizes >= 1."""
    for split, count in sentences.items():
        units = len(arrays[f"{split}_chars"])
        # array -> (its length, the least and the greatest value allowed, what its length counts)
        wanted = {f"{split}_unit": (count, 0, units - 1, f"the {count:,} sentences of {folder}/{split}.npy")}
        wanted |= {f"{split}_{field}": (units, 1, None, f"the {units:,} units of {split}_chars")
                   for field in FIELDS if f"{split}_{field}" in arrays}
        for name, (length, low, high, counted) in wanted.items():
            values = np.asarray(arrays[name])
            if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
                why = f"{name} is a {values.dtype} array of shape {values.shape}, not whole numbers"
            elif len(values) != length:
                why = f"{name} holds {len(values):,} values, not one for each of {counted}"
            elif len(values) and (values.min() < low or high is not None and values.max() > high):
                allowed = f"{low}..{high}" if high is not None else f">= {low}"
                why = f"{name} holds values {int(values.min())}..{int(values.max())}, not {allowed}"
            else:
                continue
            raise files.damaged(path, why)
