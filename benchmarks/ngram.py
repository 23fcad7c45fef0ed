"""N-gram build and query: wall time, peak RSS and scoring throughput at orders 3 and 5, on
(a) the KJV train split and (b) 10 copies of it whose tokens carry a per-copy suffix (every
copy's n-grams are distinct; about 8.5M tokens). Every measurement is a fresh process
(`lmpipe ngram build|query`), its peak RSS read with wait4. With --lmplz PATH, KenLM's lmplz
runs back to back on the same input (A B A B ..), both with the memory budget --memory (lmpipe's
and lmplz's -S; default 100M; --lmpipe-default: lmpipe without -S, its default). --build-only
skips the query and scoring. Prints one JSON line per measurement and a median line.

    .venv/bin/python benchmarks/ngram.py --repeat 3 [--lmplz /path/to/lmplz] [--orders 3 5] [--memory 100M]
        [--lmpipe-default] [--build-only]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline import config, files
from pipeline.text import chunked
from pipeline.text.vocab import load_vocab, sentence_bounds

SCORE = """
import json, sys, time
import numpy as np
from pipeline.ngram import arpa
from pipeline.text.vocab import Vocab
model, tokens = arpa.read(sys.argv[1])
vocab = Vocab(tokens)
stream = vocab.stream([line.split() for line in open(sys.argv[2], encoding="utf-8") if line.split()])
best = float("inf")
for _ in range(3):
    started = time.perf_counter()
    model.log10_probs(stream)
    best = min(best, time.perf_counter() - started)
print(json.dumps({"tokens": int((stream != 1).sum()), "seconds": best}))
"""


MEASURE = ("import resource, subprocess, sys, time; started = time.perf_counter(); "
           "status = subprocess.call(sys.argv[1:], stderr=subprocess.DEVNULL); "
           "print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "file=sys.stderr); sys.exit(status)")


def measure(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child process, started by a bare Python (-I -S):
    a child forked from this process would count its ~300 MiB in its own peak (Linux's maxrss)."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.run([sys.executable, "-I", "-S", "-c", MEASURE, *command], stdout=out,
                                 stderr=subprocess.PIPE, text=True)
        out.seek(0)
        text = out.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{command} failed with status {process.returncode}")
    wall, rss_kib = process.stderr.split()[-2:]
    return float(wall), int(rss_kib) / 1024, text


def inputs(folder: Path) -> dict[str, tuple[Path, Path]]:
    params = config.load()
    params = params.model_copy(update={   # every train word kept, lines never cut, whole documents
        "corpus": params.corpus.model_copy(update={"max_line_tokens": 0}),
        "split": params.split.model_copy(update={"method": "documents"}),
        "vocab": params.vocab.model_copy(update={"min_count": 1, "max_size": 0})})
    prepared = folder / "prepared"
    chunked.prepare(params, prepared, files.parse_size(params.corpus.memory), progress=lambda line: None)
    words = np.array(load_vocab(prepared).tokens, dtype=object)

    def sentences(split: str) -> list[str]:   # a test word no train sentence holds: <unk>
        stream = np.load(prepared / f"{split}.npy")
        starts, ends = sentence_bounds(stream)
        return [" ".join(words[stream[a + 1:b]]) for a, b in zip(starts, ends, strict=True)]
    train, test = sentences("train"), sentences("test")
    kjv, kjv_test = folder / "kjv_train.txt", folder / "kjv_test.txt"
    kjv.write_text("\n".join(train) + "\n")
    kjv_test.write_text("\n".join(test) + "\n")
    copies, copies_test = folder / "kjv_x10.txt", folder / "kjv_x10_test.txt"
    with open(copies, "w", encoding="utf-8") as handle:
        for copy in range(10):
            handle.writelines(" ".join(f"{w}_{copy}" for w in line.split()) + "\n" for line in train)
    copies_test.write_text("\n".join(" ".join(f"{w}_0" for w in line.split()) for line in test) + "\n")
    return {"kjv_train": (kjv, kjv_test), "kjv_x10_distinct": (copies, copies_test)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--lmplz", help="path to KenLM's lmplz, run back to back when given")
    parser.add_argument("--memory", default="100M", help="-S of both tools (default 100M)")
    parser.add_argument("--lmpipe-default", action="store_true", help="lmpipe without -S (lmplz: --memory)")
    parser.add_argument("--build-only", action="store_true", help="no query, no scoring")
    args = parser.parse_args()
    lmpipe = str(Path(sys.executable).parent / "lmpipe")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (text, test) in inputs(folder).items():
            tokens = sum(len(line.split()) + 1 for line in open(text, encoding="utf-8"))
            for order in args.orders:
                model = folder / f"{name}.o{order}.arpa"
                tools = {"lmpipe": [lmpipe, "ngram", "build", str(text), "--order", str(order),
                                    "--arpa", str(model), "-T", str(folder)]
                         + ([] if args.lmpipe_default else ["-S", args.memory])}
                if args.lmplz:
                    tools["lmplz"] = [args.lmplz, "-o", str(order), "-S", args.memory, "-T", str(folder),
                                      "--text", str(text), "--arpa", str(folder / "lmplz.arpa")]
                summary = {"input": name, "tokens": tokens, "order": order, "memory": args.memory,
                           "lmpipe_memory": "default" if args.lmpipe_default else args.memory}
                runs = {tool: [] for tool in tools}
                for _ in range(args.repeat):   # alternated: A B A B ..
                    for tool, command in tools.items():
                        wall, rss = measure(command)[:2]
                        runs[tool].append((wall, rss))
                        print(json.dumps({**summary, "tool": tool, "step": "build", "wall_s": round(wall, 2),
                                          "peak_rss_mib": round(rss, 1)}), flush=True)
                for tool, measured in runs.items():
                    summary[f"{tool}_build_wall_s"] = round(statistics.median(w for w, _ in measured), 2)
                    summary[f"{tool}_build_peak_rss_mib"] = round(statistics.median(r for _, r in measured), 1)
                if args.build_only:
                    _ratios(summary, args)
                    continue
                query = [measure([lmpipe, "ngram", "query", str(model), str(test), "--json"])[:2]
                         for _ in range(args.repeat)]
                scoring = [json.loads(measure([sys.executable, "-c", SCORE, str(model), str(text)])[2])
                           for _ in range(args.repeat)]
                summary.update(
                    lmpipe_query_wall_s=round(statistics.median(w for w, _ in query), 2),
                    lmpipe_query_peak_rss_mib=round(statistics.median(r for _, r in query), 1),
                    scoring_tokens_per_s=round(statistics.median(s["tokens"] / s["seconds"] for s in scoring)),
                    ngrams=sum(int(line.split("=")[1]) for line in open(model, encoding="utf-8")
                               if line.startswith("ngram ")))
                _ratios(summary, args)


def _ratios(summary: dict, args) -> None:
    """Print the median line, with lmpipe's ratios to lmplz when it ran."""
    if args.lmplz:
        summary["build_wall_ratio_lmpipe_over_lmplz"] = round(
            summary["lmpipe_build_wall_s"] / summary["lmplz_build_wall_s"], 2)
        summary["build_peak_rss_ratio_lmpipe_over_lmplz"] = round(
            summary["lmpipe_build_peak_rss_mib"] / summary["lmplz_build_peak_rss_mib"], 2)
    print(json.dumps({"median_of": args.repeat, **summary}), flush=True)


if __name__ == "__main__":
    main()
