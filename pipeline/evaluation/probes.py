"""Probes: the file of evaluate.probes (configs/probes.yaml), one pydantic model per probe.
In: the YAML file. Out: the probes as dicts. Raises ParamsError naming the file, the probe, the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import ParamsError, refuse
from pipeline.errors import as_written
from pipeline.evaluation.tasks import BLANK
from pipeline.files import read_yaml, relative
from pipeline.text.tokenizers import TOKENIZERS

PROBE_KEYS = {  # each key of a probe and what its value must be
    "name": "a string naming the probe (quoted where YAML would read a number: '5')",
    "about": "a string (one line saying what the probe shows)",
    "rank": "a list of sentences, e.g. [i saw it, saw i it]",
    "text": "a sentence with one ___ (the blank to fill)",
    "options": "a list of words, e.g. [are, is]",
    "top": "a whole number >= 1 (how many of the vocabulary's best words to list)",
    "open": "true or false",
}


Word = Annotated[str, Field(pattern=r"^\S+$")]   # one word: no whitespace


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = None
    about: str | None = None
    rank: list[str] | None = Field(None, min_length=1)
    text: str | None = None
    options: list[Word] | None = Field(None, min_length=1)
    top: int | None = Field(None, ge=1)
    open: bool | None = None

    @model_validator(mode="after")
    def one_task(self) -> Probe:
        problem = next(self._problems(), None)
        if problem:
            raise refuse(problem)
        return self

    def _problems(self):
        if (self.rank is None) == (self.text is None):
            yield ("has both rank: and text:; split it in two" if self.rank is not None else
                   "needs rank: (sentences) or text: (a sentence with one ___); add one")
        elif self.rank is not None:
            yield from (f"{key} belongs to a text: probe, not to rank:; remove it"
                        for key in ("options", "top", "open") if getattr(self, key) is not None)
            yield from (f"rank sentence {s!r} has {s.count(BLANK)} {BLANK}; remove them"
                        for s in self.rank if s.count(BLANK) > 1)
        elif self.text.count(BLANK) != 1:
            yield (f"text {self.text!r} has {self.text.count(BLANK) or 'no'} {BLANK}; mark the one "
                   f"word to fill with {BLANK}")
        elif self.options is None and self.top is None:
            yield "a text: probe needs options: [words] or top: K; add one"


def load_probes(path: str | Path, encode=None, tokenizer: str = "words") -> list[dict]:
    """The probes of the YAML file at `path` as dicts without null keys, each checked by Probe
    and, given `encode` (text -> ids) and a tokenizer of words, each option one token. Raises
    ParamsError naming the file, the probe (number from 1, name), the key and the fix."""
    path = Path(path)
    shown = relative(path)
    if not path.is_file():
        raise ParamsError(f"evaluate.probes={str(shown)!r}: no such file; see configs/probes.yaml")
    raw = read_yaml(shown)   # its messages name the file as this one's do
    empty = "is empty; `git checkout configs/probes.yaml`, or [] for none"
    if not isinstance(raw, list):
        raise ParamsError(f"{shown}: {empty if raw is None else f'must be a list, not {_yaml_value(raw)}'}")
    probes = []
    for number, item in enumerate(raw, start=1):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{shown}: probe {number}" + (f" ({name!r})" if isinstance(name, str) else "")
        if not isinstance(item, dict):
            raise ParamsError(f"{where}: must be a mapping (name:, rank: or text:), not {_yaml_value(item)}")
        try:
            probe = Probe.model_validate(item).model_dump(exclude_none=True)
        except ValidationError as error:
            raise ParamsError(f"{where}: {_probe_problem(error, item)}") from None
        if encode is not None and TOKENIZERS[tokenizer].tokens_are_words:
            for option in probe.get("options", []):
                count = len(encode(option))
                if count != 1:
                    raise ParamsError(f"{where}: options: {option!r} is {count} tokens under "
                                      f"corpus.tokenizer {tokenizer}; give single words")
        probes.append(probe)
    return probes


def _probe_problem(error, item: dict) -> str:
    first = error.errors()[0]
    if first["type"] == "params":   # one_task's own sentence, with its fix
        return first["msg"]
    key = first["loc"][0] if first["loc"] else None
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(key), list(PROBE_KEYS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown key {key!r}{hint} (a probe has {', '.join(PROBE_KEYS)}); fix the file"
    return f"{key} must be {PROBE_KEYS[key]}, not {_yaml_value(item.get(key))}; fix the file"


def _yaml_value(value: Any, limit: int = 80) -> str:
    """A value as short YAML-like text: true, null, [1, 2], 'abc'."""
    if isinstance(value, bool) or value is None:
        text = as_written(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(_yaml_value(v, limit) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


