"""Peak memory of each stage on synthetic text: dvc.yaml's stage commands in order under /usr/bin/time
-v, in a scratch copy of the tracked files under --work (text cached there): whitespace tokens, every
word kept, corpus.memory = ngram.memory = --memory, KN5 with lmplz's fallback discounts (order 1 has
too few singletons), contiguous valid and test of --held words, one 8-wide rnn for 5 batches, probes
but `top` fills. A JSON line per stage (wall s, peak RSS MiB, status), then the max over prepare,
ngram, evaluate against --memory. --cgroup runs each stage in a cgroup v1 memory group of --memory
(root; caches dropped first): page cache counts against it, past it the stage is OOM-killed; RSS
also counts mapped page-cache pages the kernel reclaims there. From the root:
.venv/bin/python -m benchmarks.pipeline_memory [--cgroup]"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.files import parse_size

STAGES = {"prepare": ["stages.prepare", "data/prepared"],
          "ngram": ["stages.ngram", "data/prepared", "models/ngram"],
          "train@rnn": ["stages.train", "rnn", "data/prepared", "models/rnn"],
          "evaluate": ["stages.evaluate", "data/prepared", "models", "metrics"]}
BOUNDED = ("prepare", "ngram", "evaluate")   # the stages the budget is for


def scratch_copy(root: Path, text: Path, args) -> None:
    """The working tree's tracked files (not data/, metrics/) in `root`, with params.yaml set."""
    listed = subprocess.run(["git", "ls-files", "-z"], check=True, capture_output=True).stdout
    for name in listed.decode().split("\0"):
        if name and not name.startswith(("data/", "metrics/")) and Path(name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(name, root / name)
    probes = yaml.safe_load(Path("configs/probes.yaml").read_text())   # a `top` fill without `open`
    kept = [p for p in probes if p.get("open") or "top" not in p]    # scores V sentences of V logits
    (root / "configs/probes.yaml").write_text(yaml.safe_dump(kept, sort_keys=False))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["corpus"].update(source=str(text), tokenizer="whitespace", lowercase=False,
                            memory=args.memory)
    params["split"].update(method="contiguous", train=0, valid=args.held, test=args.held)
    params["vocab"].update(min_count=1, max_size=0)
    params["ngram"].update(order=5, discount_fallback=True, memory=args.memory)
    params["train"].update(max_epochs=1, limit_train_batches=5, batch_size=8, eval_batch_size=8)
    params["models"] = {"rnn": {**params["models"]["rnn"], "embed_dim": 8, "hidden_dim": 8}}
    params["evaluate"]["register_models"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measure(stage: str, command: list[str], root: Path, env: dict, group: Path | None) -> dict:
    """One stage under /usr/bin/time -v (in `group`, a memory cgroup, if given): wall s, peak RSS
    MiB, exit status, the group's peak usage MiB; output in logs/."""
    log, report = root / "logs" / f"{stage}.log", root / "logs" / f"{stage}.time"
    timed = ["/usr/bin/time", "-v", "-o", str(report), sys.executable, "-m", *command]
    if group:
        (group / "memory.max_usage_in_bytes").write_text("0")
        Path("/proc/sys/vm/drop_caches").write_text("3")   # else pages cached earlier are not charged
        timed = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *timed]
    started = time.perf_counter()
    with open(log, "wb") as out:
        status = subprocess.run(timed, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text())
    row = {"stage": stage, "wall_s": round(wall, 1),
           "peak_rss_mib": round(int(peak[1]) / 1024, 1) if peak else None, "status": status}
    if group:
        row["cgroup_peak_mib"] = round(int((group / "memory.max_usage_in_bytes").read_text()) / 2**20, 1)
    return row if status == 0 else {**row, "log": str(log)}


def memory_group(limit: str) -> Path:
    """A cgroup v1 memory group limited to `limit` (as -S), created if need be."""
    group = Path("/sys/fs/cgroup/memory/lmpipe-benchmark")
    group.mkdir(exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(parse_size(limit)))
    return group


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", default="100M", help="words of synthetic text (K, M, G)")
    parser.add_argument("--memory", default="2G", help="corpus.memory = ngram.memory, as -S")
    parser.add_argument("--held", type=int, default=20_000, help="words of valid and of test")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-pipeline-memory"))
    parser.add_argument("--cgroup", action="store_true", help="each stage in a memory cgroup of --memory")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    text = (args.work / f"synthetic-{args.tokens}.txt").resolve()
    if not text.exists():
        subprocess.run([sys.executable, "-m", "benchmarks.synthetic", "--tokens", args.tokens,
                        "--out", str(text)], check=True)
    root = (args.work / f"repo-{args.tokens}").resolve()
    shutil.rmtree(root, ignore_errors=True)
    (root / "logs").mkdir(parents=True)
    scratch_copy(root, text, args)
    env = {**os.environ, "LMPIPE_CHECKPOINTS": str(root / "checkpoints")}
    env.pop("MLFLOW_TRACKING_URI", None)         # the scratch copy's own sqlite store
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.split()[1::2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(json.dumps({"tokens": args.tokens, "memory": args.memory, "held": args.held,
                      "commit": commit, "modified": dirty, "scratch": str(root)}), flush=True)
    rows, group = [], memory_group(args.memory) if args.cgroup else None
    for stage, command in STAGES.items():
        rows.append(measure(stage, command, root, env, group))
        print(json.dumps(rows[-1]), flush=True)
        if rows[-1]["status"]:
            break
    bounded = [r for r in rows if r["stage"] in BOUNDED]
    measured = "cgroup_peak_mib" if group else "peak_rss_mib"   # in a group: what it charged
    peak = max((r[measured] or 0 for r in bounded), default=0)
    budget = parse_size(args.memory) / 2**20
    print(json.dumps({"stage": "max(" + ", ".join(r["stage"] for r in bounded) + ")",
                      measured: peak, "budget_mib": budget,
                      "within": len(bounded) == 3 and all(r["status"] == 0 for r in bounded)
                      and peak <= budget}), flush=True)


if __name__ == "__main__":
    main()
