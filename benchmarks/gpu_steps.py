"""Fixed-step GPU training of every model kind in bf16-mixed and fp32 (see gpu.sh): the loss of
LitLM (the one the train stage uses), backward, clipping, AdamW step, on a CUDA device; warm-up
steps first, then --steps timed steps. Prints JSON lines: tokens/s and peak memory."""

import argparse
import json
import sys
import time

import torch

from benchmarks.train_throughput import step_fn
from pipeline.config import TrainParams
from pipeline.neural.lit import LitLM
from pipeline.neural.rnn import RNNLM, ModelConfig

KINDS = {"rnn": {"cell": "rnn"}, "gru": {"cell": "gru"},
         "birnn": {"cell": "rnn", "bidirectional": True},
         "deep": {"cell": "gru", "num_layers": 2}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab-size", type=int, default=12800)
    parser.add_argument("--dim", type=int, default=650)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu for a smoke test")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("gpu_steps: no CUDA device visible to torch")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    print(json.dumps({"device": torch.cuda.get_device_name() if cuda else "cpu",
                      "torch": torch.__version__,
                      "cudnn": torch.backends.cudnn.version() if cuda else None}), flush=True)
    tokens = torch.randint(3, args.vocab_size, (args.batch, args.bptt + 1), device=device)
    for kind, spec in KINDS.items():
        for precision in ("bf16-mixed", "32-true"):
            config = ModelConfig(vocab_size=args.vocab_size, impl="fused", embed_dim=args.dim,
                               hidden_dim=args.dim, dropout=0.5,
                               tie_weights=not spec.get("bidirectional"), **spec)
            model = RNNLM(config).to(device).train()
            lit = LitLM(model, TrainParams(optimizer="adamw", lr=2e-3, clip=0.25))
            optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
            autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                      enabled=precision == "bf16-mixed")
            state = None
            sync = torch.cuda.synchronize if cuda else (lambda: None)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with autocast:
                for _ in range(10):
                    state = step_fn(lit, optimizer, tokens, state)
                sync()
                started = time.perf_counter()
                for _ in range(args.steps):
                    state = step_fn(lit, optimizer, tokens, state)
                sync()
            seconds = (time.perf_counter() - started) / args.steps
            print(json.dumps({"kind": kind, "precision": precision, "dim": args.dim,
                              "batch": args.batch, "bptt": args.bptt, "vocab_size": args.vocab_size,
                              "ms_per_step": round(seconds * 1e3, 2),
                              "tokens_per_s": round(args.batch * args.bptt / seconds),
                              "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20)
                              if cuda else None}),
                  flush=True)
            del model, lit, optimizer


if __name__ == "__main__":
    main()
