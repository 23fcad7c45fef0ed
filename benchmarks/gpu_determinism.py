"""Same params and seed twice on a CUDA device: are the results identical? Trains with the train
stage's Trainer (pipeline.neural.lit.build_trainer: deterministic=True, its checkpoints, its precision
rule) on the first tokens of data/prepared, twice per configuration, and prints one JSON line
each: the validation perplexities of both runs and the largest weight difference. Also forces a
NaN on the GPU to show the loss check stops training there too. Needs torch + lightning only.
    PYTHONPATH=. python benchmarks/gpu_determinism.py [--tokens 200000] [--device cuda]"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from pipeline.config import TrainParams
from pipeline.neural.lit import LitLM, NumericsError, build_trainer
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.text.vocab import EOS_ID

CONFIGS = {   # name: (model settings, precision)
    "gru-fused-bf16": ({"cell": "gru", "impl": "fused"}, "bf16-mixed"),
    "gru-fused-fp32": ({"cell": "gru", "impl": "fused"}, "32-true"),
    "gru-textbook-fp32": ({"cell": "gru", "impl": "textbook"}, "32-true"),
    "birnn-fused-fp32": ({"cell": "rnn", "impl": "fused", "bidirectional": True}, "32-true"),
    "birnn-fused-bf16": ({"cell": "rnn", "impl": "fused", "bidirectional": True}, "bf16-mixed"),
}


def head(stream: np.ndarray, tokens: int) -> np.ndarray:
    """The whole sentences among the first `tokens` tokens of a stream."""
    ends = np.flatnonzero(stream[:tokens] == EOS_ID)
    return stream[:ends[-1] + 1]


def train_once(model_settings, precision, train_stream, valid_stream, vocab_size, accelerator):
    L.seed_everything(1337, workers=True)
    params = TrainParams(max_epochs=2, batch_size=32, bptt=35, lr=0.002, clip=0.25, eval_batch_size=16,
                         precision=precision, accelerator=accelerator, checkpoint_every_n_steps=0)
    model = RNNLM(ModelConfig(vocab_size=vocab_size, embed_dim=256, hidden_dim=256, dropout=0.3,
                            **model_settings))
    lit = LitLM(model, params, train_stream, valid_stream, seed=1337)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(params, Path(scratch), Path(scratch), logger=False)
        trainer.fit(lit)
    weights = {k: v.detach().float().cpu() for k, v in lit.model.state_dict().items()}
    return [h["val_ppl"] for h in lit.history], weights


class Poison(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_index):
        if trainer.global_step == 30:
            with torch.no_grad():
                module.model.embedding.weight[:, 0] = float("nan")


def nan_check(train_stream, valid_stream, vocab_size, accelerator):
    params = TrainParams(max_epochs=1, batch_size=32, bptt=35, accelerator=accelerator,
                         checkpoint_every_n_steps=10)
    lit = LitLM(RNNLM(ModelConfig(vocab_size=vocab_size, cell="gru", impl="fused", embed_dim=64,
                                hidden_dim=64)), params, train_stream, valid_stream, seed=0)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(params, Path(scratch), Path(scratch), logger=False)
        trainer.callbacks.append(Poison())
        try:
            trainer.fit(lit)
            return {"nan_check": "NOT STOPPED"}
        except NumericsError as error:
            saved = torch.load(Path(scratch) / "last.ckpt", weights_only=True)
            finite = all(bool(torch.isfinite(t).all()) for t in saved["state_dict"].values())
            return {"nan_check": str(error), "last_ckpt_step": saved["global_step"],
                    "last_ckpt_finite": finite}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), help="configurations to run")
    parser.add_argument("--no-nan-check", action="store_true")
    args = parser.parse_args()
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    if accelerator == "gpu" and not torch.cuda.is_available():
        sys.exit("gpu_determinism: no CUDA device visible to torch")
    data = Path(args.data)
    vocab_size = len(json.loads((data / "vocab.json").read_text())["tokens"])
    train_stream = head(np.load(data / "train.npy"), args.tokens)
    valid_stream = head(np.load(data / "valid.npy"), args.tokens // 10)
    print(json.dumps({"device": torch.cuda.get_device_name() if accelerator == "gpu" else "cpu",
                      "torch": torch.__version__, "lightning": L.__version__,
                      "train_tokens": len(train_stream)}), flush=True)
    for name, (settings, precision) in CONFIGS.items():
        if name not in args.only or (accelerator == "cpu" and precision != "32-true"):
            continue
        started = time.perf_counter()
        try:
            (ppl_a, w_a), (ppl_b, w_b) = (train_once(settings, precision, train_stream, valid_stream,
                                                     vocab_size, accelerator) for _ in range(2))
        except Exception as error:   # report and go on: one failing config must not hide the rest
            print(json.dumps({"config": name, "error": f"{type(error).__name__}: {error}"[:800]}),
                  flush=True)
            continue
        diff = max(float((w_a[k] - w_b[k]).abs().max()) for k in w_a)
        print(json.dumps({"config": name, "val_ppl_run1": ppl_a, "val_ppl_run2": ppl_b,
                          "identical": ppl_a == ppl_b and diff == 0.0, "max_weight_diff": diff,
                          "seconds_for_both": round(time.perf_counter() - started, 1)}), flush=True)
    if not args.no_nan_check:
        print(json.dumps(nan_check(train_stream, valid_stream, vocab_size, accelerator)), flush=True)


if __name__ == "__main__":
    main()
