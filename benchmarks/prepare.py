"""prepare at scale: (1) tokenizing throughput, the vectorised block forms against the per-line
Python rules (tests/oracle_prepare.line_tokens, what prepare used before), per tokenizer, in-process;
(2) the whole stage, wall time and peak RSS of a fresh process each (wait4): in blocks
(`pipeline/text/chunked.py`, at --memory) and whole in memory (tests/oracle_prepare.py, the
implementation it replaced), on the same text and params. The text: --text FILE, or
`benchmarks/synthetic.py` text of --tokens words written to a temporary folder. Prints one JSON
line per measurement and a median line per case.

    .venv/bin/python benchmarks/prepare.py --tokens 10M --repeat 3 [--memory 2G] [--skip-whole]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import files

ROOT = Path(__file__).resolve().parent.parent

STAGE = """
import json, sys, time
from pathlib import Path
from pipeline import config, files
from pipeline.text import chunked
from tests.oracle_prepare import prepare_whole
source, tokenizer, how, memory, out = sys.argv[1:6]
params = config.Params(
    seed=1, corpus=config.CorpusParams(source=source, tokenizer=tokenizer, lowercase=tokenizer != "whitespace"),
    split=config.SplitParams(method="contiguous", valid=0.01, test=0.01),
    vocab=config.VocabParams(min_count=1, max_size=0))
started = time.perf_counter()
if how == "chunked":
    chunked.prepare(params, out, files.parse_size(memory), progress=lambda line: None)
else:
    prepare_whole(params, Path(out))
print(json.dumps({"seconds_in_process": time.perf_counter() - started}))
"""

TOKENIZE = """
import json, sys, time
from pipeline.text.tokenizers import TOKENIZERS
from tests.oracle_prepare import line_tokens
text = open(sys.argv[1], encoding="utf-8").read()
tokenizer, how = sys.argv[2:4]
block = 1 << 23
started = time.perf_counter()
tokens = 0
if how == "block":
    start = 0
    while start < len(text):
        stop = text.find("\\n", min(start + block, len(text) - 1)) + 1 or len(text)
        tokens += len(TOKENIZERS[tokenizer].block(text[start:stop], tokenizer != "whitespace", "<unk>")[1])
        start = stop
else:
    for line in text.split("\\n"):
        tokens += len(line_tokens(line, tokenizer, tokenizer != "whitespace"))
seconds = time.perf_counter() - started
print(json.dumps({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}))
"""


def measure(command: list[str]) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS MiB, the JSON it printed) of one child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        lines = out.read().decode().strip().splitlines()
    if status != 0:
        raise SystemExit(f"{command[:4]} failed with status {status}")
    return wall, usage.ru_maxrss / 1024, json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", help="a text file, one sentence per line")
    parser.add_argument("--tokens", default="10M", help="synthetic words when --text is not given")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", default="2G", help="corpus.memory of the chunked prepare")
    parser.add_argument("--tokenizers", nargs="+", default=["whitespace", "words", "chars"])
    parser.add_argument("--skip-whole", action="store_true",
                        help="measure only the chunked stage (the whole one needs ~100 bytes a token)")
    args = parser.parse_args()
    files.parse_size(args.memory)
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        text = args.text
        if not text:
            text = f"{folder}/synthetic.txt"
            subprocess.run([python, "benchmarks/synthetic.py", "--tokens", args.tokens, "--out", text],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        for tokenizer in args.tokenizers:
            rates = {}
            for how in ("lines", "block"):
                runs = [measure([python, "-c", TOKENIZE, text, tokenizer, how])[2]
                        for _ in range(args.repeat)]
                rates[how] = statistics.median(r["tokens_per_s"] for r in runs)
                print(json.dumps({"case": "tokenize", "tokenizer": tokenizer, "how": how,
                                  "tokens": runs[0]["tokens"],
                                  "seconds": [round(r["seconds"], 2) for r in runs]}), flush=True)
            print(json.dumps({"median": "tokenize", "tokenizer": tokenizer,
                              "lines_tokens_per_s": round(rates["lines"]),
                              "block_tokens_per_s": round(rates["block"]),
                              "speed-up": round(rates["block"] / rates["lines"], 2)}), flush=True)
        for tokenizer in args.tokenizers:
            found = {}
            for how in ("chunked",) if args.skip_whole else ("chunked", "whole"):
                walls, peaks = [], []
                for i in range(args.repeat):
                    out = f"{folder}/out-{how}-{i}"
                    wall, peak, _ = measure([python, "-c", STAGE, text, tokenizer, how, args.memory, out])
                    walls.append(wall)
                    peaks.append(peak)
                    print(json.dumps({"case": "prepare", "tokenizer": tokenizer, "how": how,
                                      "wall_s": round(wall, 2), "peak_rss_mib": round(peak)}), flush=True)
                found[how] = (statistics.median(walls), statistics.median(peaks))
            line = {"median": "prepare", "tokenizer": tokenizer, "memory": args.memory,
                    **{f"{how}_wall_s": round(w, 2) for how, (w, _) in found.items()},
                    **{f"{how}_peak_rss_mib": round(p) for how, (_, p) in found.items()}}
            if "whole" in found:
                line["wall_ratio"] = round(found["chunked"][0] / found["whole"][0], 2)
                line["rss_ratio"] = round(found["chunked"][1] / found["whole"][1], 2)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
