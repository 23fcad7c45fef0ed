"""dvc and git run as commands in a repository. In: a folder and the arguments. Out: the
command's standard output. Errors: ValueError, one line naming the command, its own last (ERROR)
line and the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def executable(name: str) -> str:
    """`name` on PATH, else the one beside this Python (lmpipe's virtual environment's bin/)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def run(root: Path, command: str, *args: str, merged: bool = False, codes: tuple[int, ...] = (0,),
        fix: str = "") -> str:
    """`command ARGS` in `root`, no input; its stdout (and its stderr in the same stream when
    `merged`). An exit status outside `codes` raises ValueError: "`COMMAND ARGS` failed: LAST"
    and "; `fix`". The output goes to files, not pipes: `dvc queue start` leaves forked workers
    behind that inherit them, and reading a pipe to its end would wait until they exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            result = subprocess.run([executable(command), *args], cwd=root, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT if merged else err)
        except FileNotFoundError:
            raise ValueError(f"{command} is not installed here; install the project (pip install "
                             "-e .) or put its virtual environment's bin/ first on PATH") from None
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if result.returncode not in codes:
        raise ValueError(f"`{command} {' '.join(args)}` failed: {last_line(stderr or stdout)}"
                         + (f"; {fix}" if fix else ""))
    return stdout


def last_line(text: str) -> str:
    """The line that says what went wrong: the last ERROR line (dvc's), else the last one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["(no output)"])[-1]
