"""Probes: the file of evaluate.probes (configs/probes.yaml), one pydantic model per probe.
In: the YAML file. Out: the probes as dicts. Raises ParamsError naming the file, the probe, the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.config import ParamsError
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


def refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("probe", "{message}", {"message": message})


Word = Annotated[str, StringConstraints(pattern=r"^\S+$")]   # one word: no whitespace


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
        if (self.rank is None) == (self.text is None):
            raise refuse("has both rank: and text:; a probe ranks sentences or fills a blank, so "
                         "split it in two" if self.rank is not None else
                         "needs rank: (sentences to rank) or text: (a sentence with one ___ to "
                         "fill); add one")
        if self.rank is not None:
            extra = [key for key in ("options", "top", "open") if getattr(self, key) is not None]
            if extra:
                raise refuse(f"{extra[0]} belongs to a text: probe (a blank to fill), not to "
                             "rank:; remove it")
            for sentence in self.rank:
                if sentence.count(BLANK) > 1:
                    raise refuse(f"rank sentence {sentence!r} has {sentence.count(BLANK)} {BLANK}; "
                                 "a ranked sentence is scored whole, remove them")
            return self
        blanks = self.text.count(BLANK)
        if blanks != 1:
            raise refuse(f"text {self.text!r} has {blanks or 'no'} {BLANK}; mark the one word to "
                         f"fill with {BLANK} (or use rank: to score whole sentences)")
        if self.options is None and self.top is None:
            raise refuse("a text: probe needs options: [words] (which of them fits the blank) or "
                         "top: K (the K best words of the vocabulary); without either it would "
                         "list every word of the vocabulary")
        return self


def load_probes(path: str | Path, encode=None, tokenizer: str = "words") -> list[dict]:
    """The probes of the YAML file at `path` (evaluate.probes), each checked before any scoring
    by a pydantic model: a mapping with rank: (a non-empty list of sentences) or text: (a
    sentence with exactly one ___) and options: (a list of words) and/or top: (a whole number
    >= 1), open: (true or false) for text probes only, name: and about: strings, no other key.
    Returns them as dicts without the keys left null. With `encode` (text -> token ids under
    the corpus's tokenizer), every option must also be one token, except under the chars
    tokenizer, where a word of several characters is a probe evaluate skips (as before).
    Raises ParamsError, one line naming the file, the probe (its number from 1 and its name),
    the key and the fix: a missing file, not YAML (read_yaml), empty, not a list of mappings,
    or a probe that breaks a rule above."""
    path = Path(path)
    shown = relative(path)
    if not path.is_file():
        raise ParamsError(f"evaluate.probes={str(shown)!r}: no such file; point it at a probes "
                          "YAML file (see configs/probes.yaml)")
    raw = read_yaml(shown)   # its messages name the file as this one's do
    if raw is None:
        raise ParamsError(f"{shown}: is empty; give a list of probes (`git checkout "
                          "configs/probes.yaml` restores the repository's), or [] for none")
    if not isinstance(raw, list):
        raise ParamsError(f"{shown}: must be a list of probes (mappings with rank: or text:), not "
                          f"{_yaml_value(raw)}; fix the file")
    probes = []
    for number, item in enumerate(raw, start=1):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{shown}: probe {number}" + (f" ({name!r})" if isinstance(name, str) else "")
        if not isinstance(item, dict):
            raise ParamsError(f"{where}: must be a mapping (name:, rank: or text:, ...), not "
                              f"{_yaml_value(item)}; fix the file")
        try:
            probe = Probe.model_validate(item).model_dump(exclude_none=True)
        except ValidationError as error:
            raise ParamsError(f"{where}: {_probe_problem(error, item)}") from None
        if encode is not None and TOKENIZERS[tokenizer].tokens_are_words:
            for option in probe.get("options", []):
                count = len(encode(option))
                if count != 1:
                    raise ParamsError(
                        f"{where}: options: {option!r} is {count} tokens under corpus.tokenizer "
                        f"{tokenizer}; a fill puts one token in the blank, so give single words")
        probes.append(probe)
    return probes


def _probe_problem(error, item: dict) -> str:
    """What is wrong with a probe, from pydantic's first complaint."""
    first = error.errors()[0]
    if first["type"] == "probe":   # one_task's own sentence, with its fix
        return first["msg"]
    key = first["loc"][0] if first["loc"] else None
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(key), list(PROBE_KEYS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown key {key!r}{hint} (a probe has {', '.join(PROBE_KEYS)}); fix the file"
    return f"{key} must be {PROBE_KEYS[key]}, not {_yaml_value(item.get(key))}; fix the file"


def _yaml_value(value: Any, limit: int = 80) -> str:
    """A value as short YAML-like text for a message: true, null, [1, 2], 'abc'."""
    if isinstance(value, bool) or value is None:
        text = as_written(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(_yaml_value(v, limit) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


