"""The DVC stages, one module each (`python -m stages.X ARGS`): argv + params + one call.
run_stage is where each starts: quiet libraries, one error line, SIGTERM as Ctrl-C."""

import signal
import sys
import time
from pathlib import Path


def _without_packages(kind, error, trace) -> None:
    """A stage module's import failing (DVC ran the first `python` on PATH): one line."""
    if not issubclass(kind, ModuleNotFoundError):
        return sys.__excepthook__(kind, error, trace)
    print(f"lmpipe: {sys.executable} has no module {error.name!r}: DVC runs the first `python` on "
          "PATH; `source .venv/bin/activate` and rerun (or `make setup`)", file=sys.stderr)


sys.excepthook = _without_packages   # before the first import of lmpipe's packages
from pipeline import errors  # noqa: E402


def run_stage(main, argv: list[str]) -> int:
    """main(*argv) through errors.guard: 0, or its status after one error line; SIGTERM unwinds
    like Ctrl-C (143, 130). DVC records no output of a failed stage."""
    received = []

    def interrupted(signum, _frame):
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    started = time.perf_counter()
    try:
        status = errors.guard(main, *argv, stopped="; outputs not recorded; rerun `dvc repro` (a train stage resumes from its checkpoint)")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not status:
        print(f"lmpipe: stage {Path(sys.argv[0]).stem} {' '.join(argv)} done in "
              f"{time.perf_counter() - started:.1f}s", flush=True)
    return 143 if received and status == 130 else status
