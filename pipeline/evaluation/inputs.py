"""Evaluate's inputs, read and checked before any scoring (evaluation/run.py). In:
data/prepared/stats.json and units.npz, models/KIND/history.json, models/ngram/counts.parquet;
every score before it is written, logged or registered. Errors: errors.StateError (a missing
units.npz: FileNotFoundError), one line naming the file (or model), what is wrong and the fix."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import files
from pipeline.evaluation.tasks import retrain_hint
from pipeline.text import units
from pipeline.text.vocab import BOS_ID


def _number(value) -> bool:
    """A finite JSON number (not a bool, a string or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_stats(data: Path) -> dict:
    """data/prepared/stats.json as evaluate uses it: corpus_hash a string; valid and test
    objects whose oov_rate is a number in [0, 1]; split_method and interval_unit strings when
    present. Raises errors.StateError naming the file, the key and the fix (git keeps it: it is
    a DVC metric, not in DVC's cache)."""
    path = data / "stats.json"
    fix = f"restore it with `git checkout {path}` or rebuild it with `dvc repro -f prepare`"
    stats = files.read_json(path, data, required=("corpus_hash", "valid", "test"), fix=fix)
    why = None
    if not isinstance(stats["corpus_hash"], str) or not stats["corpus_hash"]:
        why = f"corpus_hash is {stats['corpus_hash']!r}, not a hash"
    for key in ("split_method", "interval_unit"):
        if key in stats and not isinstance(stats[key], str):
            why = why or f"{key} is {stats[key]!r}, not a string"
    for split in ("valid", "test"):
        part = stats[split]
        if not isinstance(part, dict):
            why = why or f"{split} is {json.dumps(part)[:40]}, not an object of the split's statistics"
        elif not (_number(part.get("oov_rate")) and 0 <= part["oov_rate"] <= 1):
            why = why or (f"{split}.oov_rate is {part.get('oov_rate', 'missing')!r}, not a rate in "
                          "[0, 1]")
    if why:
        raise files.damaged(path, why, data, fix)
    return stats


def read_history(path: Path) -> list[dict]:
    """models/KIND/history.json: one object per epoch, each with a whole epoch, a finite
    val_ppl and (written since lmpipe recorded it) a whole step. Raises errors.StateError naming
    the file, the entry and the fix."""
    history = files.read_json(path, path.parent, list)
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            why = f"entry {i} is {json.dumps(entry)[:40]}, not an object"
        elif not _number(entry.get("val_ppl")) or entry["val_ppl"] < 1:
            why = (f"entry {i} has val_ppl {entry['val_ppl']!r}, not a perplexity" if "val_ppl" in
                   entry else f"entry {i} has no val_ppl")
        elif not _whole(entry.get("epoch")):
            why = f"entry {i} has epoch {entry.get('epoch', 'missing')!r}, not a whole number"
        elif "step" in entry and not _whole(entry["step"]):
            why = f"entry {i} has step {entry['step']!r}, not a whole number"
        else:
            continue
        raise files.damaged(path, why, path.parent, retrain_hint(path.parent))
    return history


def check_finite(name: str, result: dict, weights: str) -> None:
    """Refuse to write, log or register metrics of model `name` of which one is NaN or infinite
    (scores of a damaged model: never a number to compare or promote). Raises errors.StateError
    naming the model, the metrics and its file's fix."""
    bad = [key for key, value in result.items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        raise files.StateError(
            f"{weights}: the scores of {name} are not finite ({', '.join(f'{k}={result[k]}' for k in bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}), so nothing is written, logged or registered; "
            f"{retrain_hint(Path(weights).parent)}")


def read_table(path: Path) -> pd.DataFrame:
    """The parquet table at `path` (models/ngram/counts.parquet); StateError when damaged."""
    import pyarrow
    try:
        return pd.read_parquet(path)
    except (OSError, pyarrow.ArrowException) as error:
        why = "missing" if isinstance(error, FileNotFoundError) else "damaged, not a parquet table"
        raise files.StateError(f"{path}: {why}; {files.restore_hint(path.parent)}") from None


@dataclass
class Units:
    """data/prepared/units.npz as scoring reads it."""
    unit_of: dict[str, np.ndarray]    # split -> each sentence's resampling unit
    text: dict[str, np.ndarray]       # field (units.FIELDS) -> the test text's count per unit
    count: dict[str, int]             # split -> number of units


def read_units(data: Path, splits: dict[str, np.ndarray]) -> Units:
    """data/prepared/units.npz, checked against the sentences of `splits` (units.check). Raises
    FileNotFoundError when it is missing, errors.StateError when it does not fit."""
    path = data / units.FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (prepared before lmpipe measured resampling "
                                "units, or deleted); rerun `dvc repro prepare`")
    found = files.load_arrays(path, data,
                              tuple(f"{s}_{f}" for s in splits for f in ("unit", "chars")) +
                              tuple(f"test_{f}" for f in units.FIELDS))
    units.check(found, {s: int(np.count_nonzero(stream == BOS_ID)) for s, stream in splits.items()},
                path, data)
    return Units({s: found[f"{s}_unit"] for s in splits},
                 {field: found[f"test_{field}"] for field in units.FIELDS},
                 {s: len(found[f"{s}_chars"]) for s in splits})
