"""Probes: the file of evaluate.probes (configs/probes.yaml), one pydantic model per probe.
In: the YAML file. Out: the probes as dicts. Raises ParamsError naming the file, the probe, the key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import ParamsError, refuse
from pipeline.evaluation.tasks import BLANK
from pipeline.files import read_yaml, relative
from pipeline.text.tokenizers import TOKENIZERS
from pipeline.validation import problem

Word = Annotated[str, Field(pattern=r"^\S+$")]   # one word: no whitespace


class Probe(BaseModel):
    """One probe; validation.problem words pydantic's complaints (a description: what is allowed)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = None
    about: str | None = None
    rank: list[str] | None = Field(None, min_length=1, description="list one or more sentences, "
                                                                   "e.g. [i saw it, saw i it]")
    text: str | None = None
    options: list[Word] | None = Field(None, min_length=1, description="list one or more single "
                                                                       "words, e.g. [are, is]")
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
    """The probes at `path` as dicts without null keys; given `encode` and a word tokenizer, each
    option one token. ParamsError naming the file, the probe (number from 1, name) and the key."""
    path = Path(path)
    shown = relative(path)
    if not path.is_file():
        raise ParamsError(f"evaluate.probes={str(shown)!r}: no such file; see configs/probes.yaml")
    raw = read_yaml(shown)   # its messages name the file as this one's do
    empty = "is empty; `git checkout configs/probes.yaml`, or [] for none"
    if not isinstance(raw, list):
        raise ParamsError(f"{shown}: {empty if raw is None else f'must be a list, not {raw!r}'}")
    probes = []
    for number, item in enumerate(raw, start=1):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{shown}: probe {number}" + (f" ({name!r})" if isinstance(name, str) else "")
        if not isinstance(item, dict):
            raise ParamsError(f"{where}: must be a mapping (name:, rank: or text:), not {item!r}")
        try:
            probe = Probe.model_validate(item).model_dump(exclude_none=True)
        except ValidationError as error:
            raise ParamsError(f"{where}: {problem(error, Probe, item)}") from None
        if encode is not None and TOKENIZERS[tokenizer].tokens_are_words:
            for option in probe.get("options", []):
                count = len(encode(option))
                if count != 1:
                    raise ParamsError(f"{where}: options: {option!r} is {count} tokens under "
                                      f"corpus.tokenizer {tokenizer}; give single words")
        probes.append(probe)
    return probes
