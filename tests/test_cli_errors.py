"""Every `lmpipe` command ends a failure in one line on stderr, `lmpipe: error: ...`, naming the
argument (TEXT, MODEL, --order, --k, --run, ...; never a params.yaml key) and the fix, with exit
status 2 and no traceback unless LMPIPE_DEBUG=1 or `lmpipe --debug` asks for one.

A catalogue: each case is (argv, the files of the current folder, a regex of the one error line,
which names the argument). The commands run in-process in a temporary folder (no params.yaml:
outside the repository) so the whole file stays fast; two cases run `python -m pipeline.cli` as
a process to show what the user sees."""
import io
import re
import shutil
import socket
import sqlite3
import subprocess
import sys

import pytest

from pipeline import errors
from pipeline.cli import ngram
from pipeline.cli.main import main

from .conftest import ROOT

ARPA_TEXT = b"the cat sat\nthe dog sat\n"
# a params.yaml key in a message (mlflow.db, a file, is not one)
PARAMS_KEY = re.compile(r"\b(corpus|split|vocab|ngram|train|evaluate|promote)\.[a-z_]+\b|"
                        r"\bmlflow\.(experiment|tracking_uri)\b")


def folder(path):
    path.mkdir(parents=True)


def store(path):
    """The tables of an MLflow sqlite store that `lmpipe compare` reads, with experiment 'exp'
    and one finished pipeline run 'abc123'."""
    with sqlite3.connect(path) as con:
        con.executescript("""
            create table experiments (experiment_id integer, name text, lifecycle_stage text);
            create table runs (run_uuid text, name text, start_time integer, status text,
                               experiment_id integer, lifecycle_stage text);
            create table tags (run_uuid text, key text, value text);
            create table latest_metrics (run_uuid text, key text, value real, is_nan integer);
            insert into experiments values (1, 'exp', 'active');
            insert into runs values ('abc123', 'sweep-a', 0, 'FINISHED', 1, 'active');
            insert into tags values ('abc123', 'lmpipe.role', 'pipeline');""")


def copy_of(name):
    return lambda path: shutil.copy(ROOT / name, path)


PROJECT = {"params.yaml": copy_of("params.yaml"), "dvc.yaml": copy_of("dvc.yaml"), ".dvc": folder}
TEXT = {"t.txt": ARPA_TEXT}
STORE = ["--tracking-uri", "sqlite:///mlflow.db", "--experiment", "exp"]

CASES = [   # (argv, files: {name: bytes or a function of the path; "-": standard input}, line)
    # ngram query: MODEL
    (["ngram", "query", "nosuch.arpa", "t.txt"], TEXT, r"MODEL nosuch\.arpa: no such file"),
    (["ngram", "query", "m", "t.txt"], {**TEXT, "m": folder}, r"MODEL m: is a directory"),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b""}, r"MODEL m\.arpa: the file is empty"),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b"hello\n"},
     r"MODEL m\.arpa: line 1: 'hello' before \\data\\; an ARPA file starts with \\data\\"),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b"\x7fELF\x02\x01\x01\x00\x00"},
     r"MODEL m\.arpa: a binary file \(a NUL byte at byte offset 7\), not ARPA text"),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b"caf\xe9 noir\n"},
     r"MODEL m\.arpa: not an ARPA file \(line 1, .* not UTF-8\)"),
    (["ngram", "query", "m.klm", "t.txt"],
     {**TEXT, "m.klm": b"mmap lm http://kheafield.com/code format version 5\n\x00\x00"},
     r"MODEL m\.klm: a KenLM binary model \(build_binary\), not ARPA text; give the \.arpa file"),
    # ngram query: TEXT and options
    (["ngram", "query", "m.arpa", "nosuch.txt"], {}, r"TEXT 'nosuch\.txt': no such file; give a text file"),
    (["ngram", "query", "m.arpa", "e.txt"], {"e.txt": b""}, r"TEXT 'e\.txt': is empty; give text to score"),
    (["ngram", "query", "m.arpa", "-"], {"-": b""}, r"TEXT - \(standard input\): is empty"),
    (["ngram", "query", "m.arpa", "t.txt"], {"t.txt": b"caf\xe9 noir\n"},
     r"TEXT 't\.txt': invalid UTF-8 at byte offset 3 \(line 1.*; re-encode the file as UTF-8 \(e\.g\. iconv [^)]*\)$"),
    (["ngram", "query", "m.arpa", "t.txt", "--orphans", "drop"], TEXT,
     r"argument --orphans: invalid choice: 'drop'"),
    # ngram build
    (["ngram", "build", "e.txt", "--order", "3", "--arpa", "m.arpa"], {"e.txt": b""},
     r"TEXT 'e\.txt': is empty; give text to count"),
    (["ngram", "build", "b.txt", "--order", "3", "--arpa", "m.arpa"], {"b.txt": b"\n  \n\t\n"},
     r"TEXT 'b\.txt': holds only blank lines"),
    (["ngram", "build", "-", "--order", "2", "--arpa", "m.arpa"], {"-": b""}, r"TEXT - \(standard input\): is empty"),
    (["ngram", "build", "nosuch.txt", "--order", "3", "--arpa", "m.arpa"], {},
     r"TEXT 'nosuch\.txt': no such file"),
    (["ngram", "build", "d", "--order", "3", "--arpa", "m.arpa"], {"d": folder}, r"TEXT 'd': is a directory"),
    (["ngram", "build", "t.txt", "--order", "3", "--arpa", "m.arpa"], {"t.txt": b"a\x00b\n"},
     r"TEXT 't\.txt': looks like a binary file"),
    (["ngram", "build", "t.gz", "--order", "3", "--arpa", "m.arpa"], {"t.gz": b"not gzip"},
     r"TEXT 't\.gz': not a valid gzip file"),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa"], {"t.txt": b"a <s> b\n"},
     r"TEXT 't\.txt': the text contains the reserved token '<s>'"),
    (["ngram", "build", "t.txt", "--order", "0", "--arpa", "m.arpa"], TEXT,
     r"argument --order: must be a whole number >= 1, not '0'; see `lmpipe ngram build --help`"),
    (["ngram", "build", "t.txt", "--order", "-2", "--arpa", "m.arpa"], TEXT, r"argument --order: .* not '-2'"),
    (["ngram", "build", "t.txt", "--order", "three", "--arpa", "m.arpa"], TEXT, r"argument --order: .* not 'three'"),
    (["ngram", "build", "t.txt", "--order", "1000000", "--arpa", "m.arpa"], TEXT,
     r"--order 1000000: the longest sentence of TEXT 't\.txt' has 5 tokens with <s> and </s>; "
     r"use --order 5 or less"),
    (["ngram", "build", "t.txt", "--arpa", "m.arpa"], TEXT, r"the following arguments are required: --order"),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "no/such/m.arpa"], TEXT,
     r"--arpa 'no/such/m\.arpa': the folder '.*no/such' does not exist"),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "out"], {**TEXT, "out": folder},
     r"--arpa 'out' is a folder; give the path of the file to write"),
    (["ngram", "build", "t.txt", "--order", "3", "--arpa", "m.arpa"], TEXT,
     r"cannot estimate Kneser-Ney discounts for order 1: .*add --discount-fallback"),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--discount-fallback", "0.5", "1", "9"],
     TEXT, r"--discount-fallback: the discount for count 3\+ is 9, outside \[0, 3\]"),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--discount-fallback", "nan"],
     TEXT, r"--discount-fallback: the discount for count 1 is nan"),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--discount-fallback", "1", "1", "1", "1"],
     TEXT, r"--discount-fallback 1\.0 1\.0 1\.0 1\.0: give at most three discounts"),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--unk", "a b"], TEXT,
     r"argument --unk: 'a b' holds whitespace"),
    # score, fill, generate
    (["score", "a b"], {}, r"`lmpipe score`: no lmpipe pipeline here \(.* has no params\.yaml\); cd to"),
    (["fill", "they ___ ."], {}, r"`lmpipe fill`: no lmpipe pipeline here"),
    (["generate"], {}, r"`lmpipe generate`: no lmpipe pipeline here"),
    (["score"], {}, r"the following arguments are required: sentences"),
    (["fill", "they run ."], {}, r"TEXT 'they run \.' has no ___; mark the one word to fill with ___"),
    (["fill", "a ___ b ___"], {}, r"TEXT 'a ___ b ___' has 2 ___"),
    (["fill", "a ___", "--k", "0"], {}, r"argument --k: must be a whole number >= 1, not '0'"),
    (["generate", "--n", "0"], {}, r"argument --n: must be a whole number >= 1, not '0'"),
    (["generate", "--n", "-1"], {}, r"argument --n: .* not '-1'"),
    (["generate", "--temperature", "0"], {}, r"argument --temperature: must be a number > 0, not '0'"),
    (["generate", "--temperature", "-1"], {}, r"argument --temperature: .* not '-1'"),
    (["generate", "--temperature", "nan"], {}, r"argument --temperature: .* not 'nan'"),
    (["generate", "--max-length", "0"], {}, r"argument --max-length: must be a whole number >= 1"),
    (["generate", "--seed", "-1"], {}, r"argument --seed: must be a whole number >= 0"),
    # compare
    (["compare"], {}, r"`lmpipe compare`: no lmpipe pipeline here .*\(or give --tracking-uri and --experiment\)"),
    (["compare", "--list", "--limit", "0"], {}, r"argument --limit: must be a whole number >= 1"),
    (["compare", "--list", "--run", "abc", *STORE], {}, r"--list lists every execution; leave out --run"),
    (["compare", "--tracking-uri", "sqlite:///nosuch.db", "--experiment", "exp"], {},
     r"--tracking-uri sqlite:///nosuch\.db: no MLflow store at nosuch\.db"),
    (["compare", "--tracking-uri", "sqlite:///mlflow.db", "--experiment", "nosuch"], {"mlflow.db": store},
     r"--experiment 'nosuch': no MLflow experiment 'nosuch'"),
    (["compare", "--run", "nosuchid", *STORE], {"mlflow.db": store},
     r"--run nosuchid: no pipeline run 'nosuchid' .*`lmpipe compare --list` lists the executions"),
    (["compare", "--against", "nosuchid", *STORE], {"mlflow.db": store},
     r"--against nosuchid: no pipeline run 'nosuchid'"),
    # preset
    (["preset", "medium"], {}, r"--params 'params\.yaml': no such file in .*; cd to the lmpipe repository"),
    (["preset", "medium", "--presets", "nosuch.yaml"], {"params.yaml": b"seed: 1\n"},
     r"--presets 'nosuch\.yaml': no such file"),
    (["preset", "nosuch"], {"params.yaml": b"seed: 1\n", "configs/presets.yaml": b"medium:\n  set: {seed: 2}\n"},
     r"NAME 'nosuch': no such preset in configs/presets\.yaml; use one of medium"),
    (["compare", "--tracking-uri", "http://127.0.0.1:9", "--experiment", "exp"], {},
     r"the MLflow tracking server http://127\.0\.0\.1:9 does not answer .*lmpipe mlflow-server"),
    # retrain, mlflow-server
    (["retrain"], {}, r"`lmpipe retrain`: no lmpipe pipeline here \(.* has no params\.yaml / dvc\.yaml / \.dvc\)"),
    (["retrain", "--base", "nosuchrev"], PROJECT, r"--base 'nosuchrev': no such revision"),
    (["retrain", "--report", "reports"], {**PROJECT, "reports": folder}, r"--report 'reports' is a folder"),
    (["mlflow-server"], {}, r"`lmpipe mlflow-server`: no lmpipe pipeline here"),
    (["mlflow-server", "--port", "99999"], {}, r"argument --port: must be a whole number in 1\.\.65535, not '99999'"),
    (["mlflow-server", "--port", "0"], {}, r"argument --port: .* not '0'"),
    (["mlflow-server", "--workers", "0"], {}, r"argument --workers: must be a whole number >= 1"),
    # seeds
    (["seeds", "gru"], {}, r"`lmpipe seeds`: no lmpipe pipeline here \(.* has no params\.yaml / dvc\.yaml\)"),
    (["seeds", "nosuchkind"], PROJECT, r"KIND 'nosuchkind' is not a model of params\.yaml; use one of"),
    (["seeds", "gru", "--run", "0"], {}, r"--run 0: the number of seeds to queue must be at least 1"),
    (["seeds", "gru", "--run", "2", "--jobs", "0"], {}, r"--jobs 0: .* at least 1"),
    (["seeds", "gru", "--no-wait"], {}, r"--no-wait: only with --run N"),
    # the command itself
    ([], {}, r"the following arguments are required: command; see `lmpipe --help`"),
    (["nosuch"], {}, r"argument command: invalid choice: 'nosuch'"),
    (["ngram"], {}, r"the following arguments are required: ngram_command"),
]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """The current folder: an empty temporary one (outside the repository), plain environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("DVC_ROOT", "MLFLOW_TRACKING_URI", errors.DEBUG):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _files(where, files, monkeypatch):
    for name, content in files.items():
        if name == "-":
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
            continue
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)


def _run(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of `lmpipe ARGV` in-process."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code, capsys.readouterr().err


def _one_line(err: str) -> str:
    """The one error line of stderr (the progress lines of `lmpipe ngram` may come before it)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("lmpipe ngram: ")]
    assert len(lines) == 1 and lines[0].startswith("lmpipe: error: "), err
    assert not PARAMS_KEY.search(lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize(("argv", "files", "line"), CASES, ids=[" ".join(c[0]) or "-" for c in CASES])
def test_each_failure_is_one_line_naming_the_argument(argv, files, line, here, monkeypatch, capsys):
    _files(here, files, monkeypatch)
    status, err = _run(argv, capsys)
    assert status == 2, err
    assert re.search(line, _one_line(err)), err


def test_a_port_in_use_is_named(here, monkeypatch, capsys):
    _files(here, {"params.yaml": copy_of("params.yaml")}, monkeypatch)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = _run(["mlflow-server", "--port", str(port)], capsys)
    assert status == 2
    assert re.search(rf"--port {port}: 127\.0\.0\.1:{port} is already in use", _one_line(err))


def test_ctrl_c_is_one_line_and_status_130(here, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(ngram, "build", interrupted)
    _files(here, TEXT, monkeypatch)
    status, err = _run(["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa"], capsys)
    assert status == 130 and err == "lmpipe: interrupted (Ctrl-C); `lmpipe ngram build` stopped\n"


def test_debug_lets_the_exception_through(here, monkeypatch):
    monkeypatch.setenv(errors.DEBUG, "0")   # restored afterwards: --debug sets it
    _files(here, TEXT, monkeypatch)
    with pytest.raises(ValueError, match=r"MODEL nosuch\.arpa: no such file"):
        main(["--debug", "ngram", "query", "nosuch.arpa", "t.txt"])
    monkeypatch.setenv(errors.DEBUG, "0")
    with pytest.raises(ValueError, match=r"MODEL nosuch\.arpa: no such file"):   # after it too
        main(["ngram", "query", "nosuch.arpa", "t.txt", "--debug"])


CLI = [sys.executable, "-m", "pipeline.cli"]


@pytest.mark.parametrize(("argv", "line"), [
    (["ngram", "query", "nosuch.arpa", "nosuch.txt"], r"^lmpipe: error: TEXT 'nosuch\.txt': no such file"),
    (["score", "a b"], r"^lmpipe: error: `lmpipe score`: no lmpipe pipeline here"),
])
def test_the_user_sees_one_line_and_status_2(argv, line, tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([*CLI, *argv], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert re.search(line, result.stderr) and result.stderr.count("\n") == 1, result.stderr
    shown = subprocess.run([*CLI, *argv], cwd=tmp_path, capture_output=True, text=True,
                           env={**env, errors.DEBUG: "1"})
    assert shown.returncode != 0 and "Traceback (most recent call last)" in shown.stderr
