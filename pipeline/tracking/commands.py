"""dvc and git run as commands in a repository, with this environment's tools first on PATH. In:
a folder and the arguments. Out: the command's standard output. Errors: ValueError naming the
command, its last (ERROR) line, the fix; for a dvc.yaml or dvc.lock DVC cannot read, the file,
DVC's reason and DVC's fix instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

BIN = sysconfig.get_path("scripts")   # the environment lmpipe runs in: its python, dvc, mlflow


def environment() -> dict[str, str]:
    """os.environ with BIN first on PATH: DVC runs a stage's `python` and its queue workers'
    `dvc` from PATH, so whatever lmpipe starts runs with lmpipe's own interpreter and tools."""
    rest = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and entry != BIN]
    return {**os.environ, "PATH": os.pathsep.join([BIN, *rest])}


def executable(name: str) -> str:
    """`name` in BIN, else on PATH (git); else `name` itself (running it: FileNotFoundError naming it)."""
    return shutil.which(name, path=environment()["PATH"]) or name


def run(root: Path, command: str, *args: str, merged: bool = False, fix: str = "") -> str:
    """`command ARGS` in `root`, no input: its stdout (with stderr when `merged`); ValueError
    "`COMMAND ARGS` failed: LAST; FIX" for a nonzero exit status."""
    # files, not pipes: `dvc queue start` leaves forked workers holding them until they exit
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # not installed: FileNotFoundError naming the executable (errors.one_line)
        result = subprocess.run([executable(command), *args], cwd=root, env=environment(),
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if merged else err)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if result.returncode and command == "dvc":
        dvc_files(root)
    if result.returncode:   # the line that says what went wrong: dvc's last ERROR
        lines = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
        last = ([line for line in lines if line.startswith("ERROR")] or lines or ["(no output)"])[-1]
        raise ValueError(f"`{command} {' '.join(args)}` failed: {last}{'; ' + fix if fix else ''}")
    return stdout


RESTORE = {"dvc.yaml": "`git checkout dvc.yaml` restores the committed one",
           "dvc.lock": "`git checkout dvc.lock` restores the committed one, or delete it and "
                       "`dvc repro` writes it again"}


def dvc_files(root: Path) -> dict[str, dict]:
    """{name: its data as DVC reads it} of `root`'s dvc.yaml and dvc.lock (missing or empty: {});
    ValueError naming the one DVC cannot read: the line, a fix."""
    from dvc.fs import LocalFileSystem  # here: DVC's 0.3 s import, on this path only
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA, COMPILED_MULTI_STAGE_SCHEMA
    from dvc.utils import strictyaml
    found = {}
    for name, schema in (("dvc.yaml", COMPILED_MULTI_STAGE_SCHEMA),
                         ("dvc.lock", COMPILED_LOCKFILE_SCHEMA)):
        if not (root / name).is_file() or not (root / name).read_text(errors="replace").strip():
            found[name] = {}   # DVC reads an empty one as no stages
            continue
        try:
            found[name] = strictyaml.load(str(root / name), schema, LocalFileSystem())[0]   # (data, text)
        except strictyaml.YAMLValidationError as error:
            why = f"not DVC's schema: {error.exc}"   # voluptuous's, naming the key
        except strictyaml.YAMLSyntaxError as error:
            text, mark = error.yaml_text, getattr(error.__cause__, "problem_mark", None)
            conflict = strictyaml.merge_conflict_marker.search(text)   # DVC's own hint
            why = (f"git's merge-conflict markers from line {text.count(chr(10), 0, conflict.start()) + 1}"
                   if conflict else f"not YAML at line {mark.line + 1}, column {mark.column + 1}"
                   if mark else "not YAML")
        else:
            continue
        raise ValueError(f"{name}: DVC cannot read it ({why}); {RESTORE[name]}")
    return found
