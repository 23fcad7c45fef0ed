"""`lmpipe`, the command line: argv checked by argparse, then one command (`lmpipe --help`). A
failure is one `lmpipe: error: ...` line naming the argument, exit status 2 (1 unforeseen, 130
Ctrl-C; --debug or LMPIPE_DEBUG=1: the traceback)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import select
import sys
from pathlib import Path

from pipeline import errors, files
from pipeline.text.tokenizers import TOKENIZERS

USAGE = """`lmpipe` command line: user commands over the models of the last `dvc repro`
(README.md's "Main commands" shows each in use; `lmpipe COMMAND --help`, its arguments)."""

MAX_LENGTH = 1000   # lmpipe generate --max-length: tokens of one sentence (chars: characters)
MAX_LIMIT = 50000   # lmpipe compare --limit: MLflow's search_runs takes at most 50,000 results


class Parser(argparse.ArgumentParser):
    """argparse whose errors are lmpipe's one line and exit status 2 (subparsers too)."""

    def error(self, message):
        self.exit(2, f"lmpipe: error: {message}; see `{self.prog} --help`\n")


def checked(parse, fits, wanted: str):
    """An argparse type: parse(text) when it reads and fits; else `must be WANTED, not 'TEXT'`."""
    def convert(text: str):
        with contextlib.suppress(ValueError):   # unreadable: as not fitting
            if fits(value := parse(text)):
                return value
        raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
    return convert


def whole(low: int, high: float = math.inf):
    return checked(int, lambda value: low <= value <= high,
                   f"a whole number {f'>= {low}' if high == math.inf else f'in {low}..{high}'}")


positive = checked(float, lambda value: math.isfinite(value) and value > 0, "a number > 0")
marker = checked(str, lambda text: not any(ch.isspace() for ch in text),   # --unk
                 "one token (e.g. <unk>) without whitespace, or '' for none")
existing = checked(Path, Path.is_file, "an existing file (cd to the repository's root, or give its path)")


def memory_size(text: str) -> int:   # parse_size's own sentence: unreadable, or below 1M
    try:
        return files.parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _until_the_reader_stops(args) -> None:
    """args.run(args); a reader of stdout that stops early (`| head`) ends it quietly."""
    try:
        args.run(args)
    except BrokenPipeError:
        poll = select.poll()   # a pipe whose reader has gone polls as an error
        with contextlib.suppress(OSError, ValueError, AttributeError):   # stdout not a file
            poll.register(sys.stdout.fileno(), select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poll.poll(0)):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # Python's own flush


def parser() -> Parser:
    top = Parser(prog="lmpipe", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    _model_commands(commands)
    _experiment_commands(commands)
    ngram_commands = _ngram_commands(commands)
    for sub in [top, *commands.choices.values(), *ngram_commands.choices.values()]:   # before or after
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help=f"a failure shows its traceback (as {errors.DEBUG}=1 does)")
    return top


def _model_commands(commands) -> None:
    p = commands.add_parser("score", help="rank sentences by probability under each model")
    p.add_argument("sentences", nargs="+")
    p.set_defaults(run="models.score")
    p = commands.add_parser("fill", help="top fills of a blank (___) by each model")
    p.add_argument("text", metavar="TEXT", help='a sentence with one ___, e.g. "they ___ everywhere ."')
    p.add_argument("--k", type=whole(1), default=5, help="how many fills (default 5)")
    p.add_argument("--options", nargs="+", help="only compare these words")
    p.add_argument("--open", action="store_true",
                   help="the text goes on after it ends: causal models use the left context only")
    p.set_defaults(run="models.fill")
    p = commands.add_parser("generate", help="sample sentences from causal models")
    p.add_argument("--n", type=whole(1), default=5, help="sentences per model (default 5)")
    p.add_argument("--temperature", type=positive, default=1.0)
    p.add_argument("--max-length", type=whole(1, MAX_LENGTH), default=40,
                   help=f"tokens at most, unless </s> comes first (default 40, at most {MAX_LENGTH})")
    p.add_argument("--seed", type=whole(0), default=0)
    p.set_defaults(run="models.generate")
    for name in ("score", "fill", "generate"):
        p = commands.choices[name]
        p.add_argument("--model", action="append", help="model name (repeatable); default: all")
        p.add_argument("--models", type=Path, default=Path("models"))
        p.add_argument("--data", type=Path, default=Path("data/prepared"))


def _experiment_commands(commands) -> None:
    p = commands.add_parser("retrain", help="dvc repro what changed, then reports/retrain.md")
    p.add_argument("--base", help="revision to diff params and metrics against (e.g. origin/main)")
    p.add_argument("--report", type=Path, default=Path("reports/retrain.md"))
    p.set_defaults(run="experiments.retrain")
    p = commands.add_parser("mlflow-server", help="an MLflow tracking server over this repository's store")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0: the network)")
    p.add_argument("--port", type=whole(1, 65535), default=5000)
    p.add_argument("--workers", type=whole(1), default=2)
    p.set_defaults(run="experiments.mlflow_server")
    p = commands.add_parser("compare", help="an execution's comparison table (or --list, or two) from MLflow")
    p.add_argument("--list", action="store_true", help="list the executions (newest first) with their ids")
    p.add_argument("--limit", type=whole(1, MAX_LIMIT), default=20,
                   help=f"--list: how many (default 20, at most {MAX_LIMIT:,})")
    p.add_argument("--run", dest="parent_run", metavar="ID",
                   help="an execution's run id (or its first characters) instead of the newest")
    p.add_argument("--against", metavar="ID", help="a second execution: the two side by side")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--experiment", help="default: mlflow.experiment of params.yaml")
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI or params.yaml")
    p.add_argument("--ui", default="http://127.0.0.1:5000", help="the MLflow UI's address, for links")
    p.set_defaults(run="experiments.compare")
    p = commands.add_parser("preset", help="a preset of configs/presets.yaml as `dvc exp run` -S flags")
    p.add_argument("name", help="medium | full | any preset in the file")
    p.add_argument("--params", type=existing, default="params.yaml")
    p.add_argument("--presets", type=existing, default="configs/presets.yaml")
    p.set_defaults(run="presets.preset")
    p = commands.add_parser("seeds", help="a model's test ppl over seeds beside its bootstrap CI")
    p.add_argument("kind", metavar="KIND", help="a model of params.yaml (models.KIND)")
    p.add_argument("--run", dest="count", type=whole(1), metavar="N",   # args.run: the command
                   help="queue N experiments, models.KIND.seed = first..first+N-1, and wait")
    p.add_argument("--jobs", type=whole(1), help="--run: parallel queue workers (default 1)")
    p.add_argument("--first", type=whole(0, 2**32 - 1), help="--run: the first seed (default 1)")
    p.add_argument("--no-wait", action="store_true", help="--run: queue and start, no report")
    p.add_argument("--all-commits", action="store_true",
                   help="report: also experiments of earlier commits (their code may differ)")
    p.set_defaults(run="seeds.seeds")


def _ngram_commands(commands):
    ngram_commands = commands.add_parser("ngram", help="KenLM-style n-gram build and query")\
        .add_subparsers(dest="ngram_command", required=True)
    p = ngram_commands.add_parser("build", help="estimate modified Kneser-Ney from TEXT, write ARPA")
    p.add_argument("--order", type=whole(1), required=True)
    p.add_argument("--arpa", required=True)
    p.add_argument("--discount-fallback", nargs="*", type=float, metavar="D",
                   help="discounts for adjusted counts 1, 2, 3+ where none can be estimated (0.5 1 1.5)")
    p.add_argument("-S", "--memory", type=memory_size, metavar="SIZE",
                   help="memory budget as lmplz's -S, the interpreter's ~80M included (100M, 2G, 50%%; "
                        "default: twice TEXT's size, a .gz's 8x, at least 32M; standard input 80%%); more spills to disk")
    p.add_argument("-T", "--temp-prefix", default=None, metavar="DIR",
                   help="folder for the spilled runs (default: the system's temporary folder)")
    p.add_argument("--skip-symbols", action="store_true",
                   help="read <s>, </s> and <unk> in TEXT as spaces (lmplz's --skip_symbols); else <s>, </s> are refused")
    p.set_defaults(run="ngram.build")
    p = ngram_commands.add_parser("query", help="score TEXT with an ARPA model (perplexity, OOVs, totals)")
    p.add_argument("model", metavar="MODEL", help="an ARPA file (.arpa or .arpa.gz)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--per-sentence", action="store_true")
    p.add_argument("--orphans", choices=("refuse", "keep"), default="refuse",
                   help="an n-gram without its context: refuse the file (KenLM) or keep it (SRILM)")
    p.set_defaults(run="ngram.query")
    for p in ngram_commands.choices.values():
        p.add_argument("text", metavar="TEXT", help="one sentence per line (a blank line: an empty one), "
                       "not normalised, as KenLM reads it; - reads standard input")
        p.add_argument("--tokenizer", choices=TOKENIZERS, default="whitespace",
                       help="whitespace (default): KenLM's rules; words, chars: as prepare does raw text")
        p.add_argument("--lowercase", action="store_true", help="lowercase every token")
        p.add_argument("--unk", type=marker, default="<unk>",
                       help="the unknown-word marker in the text (default <unk>; '' for none)")
    return ngram_commands


def main(argv: list[str] | None = None) -> None:
    """Run the command of argv; a failure is one line and SystemExit(2, 1 or 130)."""
    args = parser().parse_args(argv)
    module, name = args.run.split(".")   # a command's module is imported only when it runs
    args.run = getattr(importlib.import_module(f"pipeline.cli.{module}"), name)
    command = " ".join(filter(None, (args.command, getattr(args, "ngram_command", None))))
    if getattr(args, "debug", False):
        os.environ[errors.DEBUG] = "1"
    status = errors.guard(_until_the_reader_stops, args, stopped=f" (Ctrl-C); `lmpipe {command}` stopped")
    if status:
        sys.exit(status)

