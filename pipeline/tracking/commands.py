"""dvc and git run as commands in a repository. In: a folder and the arguments. Out: the
command's standard output. Errors: ValueError naming the command, its last (ERROR) line, the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def executable(name: str) -> str:
    """`name` on PATH, else the one beside this Python (lmpipe's virtual environment's bin/)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def run(root: Path, command: str, *args: str, merged: bool = False, fix: str = "") -> str:
    """`command ARGS` in `root`, no input: its stdout (with stderr when `merged`); ValueError
    "`COMMAND ARGS` failed: LAST; FIX" for a nonzero exit status."""
    # files, not pipes: `dvc queue start` leaves forked workers holding them until they exit
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # not installed: FileNotFoundError naming the executable (errors.one_line)
        result = subprocess.run([executable(command), *args], cwd=root, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT if merged else err)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if result.returncode:   # the line that says what went wrong: dvc's last ERROR
        lines = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
        last = ([line for line in lines if line.startswith("ERROR")] or lines or ["(no output)"])[-1]
        raise ValueError(f"`{command} {' '.join(args)}` failed: {last}{'; ' + fix if fix else ''}")
    return stdout
