"""The DVC stages, one module each (`python -m stages.X ARGS`): argv + params + one call.
run_stage is where each starts: quiet libraries, one error line, SIGTERM as Ctrl-C."""

import signal
import sys
import time
from pathlib import Path

from pipeline import errors


def run_stage(main, argv: list[str]) -> int:
    """main(*argv) with the libraries quiet: 0, or errors.guard's status after one error line;
    SIGTERM unwinds like Ctrl-C (143, 130). DVC records no output of a failed stage."""
    received = []

    def interrupted(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    errors.quiet_libraries()
    started = time.perf_counter()
    try:
        status = errors.guard(main, *argv)
    except (KeyboardInterrupt, SystemExit) as error:
        # inside fit, Lightning turns Ctrl-C (and so our SIGTERM) into sys.exit(1)
        if isinstance(error, SystemExit) and not isinstance(error.__context__, KeyboardInterrupt):
            raise
        print("lmpipe: interrupted; outputs not recorded; rerun `dvc repro` (training resumes)", file=sys.stderr)
        return 143 if received else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not status:
        print(f"lmpipe: stage {Path(sys.argv[0]).stem} {' '.join(argv)} done in "
              f"{time.perf_counter() - started:.1f}s", flush=True)
    return status
