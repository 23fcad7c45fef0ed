"""Presets: named sets of params.yaml overrides (configs/presets.yaml), checked against params.yaml
and its schema. Out: {dotted key: value}, as `lmpipe preset` prints them for `dvc exp run -S`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import ParamsError, from_dict
from pipeline.files import read_yaml


def preset_overrides(name: str, params_path: str | Path = "params.yaml",
                     presets_path: str | Path = "configs/presets.yaml") -> dict[str, Any]:
    """The `set` overrides of preset `name`, checked: every key exists in params.yaml and the
    overridden params validate. Returns {dotted key: value}."""
    presets_path = Path(presets_path)
    if not presets_path.is_file():
        raise ParamsError(f"{presets_path}: presets file not found; run from the repository root")
    presets = read_yaml(presets_path) or {}
    if name not in presets:
        raise ParamsError(f"{presets_path}: no preset {name!r}; known: {', '.join(presets)}")
    overrides = presets[name].get("set") or {}
    raw = read_yaml(params_path)
    for key, value in overrides.items():
        node = raw
        *path, last = str(key).split(".")
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise ParamsError(f"{presets_path}: {name}.set.{key}: no {part!r} in params.yaml")
            node = node[part]
        if not isinstance(node, dict) or last not in node:
            raise ParamsError(f"{presets_path}: {name}.set.{key}: params.yaml has no such key")
        node[last] = value
    try:
        from_dict(raw)
    except ParamsError as error:
        raise ParamsError(f"{presets_path}: preset {name}: {error}") from None
    return dict(overrides)


