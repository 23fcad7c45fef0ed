"""Quality of one recurrent model configuration against Kneser-Ney, on the prepared data
(data/prepared, from `dvc repro`), without DVC or MLflow so that it runs on a bare GPU machine.
Trains with the same LitLM/loaders as the train stage, for at most --minutes, then scores the
test split through the same scoring path as evaluate. Prints JSON lines: the Kneser-Ney
baseline of --ngram-order, then the model's result.

    python benchmarks/quality.py --kind deep --minutes 8 \\
        --set train.max_epochs=40 models.deep.cell=gru models.deep.impl=fused ...
    python benchmarks/quality.py --kind deep --preset medium --minutes 60
"""

import argparse
import json
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

from pipeline import config
from pipeline.cli.presets import preset_overrides
from pipeline.evaluation import scoring
from pipeline.neural.lit import LitLM
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.ngram import counting, kneser_ney


def override(raw: dict, assignments: list[str]) -> dict:
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        node = raw
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return raw


class KeepBest(L.Callback):
    """Keeps the weights of the epoch with the lowest validation perplexity, as the train stage
    does with best.ckpt."""

    def __init__(self):
        self.best, self.state = math.inf, None

    def on_validation_end(self, trainer, lit):
        if lit.history and not trainer.sanity_checking and lit.history[-1]["val_ppl"] < self.best:
            self.best = lit.history[-1]["val_ppl"]
            self.state = {k: v.detach().clone() for k, v in lit.evaluation_model().state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", default="deep")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--ngram-order", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--preset", help="apply a preset of configs/presets.yaml first")
    parser.add_argument("--set", nargs="*", default=[], help="params overrides key=value")
    args = parser.parse_args()
    sets = [f"{k}={json.dumps(v)}" for k, v in preset_overrides(args.preset).items()] if args.preset else []
    params = config.from_dict(override(yaml.safe_load(Path("params.yaml").read_text()), sets + args.set))
    data = {name: np.load(args.data / f"{name}.npy") for name in ("train", "valid", "test")}
    vocab_size = len(json.loads((args.data / "vocab.json").read_text())["tokens"])

    counts = counting.count(data["train"], vocab_size, args.ngram_order)
    lm = kneser_ney.estimate(counts)
    kn = {s: scoring.summarize(scoring.ngram_logprobs(lm, data[s]))["ppl"] for s in ("valid", "test")}
    print(json.dumps({"model": f"kneser_ney_order{args.ngram_order}", "val_ppl": kn["valid"],
                      "test_ppl": kn["test"]}), flush=True)

    spec, train = params.models[args.kind], params.train
    L.seed_everything(params.seed, workers=True)
    model_config = ModelConfig(vocab_size=vocab_size, **spec.model_dump())
    lit = LitLM(RNNLM(model_config), train, data["train"], data["valid"], seed=params.seed)
    cuda = torch.cuda.is_available()
    precision = train.precision if train.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    trainer = L.Trainer(max_epochs=train.max_epochs, max_time={"minutes": args.minutes},
                        accelerator="auto", devices=1, precision=precision,
                        gradient_clip_val=train.clip or None, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        use_distributed_sampler=False, callbacks=[keep := KeepBest()],
                        reload_dataloaders_every_n_epochs=1 if train.variable_bptt else 0)
    started = time.perf_counter()
    trainer.fit(lit)
    seconds = time.perf_counter() - started
    if keep.state is not None:
        lit.model.load_state_dict(keep.state)
    device = "cuda" if cuda else "cpu"
    model = lit.model.to(device)
    if spec.bidirectional:
        logprobs = scoring.cloze_scores(model, data["test"], device=device).logprobs
    else:
        logprobs = scoring.causal_scores(model, data["test"], device=device).logprobs
    test_ppl = scoring.summarize(logprobs)["ppl"]
    epochs = len(lit.history)
    tokens = epochs * int(np.sum(data["train"] != 1)) * min(train.limit_train_batches, 1.0)
    print(json.dumps({"model": args.kind, "config": model_config.checkpoint(), "train": train.model_dump(),
                      "precision": precision, "device": torch.cuda.get_device_name() if cuda else "cpu",
                      "epochs": epochs, "train_seconds": round(seconds, 1),
                      "train_tokens_per_s": round(tokens / seconds) if seconds else None,
                      "val_ppl_history": [round(h["val_ppl"], 2) for h in lit.history],
                      "test_ppl": test_ppl,
                      "test_ppl_vs_kneser_ney": test_ppl / kn["test"] if math.isfinite(test_ppl) else None}),
          flush=True)


if __name__ == "__main__":
    main()
