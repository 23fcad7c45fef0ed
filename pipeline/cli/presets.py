"""Presets: named sets of params.yaml overrides (configs/presets.yaml). Out: {dotted key: value},
checked against params.yaml and its schema, printed by `lmpipe preset` as `dvc exp run -S` flags."""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any

from pipeline.config import ParamsError, from_dict
from pipeline.files import read_yaml


def preset_overrides(name: str, params_path: str | Path = "params.yaml",
                     presets_path: str | Path = "configs/presets.yaml") -> dict[str, Any]:
    """The `set` overrides of preset `name`, each a key of params.yaml, the result valid."""
    presets = read_yaml(presets_path) or {}
    if name not in presets:
        raise ParamsError(f"NAME {name!r}: no such preset in {presets_path}; use one of {', '.join(presets)}")
    overrides = presets[name].get("set") or {}
    raw = read_yaml(params_path)
    for key, value in overrides.items():
        *path, last = str(key).split(".")
        node = functools.reduce(lambda node, part: node.get(part) if isinstance(node, dict) else None, path, raw)
        if not isinstance(node, dict) or last not in node:
            raise ParamsError(f"{presets_path}: {name}.set.{key}: params.yaml has no such key")
        node[last] = value
    from_dict(raw, f"{presets_path}: preset {name}: ")
    return dict(overrides)


def preset(args) -> None:
    """Print preset NAME as `-S key=value` flags for `dvc exp run`."""
    flags = []
    for key, value in preset_overrides(args.name, args.params, args.presets).items():
        # lists compact ([2000,10000]) and no quotes where none are needed: `$(lmpipe preset X)`
        # splits words but does not remove quotes
        text = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) \
            else json.dumps(value, separators=(",", ":"))
        flags += ["-S", f"{key}={text}"]
    print(" ".join(f if not any(c.isspace() or c in "'\"\\" for c in f) else shlex.quote(f)
                   for f in flags))
