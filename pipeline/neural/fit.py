"""Training inputs and outputs of one recurrent model (train@KIND). In: params, data/prepared.
Out: models/KIND/model.pt (config + state_dict of the best validation epoch), history.json,
run.json; then the checkpoint folder (resume.folder) goes, and old ones beyond resume.prune's
bound: only here, so a failed training removes none. MLflow is the caller's (tracking/)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from pipeline import files
from pipeline.config import Params
from pipeline.neural import resume
from pipeline.neural.batches import check_data
from pipeline.neural.devices import check_machine
from pipeline.neural.lit import LitLM
from pipeline.neural.rnn import ModelConfig
from pipeline.text.vocab import check_ids, load_vocab


@dataclass(frozen=True)
class Inputs:
    model: ModelConfig
    streams: tuple[np.ndarray, np.ndarray]   # train, valid token ids (memory-mapped)
    seed: int
    corpus_hash: str
    fingerprint: str   # of everything a resumed run must share with the interrupted one


def inputs(params: Params, kind: str, data: Path) -> Inputs:
    """Checked inputs of train@KIND: the machine, data/prepared, the model's config and seed.
    Raises ValueError (an unknown KIND), ParamsError or StateError naming the key or file."""
    if kind not in params.models:
        raise ValueError(f"no models.{kind} in params.yaml; known: {', '.join(params.models)}")
    spec, train = params.models[kind], params.train
    check_machine(train)
    vocab_size = len(load_vocab(data))
    corpus = files.read_json(data / "stats.json", required=("corpus_hash",))["corpus_hash"]
    # memory-mapped: each DDP rank reads its own columns of train.npy through the page cache
    streams = tuple(files.load_array(data / f"{s}.npy", mmap_mode="r") for s in ("train", "valid"))
    for split, stream in zip(("train", "valid"), streams, strict=True):
        check_ids(stream, vocab_size, data / f"{split}.npy", data)
    check_data(spec.bidirectional, *streams, train, world=train.devices * train.num_nodes)
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    seed = params.seed if spec.seed is None else spec.seed   # a seed sweep reruns one model
    L.seed_everything(seed, workers=True, verbose=False)
    model = ModelConfig.of(kind, spec, vocab_size)
    fp = resume.fingerprint(model.checkpoint(), train.model_dump(), seed, corpus)
    return Inputs(model, streams, seed, corpus, fp)


def save(lit: LitLM, ckpts: Path, out: Path, run_id: str, precision: str) -> float:
    """Write models/KIND, whole or not at all, from best.ckpt's weights (resume.best_weights), then
    remove `ckpts` and prune the kind's old folders. Returns the best validation perplexity."""
    best = ckpts / resume.BEST
    if best.exists():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        lit.model.load_state_dict(resume.best_weights(state))
    with files.staged_dir(out) as scratch:
        torch.save(lit.model.checkpoint(), scratch / "model.pt")
        (scratch / "history.json").write_text(json.dumps(lit.history, indent=2))
        (scratch / "run.json").write_text(json.dumps({"run_id": run_id, "precision": precision},
                                                     indent=2))
    shutil.rmtree(ckpts)
    resume.prune(ckpts)
    return min((h["val_ppl"] for h in lit.history), default=float("nan"))

