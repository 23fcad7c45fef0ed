"""Pydantic's first complaint as lmpipe's one line: `problem` for params.yaml and the probes (key,
value, what is allowed, a guess), `first_complaint` for a file lmpipe wrote. Kept apart from
errors.py, whose commands do not all load pydantic (0.08 s of a start-up)."""

from __future__ import annotations

import difflib
import functools
import reprlib
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError

EXPECTED = {"bool_type": "true or false", "int_type": "a whole number", "float_type": "a number",
            "string_type": "a string", "tuple_type": "a list of whole numbers, e.g. [2000, 10000]"}
RANGES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
SAYS = {   # pydantic's error type -> the line (other types: "has the wrong type; expected {msg}")
    **{kind: f"{{key}}={{value!r}} has the wrong type; expected {what}" for kind, what in EXPECTED.items()},
    **dict.fromkeys(("model_type", "dict_type"), "{key} must be a mapping of keys to values, got {value!r}"),
    "too_short": "{key} must {info.description}",
    "list_type": "{key}={value!r} has the wrong type; {info.description}",
    "literal_error": "{key}={value!r} is not allowed; use one of {allowed}",
    **dict.fromkeys(RANGES, "{key}={value!r} is out of range; {bounds}"),
    "string_pattern_mismatch": "{key}={value!r} is not allowed; {info.description}",
    "value_error": "{key}={value!r}: {ctx[error]}",   # a field validator's (or parse_size's)
    "finite_number": "{key}={value!r} is not a finite number; give a real value",
}


def _range(metadata: list) -> str:
    """`use 1..6`, `use a value in [0, 1)` or `it must be >= 1`: what a field's bounds allow."""
    low, high = (next((m for m in metadata if isinstance(m, kinds)), None) for kinds in (Ge | Gt, Le | Lt))
    lo, hi = (getattr(m, type(m).__name__.lower(), None) for m in (low, high))
    if low is None or high is None:
        return f"it must be {({Ge: '>=', Gt: '>', Le: '<=', Lt: '<'})[type(low or high)]} {lo if low else hi}"
    if isinstance(low, Ge) and isinstance(high, Le) and isinstance(lo, int) and isinstance(hi, int):
        return f"use {lo}..{hi}"
    return f"use a value in {'[(' [isinstance(low, Gt)]}{lo}, {hi}{'])' [isinstance(high, Lt)]}"


def problem(error: ValidationError, schema: type[BaseModel], raw: Any) -> str:
    """The line for pydantic's first complaint about `raw`: key, value, what is allowed, a guess."""
    first = error.errors(include_url=False)[0]
    loc, kind = first["loc"], first["type"]
    model, where, at = schema, [], 0
    while at + 1 < len(loc):   # into a section, or a dict of models and its key
        annotation = model.model_fields[str(loc[at])].annotation
        if typing.get_origin(annotation) is dict:
            where, model, at = [*where, str(loc[at]), str(loc[at + 1])], typing.get_args(annotation)[1], at + 2
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            where, model, at = [*where, str(loc[at])], annotation, at + 1
        else:   # an item of a field's list: the message shows the whole list
            break
    field = str(loc[at]) if at < len(loc) else ""
    info = model.model_fields.get(field)
    value = functools.reduce(lambda node, part: node.get(part) if isinstance(node, dict) else None, loc[:at + 1], raw)
    key = ".".join([*where, field] if field else where) or "params"
    if kind == "params":   # a rule's own sentence; {where} is its model's dotted name
        whole = info is None or isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        return first["ctx"]["message"].replace("{where}", key if whole else ".".join(where))
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(field, list(model.model_fields), n=1)
        hint = f"; did you mean {'.'.join([*where, close[0]])}?" if close else ""
        return (f"unknown {'key ' + key if where else f'top-level key {field!r}'}{hint} "
                f"(allowed: {', '.join(model.model_fields)})")
    annotation = getattr(info, "annotation", None)
    kind = "tuple_type" if typing.get_origin(annotation) is tuple else kind   # a list: its type
    return SAYS.get(kind, "{key}={value!r} has the wrong type; expected {msg}").format(
        key=key, value=value, info=info, ctx=first.get("ctx"), msg=first["msg"],
        allowed=", ".join(map(str, typing.get_args(annotation))), bounds=kind in RANGES and _range(info.metadata))


def first_complaint(error: ValidationError) -> str:
    """`KEY is missing` or `KEY is VALUE: why` for pydantic's first complaint about a file's
    contents: KEY dotted, a list's item `entry N`, the whole value `the whole file`."""
    first = error.errors(include_url=False)[0]
    key = ".".join(f"entry {k}" if isinstance(k, int) else str(k) for k in first["loc"]) or "the whole file"
    return f"{key} is " + ("missing" if first["type"] == "missing" else f"{reprlib.repr(first['input'])}: {first['msg']}")
