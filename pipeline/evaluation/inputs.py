"""Evaluate's inputs, checked before any scoring: data/prepared/stats.json and units.npz,
models/KIND/history.json, models/ngram/counts.parquet; the scores before they are written.
Errors: errors.StateError, one line naming the file (or model), what is wrong and the fix."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline import files
from pipeline.errors import first_complaint
from pipeline.evaluation.models import retrain_hint
from pipeline.text import units
from pipeline.text.vocab import BOS_ID


class Checked(BaseModel):   # other keys pass: only what evaluate reads is checked
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class SplitStats(Checked):
    oov_rate: float = Field(ge=0, le=1)


class Stats(Checked):
    corpus_hash: str = Field(min_length=1)
    valid: SplitStats
    test: SplitStats
    split_method: str = ""
    interval_unit: str = ""


class Epoch(Checked):
    epoch: int = Field(ge=0)
    val_ppl: float = Field(ge=1)
    step: int = Field(0, ge=0)   # written since lmpipe recorded it


def _read(path: Path, schema, folder: Path, fix: str):
    """The JSON file at `path` as `schema` (a model or a list of one) validates it; else
    StateError naming the file, the key and `fix`."""
    value = files.read_json(path, folder, list if typing.get_origin(schema) is list else dict, fix=fix)
    try:
        TypeAdapter(schema).validate_python(value)
    except ValidationError as error:
        raise files.damaged(path, first_complaint(error), folder, fix) from None
    return value


def read_stats(data: Path) -> dict:
    """data/prepared/stats.json: corpus_hash, valid and test (each an oov_rate in [0, 1])."""
    path = data / "stats.json"
    return _read(path, Stats, data,
                 f"restore it with `git checkout {path}` or rebuild it with `dvc repro -f prepare`")


def read_history(path: Path) -> list[dict]:
    """models/KIND/history.json: one entry per epoch, with epoch, val_ppl and step."""
    return _read(path, list[Epoch], path.parent, retrain_hint(path.parent))


def check_finite(name: str, result: dict, weights: str) -> None:
    """StateError naming model `name`, its non-finite metrics and its file's fix, if any."""
    bad = [f"{k}={v}" for k, v in result.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise files.damaged(weights, f"the scores of {name} are not finite ({', '.join(bad[:3])}"
                            f"{', ...' if len(bad) > 3 else ''}); nothing is written, logged or "
                            "registered", fix=retrain_hint(Path(weights).parent))


def read_table(path: Path) -> pd.DataFrame:
    """The parquet table at `path`; StateError when missing or damaged."""
    import pyarrow
    try:
        return pd.read_parquet(path)
    except (OSError, pyarrow.ArrowException) as error:
        missing = isinstance(error, FileNotFoundError)
        raise files.damaged(path, "missing" if missing else "damaged, not a parquet table") from None


@dataclass
class Units:
    """data/prepared/units.npz as scoring reads it."""
    unit_of: dict[str, np.ndarray]    # split -> each sentence's resampling unit
    text: dict[str, np.ndarray]       # field (units.FIELDS) -> the test text's count per unit
    count: dict[str, int]             # split -> number of units


def read_units(data: Path, splits: dict[str, np.ndarray]) -> Units:
    """data/prepared/units.npz, checked against the sentences of `splits` (units.check)."""
    path = data / units.FILE
    found = files.load_arrays(path, data,
                              tuple(f"{s}_{f}" for s in splits for f in ("unit", "chars")) +
                              tuple(f"test_{f}" for f in units.FIELDS))
    units.check(found, {s: int(np.count_nonzero(stream == BOS_ID)) for s, stream in splits.items()},
                path, data)
    return Units({s: found[f"{s}_unit"] for s in splits},
                 {field: found[f"test_{field}"] for field in units.FIELDS},
                 {s: len(found[f"{s}_chars"]) for s in splits})
