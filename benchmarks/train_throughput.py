"""Training-step throughput of every model kind, textbook and fused cells, at the reference
configuration of pytorch/examples' word_language_model (embedding 200, hidden 200, bptt 35,
batch 20, SGD lr 20, clip 0.25, dropout 0.2) and a KJV-sized vocabulary; plus the bare nn.GRU
forward+backward of the same shapes as the floor. A step is what LitLM.training_step does
(forward, cross-entropy averaged over targets, backward, clipping, optimiser step), on token
windows drawn from a Zipf distribution over the vocabulary (p(rank r) ∝ 1/r, as word frequencies
are; only the adaptive softmax's cost depends on which words occur). Every kind x impl x output
layer (softmax: the full softmax, chunked on CPU; adaptive: Grave et al. 2017 with
--cutoffs). Warm-up steps first; the median of --runs runs of --steps steps. Prints JSON lines.

    .venv/bin/python benchmarks/train_throughput.py [--vocab-size 12800] [--runs 5]
        [--kinds rnn gru lstm] [--outputs softmax adaptive] [--cutoffs 2000 10000]
        [--examples PATH]   # a pytorch/examples checkout: its word_language_model LSTM at its
                            # defaults (2 x 200, dropout 0.2, SGD lr 20, clip 0.25) against our
                            # 2-layer lstm, textbook and fused, timed in alternation
"""

import argparse
import json
import statistics
import time

import torch

from pipeline.config import TrainParams
from pipeline.neural.lit import LitLM
from pipeline.neural.rnn import RNNLM, ModelConfig

KINDS = {"rnn": {"cell": "rnn"}, "gru": {"cell": "gru"}, "lstm": {"cell": "lstm"},
         "deep": {"cell": "rnn", "num_layers": 2}, "birnn": {"cell": "rnn", "bidirectional": True},
         "deep_gru": {"cell": "gru", "num_layers": 2},   # the reference's second configuration
         "deep_lstm": {"cell": "lstm", "num_layers": 2}}


def step_fn(lit, optimizer, tokens, state):
    """LitLM's own loss (the one training uses), then what the Trainer does around it."""
    if lit.cloze:
        batch = (tokens, torch.full((tokens.shape[0],), tokens.shape[1]))
    else:
        batch = (tokens[:, :-1], tokens[:, 1:])
    nll, count, state, _ = lit._loss_sum(batch, state)
    if state is not None:
        state = state.detach()
    loss = nll / count
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lit.parameters(), 0.25)
    optimizer.step()
    return state


def our_steps(args, tokens, **spec):
    """run_steps(n): n training steps of an RNNLM (`spec`: cell, impl, num_layers, ...) at the
    reference's sizes, SGD lr 20, the hidden state carried from step to step."""
    model = RNNLM(ModelConfig(vocab_size=args.vocab_size, embed_dim=args.dim, hidden_dim=args.dim,
                            dropout=0.2, **spec)).train()
    lit = LitLM(model, TrainParams(optimizer="sgd", lr=20.0, clip=0.25))
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)
    state = [None]

    def run_steps(n):
        for _ in range(n):
            state[0] = step_fn(lit, optimizer, tokens, state[0])
    return run_steps


def measure(run_steps, steps: int, runs: int, warmup: int = 3) -> float:
    run_steps(warmup)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run_steps(steps)
        times.append((time.perf_counter() - started) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab-size", type=int, default=12800)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--examples", help="path of a pytorch/examples checkout (compare its LSTM)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--impls", nargs="*", default=["textbook", "fused"])
    parser.add_argument("--outputs", nargs="*", default=["softmax", "adaptive"])
    parser.add_argument("--cutoffs", nargs="*", type=int, default=[2000, 10000])
    parser.add_argument("--compile", action="store_true",
                        help="also time textbook cells with compile: true (about a minute to compile each)")
    args = parser.parse_args()
    torch.manual_seed(0)
    zipf = 1.0 / torch.arange(1, args.vocab_size - 2, dtype=torch.float64)   # ids 3.. by frequency
    tokens = 3 + torch.multinomial(zipf, args.batch * (args.bptt + 1), replacement=True)
    tokens = tokens.view(args.batch, args.bptt + 1)
    common = {"threads": torch.get_num_threads(), "batch": args.batch, "bptt": args.bptt,
              "dim": args.dim, "vocab_size": args.vocab_size}
    if args.examples:
        compare_examples(args, tokens, common)
        return
    variants = [(impl, False) for impl in args.impls] + ([("textbook", True)] if args.compile else [])
    for kind in args.kinds:
        spec = KINDS[kind]
        for (impl, compiled), output in ((v, o) for v in variants for o in args.outputs):
            if compiled and spec.get("bidirectional"):
                continue
            layer = {"output_layer": output, "adaptive_cutoffs": tuple(args.cutoffs)}
            run_steps = our_steps(args, tokens, impl=impl, compile=compiled, **spec, **layer)
            started = time.perf_counter()
            run_steps(1)  # the first step compiles when compile is on
            first = time.perf_counter() - started
            seconds = measure(run_steps, args.steps, args.runs)
            print(json.dumps({**common, "kind": kind, "impl": impl + ("+compile" if compiled else ""),
                              "output_layer": output, "ms_per_batch": round(seconds * 1e3, 1),
                              "tokens_per_s": round(args.batch * args.bptt / seconds),
                              "first_step_s": round(first, 1)}), flush=True)
    gru = torch.nn.GRU(args.dim, args.dim, batch_first=True)
    x = torch.randn(args.batch, args.bptt, args.dim, requires_grad=True)

    def bare(n):
        for _ in range(n):
            out, _ = gru(x)
            out.sum().backward()
    seconds = measure(bare, args.steps, args.runs)
    print(json.dumps({**common, "kind": "bare nn.GRU forward+backward (floor)",
                      "ms_per_batch": round(seconds * 1e3, 2),
                      "tokens_per_s": round(args.batch * args.bptt / seconds)}), flush=True)


def compare_examples(args, tokens, common) -> None:
    """tokens/s of pytorch/examples' word_language_model step (its model.py, loaded from the
    checkout; main.py's loop: zero_grad, detach the hidden state, forward, NLL of log_softmax,
    backward, clip 0.25, p -= lr * grad) against LitLM's step with our 2-layer LSTM, textbook
    and fused. The three are timed in turn within each run; medians over runs."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "examples_model", Path(args.examples) / "word_language_model" / "model.py")
    examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(examples)
    theirs = examples.RNNModel("LSTM", args.vocab_size, args.dim, args.dim, 2, dropout=0.2).train()
    criterion = torch.nn.NLLLoss()
    data, targets = tokens[:, :-1].t().contiguous(), tokens[:, 1:].t().reshape(-1)   # (T, B)
    hidden = [theirs.init_hidden(args.batch)]

    def examples_steps(n):
        for _ in range(n):
            theirs.zero_grad()
            hidden[0] = tuple(h.detach() for h in hidden[0])
            output, hidden[0] = theirs(data, hidden[0])
            criterion(output, targets).backward()
            torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.25)
            for p in theirs.parameters():
                p.data.add_(p.grad, alpha=-20.0)

    contenders = {"pytorch/examples LSTM": examples_steps}
    for impl in ("textbook", "fused"):
        contenders[f"lmpipe lstm x2 {impl}"] = our_steps(args, tokens, cell="lstm", impl=impl,
                                                         num_layers=2)
    for run in contenders.values():
        run(3)   # warm-up
    times = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name, run in contenders.items():
            started = time.perf_counter()
            run(args.steps)
            times[name].append((time.perf_counter() - started) / args.steps)
    reference = statistics.median(times["pytorch/examples LSTM"])
    for name, measured in times.items():
        seconds = statistics.median(measured)
        print(json.dumps({**common, "kind": name, "ms_per_batch": round(seconds * 1e3, 1),
                          "tokens_per_s": round(args.batch * args.bptt / seconds),
                          "vs_examples": round(reference / seconds, 2)}), flush=True)


if __name__ == "__main__":
    main()
