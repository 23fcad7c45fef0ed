"""Presets: named sets of params.yaml overrides (configs/presets.yaml), checked against params.yaml
and its schema. Out: {dotted key: value}, as `lmpipe preset` prints them for `dvc exp run -S`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pipeline import files
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


def preset(args) -> None:
    """Print a preset as `-S key=value` flags for `dvc exp run` (or its description). Raises
    ValueError naming --params, --presets or NAME when the file or the preset is missing."""
    for flag, path in (("--params", args.params), ("--presets", args.presets)):
        if not path.is_file():
            raise ValueError(f"{flag} {str(path)!r}: no such file in {Path.cwd()}; cd to the lmpipe "
                             f"repository's root folder, or give {flag} the file's path")
    known = files.read_yaml(args.presets) or {}
    if args.name not in known:
        raise ValueError(f"NAME {args.name!r}: no such preset in {args.presets}; use one of "
                         f"{', '.join(known)}")
    overrides = preset_overrides(args.name, args.params, args.presets)
    flags = []
    for key, value in overrides.items():
        # lists compact ([2000,10000]) and no quotes where none are needed: `$(lmpipe preset X)`
        # splits words but does not remove quotes
        text = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) \
            else json.dumps(value, separators=(",", ":"))
        flags += ["-S", f"{key}={text}"]
    print(" ".join(f if not any(c.isspace() or c in "'\"\\" for c in f) else shlex.quote(f)
                   for f in flags))
