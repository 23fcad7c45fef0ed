"""The DVC stages, one module each (`python -m stages.X ARGS`): argv + params + one call.
run_stage is where each starts: quiet libraries, one error line, SIGTERM as Ctrl-C."""

import signal
import sys
import time
from pathlib import Path

from pipeline import errors


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
        status = errors.guard(main, *argv, stopped="; outputs not recorded; rerun `dvc repro` (training resumes)")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not status:
        print(f"lmpipe: stage {Path(sys.argv[0]).stem} {' '.join(argv)} done in "
              f"{time.perf_counter() - started:.1f}s", flush=True)
    return 143 if received and status == 130 else status
