"""Every `lmpipe` command ends a failure in one line on stderr, `lmpipe: error: ...`, naming the
argument (TEXT, MODEL, --order, --k, --run, ...; never a params.yaml key) and the fix, with exit
status 2 and no traceback unless LMPIPE_DEBUG=1 or `lmpipe --debug` asks for one.

A catalogue: each case is (argv, the files of the current folder, what the one error line names:
the argument, its value, a word of the fix; a few of the commonest lines whole). The commands run in-process in a temporary folder (no params.yaml:
outside the repository) so the whole file stays fast; two cases run `python -m pipeline.cli` as
a process to show what the user sees."""
import gzip
import io
import re
import shutil
import socket
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


def store(path) -> str:
    """An MLflow sqlite store with experiment 'exp' and one finished pipeline run 'sweep-a' (as
    `lmpipe compare` finds them through MLflow's client); the run's id."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{path}")
    run = client.create_run(client.create_experiment("exp"), run_name="sweep-a",
                            tags={"lmpipe.role": "pipeline"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def copy_of(name):
    return lambda path: shutil.copy(ROOT / name, path)


PROJECT = {"params.yaml": copy_of("params.yaml"), "dvc.yaml": copy_of("dvc.yaml"), ".dvc": folder}
TEXT = {"t.txt": ARPA_TEXT}
STORE = ["--tracking-uri", "sqlite:///mlflow.db", "--experiment", "exp"]

CONFLICTED = (b'schema: "2.0"\nstages:\n<<<<<<< HEAD\n  prepare:\n    cmd: a\n=======\n'
              b'  prepare:\n    cmd: b\n>>>>>>> theirs\n')
LOCK_FIX = ("dvc.lock", "line 3", "merge-conflict markers", "`git checkout dvc.lock`", "`dvc repro`")

CASES = [   # (argv, files: {name: bytes or a function of the path; "-": standard input}, what the
    # line names: a tuple of the argument, file, value or fix it must hold; a str, the regex of
    # a whole message, kept for the commonest)
    # ngram query: MODEL
    (["ngram", "query", "nosuch.arpa", "t.txt"], TEXT, ("MODEL nosuch.arpa",)),
    (["ngram", "query", "m", "t.txt"], {**TEXT, "m": folder}, ("MODEL m:", "directory")),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b""}, ("MODEL m.arpa", "empty")),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b"hello\n"},
     ("MODEL m.arpa", "line 1", "'hello'", "\\data\\")),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b"\x7fELF\x02\x01\x01\x00\x00"},
     ("MODEL m.arpa", "binary", "offset 7")),
    (["ngram", "query", "m.arpa", "t.txt"], {**TEXT, "m.arpa": b"caf\xe9 noir\n"},
     ("MODEL m.arpa", "line 1", "UTF-8")),
    (["ngram", "query", "m.klm", "t.txt"],
     {**TEXT, "m.klm": b"mmap lm http://kheafield.com/code format version 5\n\x00\x00"},
     ("MODEL m.klm", "KenLM", ".arpa")),
    # ngram query: TEXT and options
    (["ngram", "query", "m.arpa", "nosuch.txt"], {}, r"TEXT 'nosuch\.txt': no such file; give a text file"),
    (["ngram", "query", "m.arpa", "e.txt"], {"e.txt": b""}, ("TEXT 'e.txt'", "empty")),
    (["ngram", "query", "m.arpa", "-"], {"-": b""}, ("TEXT - (standard input)", "empty")),
    (["ngram", "query", "m.arpa", "t.txt"], {"t.txt": b"caf\xe9 noir\n"},
     ("TEXT 't.txt'", "UTF-8", "offset 3", "line 1", "iconv")),
    (["ngram", "query", "m.arpa", "t.txt", "--orphans", "drop"], TEXT, ("argument --orphans", "'drop'")),
    # ngram build
    (["ngram", "build", "e.txt", "--order", "3", "--arpa", "m.arpa"], {"e.txt": b""}, ("TEXT 'e.txt'", "empty")),
    (["ngram", "build", "b.txt", "--order", "3", "--arpa", "m.arpa"], {"b.txt": b"\n  \n\t\n"},
     ("TEXT 'b.txt'", "blank")),
    (["ngram", "build", "-", "--order", "2", "--arpa", "m.arpa"], {"-": b""}, ("TEXT - (standard input)", "empty")),
    (["ngram", "build", "nosuch.txt", "--order", "3", "--arpa", "m.arpa"], {}, ("TEXT 'nosuch.txt'",)),
    (["ngram", "build", "d", "--order", "3", "--arpa", "m.arpa"], {"d": folder}, ("TEXT 'd'", "directory")),
    (["ngram", "build", "t.txt", "--order", "3", "--arpa", "m.arpa"], {"t.txt": b"a\x00b\n"},
     ("TEXT 't.txt'", "binary")),
    (["ngram", "build", "t.gz", "--order", "3", "--arpa", "m.arpa"], {"t.gz": b"not gzip"}, ("TEXT 't.gz'", "gzip")),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa"], {"t.txt": b"a <s> b\n"},
     ("TEXT 't.txt'", "'<s>'")),
    (["ngram", "build", "t.txt", "--order", "0", "--arpa", "m.arpa"], TEXT,
     r"argument --order: must be a whole number >= 1, not '0'; see `lmpipe ngram build --help`"),
    (["ngram", "build", "t.txt", "--order", "-2", "--arpa", "m.arpa"], TEXT, ("argument --order", "'-2'")),
    (["ngram", "build", "t.txt", "--order", "three", "--arpa", "m.arpa"], TEXT, ("argument --order", "'three'")),
    (["ngram", "build", "t.txt", "--order", "1000000", "--arpa", "m.arpa"], TEXT,
     ("--order 1000000", "TEXT 't.txt'", "--order 5")),
    (["ngram", "build", "t.txt", "--arpa", "m.arpa"], TEXT, ("required", "--order")),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "no/such/m.arpa"], TEXT,
     ("--arpa 'no/such/m.arpa'", "/no/such'")),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "out"], {**TEXT, "out": folder},
     ("--arpa 'out'", "folder")),
    (["ngram", "build", "t.txt", "--order", "3", "--arpa", "m.arpa"], TEXT, ("order 1", "--discount-fallback")),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--discount-fallback", "0.5", "1", "9"],
     TEXT, ("--discount-fallback", "3+", "[0, 3]")),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--discount-fallback", "nan"],
     TEXT, ("--discount-fallback", "nan")),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--discount-fallback", "1", "1", "1", "1"],
     TEXT, ("--discount-fallback 1.0 1.0 1.0 1.0", "three")),
    (["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa", "--unk", "a b"], TEXT,
     ("argument --unk", "'a b'", "whitespace")),
    # score, fill, generate
    (["score", "a b"], {}, r"`lmpipe score`: no lmpipe pipeline here \(.* has no params\.yaml\); cd to"),
    (["score", "a b"], {"dvc.yaml": b"stages: {}\n"}, ("`lmpipe score`", "has no params.yaml",
                                                      "`git checkout params.yaml`")),
    (["fill", "they ___ ."], {}, ("`lmpipe fill`", "params.yaml")),
    (["generate"], {}, ("`lmpipe generate`", "params.yaml")),
    (["score"], {}, ("required", "sentences")),
    (["fill", "they run ."], {}, ("TEXT 'they run .'", "___")),
    (["fill", "a ___ b ___"], {}, ("TEXT 'a ___ b ___'", "2 ___")),
    (["fill", "a ___", "--k", "0"], {}, ("argument --k", "'0'")),
    (["generate", "--n", "0"], {}, ("argument --n", "'0'")),
    (["generate", "--n", "-1"], {}, ("argument --n", "'-1'")),
    (["generate", "--temperature", "0"], {}, ("argument --temperature", "'0'")),
    (["generate", "--temperature", "-1"], {}, ("argument --temperature", "'-1'")),
    (["generate", "--temperature", "nan"], {}, ("argument --temperature", "'nan'")),
    (["generate", "--max-length", "0"], {}, ("argument --max-length", "1..1000", "'0'")),
    (["generate", "--seed", "-1"], {}, ("argument --seed", "'-1'")),
    # compare
    (["compare"], {}, ("`lmpipe compare`", "params.yaml", "--tracking-uri", "--experiment")),
    (["compare", "--list", "--limit", "0"], {}, ("argument --limit", "1..50000", "'0'")),
    (["compare", "--list", "--run", "abc", *STORE], {}, ("--list", "--run")),
    (["compare", "--tracking-uri", "sqlite:///nosuch.db", "--experiment", "exp"], {},
     ("--tracking-uri sqlite:///nosuch.db",)),
    (["compare", "--tracking-uri", "sqlite:///mlflow.db", "--experiment", "nosuch"], {"mlflow.db": store},
     ("--experiment 'nosuch'",)),
    (["compare", "--run", "nosuchid", *STORE], {"mlflow.db": store}, ("--run nosuchid", "lmpipe compare --list")),
    (["compare", "--against", "nosuchid", *STORE], {"mlflow.db": store}, ("--against nosuchid",)),
    # preset
    (["preset", "medium"], {}, ("argument --params", "'params.yaml'")),
    (["preset", "medium", "--presets", "nosuch.yaml"], {"params.yaml": b"seed: 1\n"}, ("argument --presets", "'nosuch.yaml'")),
    (["preset", "nosuch"], {"params.yaml": b"seed: 1\n", "configs/presets.yaml": b"medium:\n  set: {seed: 2}\n"},
     ("NAME 'nosuch'", "configs/presets.yaml", "medium")),
    (["compare", "--tracking-uri", "http://127.0.0.1:9", "--experiment", "exp"], {},
     r"the MLflow tracking server http://127\.0\.0\.1:9 does not answer .*lmpipe mlflow-server"),
    # retrain, mlflow-server
    (["retrain"], {}, ("`lmpipe retrain`", "params.yaml", "dvc.yaml", ".dvc")),
    (["retrain", "--base", "nosuchrev"], PROJECT, ("--base 'nosuchrev'",)),
    (["retrain", "--report", "reports"], {**PROJECT, "reports": folder}, ("--report 'reports'", "folder")),
    (["mlflow-server"], {}, ("`lmpipe mlflow-server`", "params.yaml")),
    (["mlflow-server", "--port", "99999"], {}, ("argument --port", "1..65535", "'99999'")),
    (["mlflow-server", "--port", "0"], {}, ("argument --port", "'0'")),
    (["mlflow-server", "--workers", "0"], {}, ("argument --workers", "'0'")),
    # seeds
    (["seeds", "gru"], {}, ("`lmpipe seeds`", "params.yaml", "dvc.yaml")),
    (["seeds", "nosuchkind"], PROJECT, ("KIND 'nosuchkind'", "params.yaml", "gru")),
    (["seeds", "gru", "--run", "0"], {}, ("argument --run", "'0'")),
    (["seeds", "gru", "--run", "2", "--jobs", "0"], {}, ("argument --jobs", "'0'")),
    (["seeds", "gru", "--no-wait"], {}, ("--no-wait", "--run")),
    # binary input refused as it streams in, memory bounded (/dev/zero: test_endless_binary_...)
    (["ngram", "build", "late.txt", "--order", "2", "--arpa", "m.arpa"],
     {"late.txt": b"a b\n" * 300_000 + b"\x00" + b"c\n" * 10}, ("TEXT 'late.txt'", "binary", "1200000")),
    (["ngram", "build", "z.gz", "--order", "2", "--arpa", "m.arpa"], {"z.gz": gzip.compress(b"a b\n\x00")},
     ("TEXT 'z.gz'", "binary", "decompressed")),
    (["ngram", "build", "z.gz", "--order", "2", "--arpa", "m.arpa"],
     {"z.gz": gzip.compress(b"x" * 1000)[:10] + b"\xff" * 20}, ("TEXT 'z.gz'", "gzip")),
    (["ngram", "build", "z.gz", "--order", "2", "--arpa", "m.arpa"],
     {"z.gz": gzip.compress(ARPA_TEXT * 50)[:-12]}, ("TEXT 'z.gz'", "gzip")),
    (["ngram", "query", "m.arpa", "z.bin"], {"z.bin": b"\x00" * 100}, ("TEXT 'z.bin'", "binary")),
    (["ngram", "query", "m.arpa.gz", "t.txt"], {**TEXT, "m.arpa.gz": gzip.compress(b"\x00" * 100)},
     ("MODEL m.arpa.gz", "binary")),
    # bounds: a sentence's tokens, MLflow's most results; a SENTENCE of score
    (["generate", "--max-length", "100000"], {}, ("argument --max-length", "'100000'")),
    (["compare", "--list", "--limit", "1000000000000000000000"], {},
     ("argument --limit", "'1000000000000000000000'")),
    (["score", "a ___ b ___"], {}, ("SENTENCE 'a ___ b ___'", "2 ___")),
    # params.yaml: empty (no models, as `models: {}`), a model name YAML reads as a number
    (["seeds", "gru"], {**PROJECT, "params.yaml": b""},
     r"^lmpipe: error: params\.yaml: is empty \(no settings at all\); restore it \(`git checkout params\.yaml`\)"),
    (["score", "a b"], {"params.yaml": b"# nothing but a comment\n"}, ("params.yaml:", "empty")),
    (["compare"], {"params.yaml": b""}, ("params.yaml:", "empty")),
    (["seeds", "gru"], {**PROJECT, "params.yaml": lambda path: path.write_text(
        (ROOT / "params.yaml").read_text().replace("\n  rnn:\n", "\n  1:\n", 1))},
     r"params\.yaml: models\.1: YAML reads the unquoted name 1 as a number, not a name; quote it \('1':\)"),
    # seeds: dvc.yaml as DVC reads it, before any dvc command
    (["seeds", "gru"], {**PROJECT, "dvc.yaml": b"stages: 5\n"}, ("dvc.yaml", "'stages'", "git checkout dvc.yaml")),
    (["seeds", "gru"], {**PROJECT, "dvc.yaml": b"stages: [prepare, train]\n"}, ("dvc.yaml", "'stages'")),
    (["seeds", "gru"], {**PROJECT, "dvc.yaml": b"stages: {train: [1\n"},
     ("dvc.yaml", "YAML", "line 2, column 1", "git checkout dvc.yaml")),
    (["seeds", "gru"], {**PROJECT, "dvc.yaml": b""}, ("dvc.yaml", "empty", "git checkout dvc.yaml")),
    (["seeds", "gru"], {**PROJECT, "dvc.yaml": b"stages: {}\n"}, ("dvc.yaml", "train@gru")),
    # dvc.lock left with git's conflict markers: DVC's fix, from every command that reads it
    (["seeds", "gru"], {**PROJECT, "dvc.lock": CONFLICTED}, LOCK_FIX),
    (["retrain"], {**PROJECT, "dvc.lock": CONFLICTED}, LOCK_FIX),
    # the command itself
    ([], {}, ("required", "command", "lmpipe --help")),
    (["nosuch"], {}, ("argument command", "'nosuch'")),
    (["ngram"], {}, ("required", "ngram_command")),
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
    """(exit status, stderr) of `lmpipe ARGV` in-process (not of the set-up before it, such as
    MLflow's INFO lines when a test's store is made first in a worker)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code, capsys.readouterr().err


def names(line: str, *things: str) -> None:
    """Each thing (an argument, a file, a value, a word of the fix) stands in the line."""
    missing = [thing for thing in things if thing not in line]
    assert not missing, (missing, line)


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
    if isinstance(line, str):   # a whole message, kept for the commonest
        assert re.search(line, _one_line(err)), err
    else:
        names(_one_line(err), *line)


def test_compare_where_the_pipelines_store_is_gone_names_the_rerun(here, monkeypatch, capsys):
    """The default store (params.yaml's mlflow.tracking_uri, named as the param it is) missing."""
    _files(here, PROJECT, monkeypatch)
    status, err = _run(["compare"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    names(err, "mlflow.db does not exist", "`dvc repro -f -s evaluate` logs the last results")


def test_running_out_of_memory_is_one_line_naming_the_input(here, monkeypatch, capsys):
    from pipeline.ngram import counting

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.00 GiB for an array with shape (402653184,)")
    monkeypatch.setattr(counting, "count", exhausted)
    (here / "t.txt").write_text("a b c\nd e f\n")
    status, err = _run(["ngram", "build", "t.txt", "--order", "3", "--arpa", "m.arpa"], capsys)
    assert status == 2, err
    names(_one_line(err), "TEXT 't.txt'", "memory", "3-grams", "-S", "--order")
    line, status = errors.one_line(MemoryError("Unable to allocate 8 GiB"))
    assert status == 2
    names(line, "out of memory", "Unable to allocate 8 GiB")


def test_a_port_in_use_is_named(here, monkeypatch, capsys):
    _files(here, {"params.yaml": copy_of("params.yaml")}, monkeypatch)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = _run(["mlflow-server", "--port", str(port)], capsys)
    assert status == 2
    names(_one_line(err), f"--port {port}", f"127.0.0.1:{port}", "in use")


def test_ctrl_c_is_one_line_and_status_130(here, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(ngram, "build", interrupted)
    _files(here, TEXT, monkeypatch)
    status, err = _run(["ngram", "build", "t.txt", "--order", "2", "--arpa", "m.arpa"], capsys)
    assert status == 130 and err.count("\n") == 1, err
    names(err, "lmpipe: interrupted", "Ctrl-C", "`lmpipe ngram build`")


def test_debug_lets_the_exception_through(here, monkeypatch):
    monkeypatch.setenv(errors.DEBUG, "0")   # restored afterwards: --debug sets it
    _files(here, TEXT, monkeypatch)
    with pytest.raises(ValueError, match=r"MODEL nosuch\.arpa"):
        main(["--debug", "ngram", "query", "nosuch.arpa", "t.txt"])
    monkeypatch.setenv(errors.DEBUG, "0")
    with pytest.raises(ValueError, match=r"MODEL nosuch\.arpa"):   # after it too
        main(["ngram", "query", "nosuch.arpa", "t.txt", "--debug"])


CLI = [sys.executable, "-m", "pipeline.cli"]


@pytest.mark.parametrize(("argv", "named"), [
    (["ngram", "query", "nosuch.arpa", "nosuch.txt"], "TEXT 'nosuch.txt'"),
    (["score", "a b"], "`lmpipe score`"),
])
def test_the_user_sees_one_line_and_status_2(argv, named, tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([*CLI, *argv], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("lmpipe: error: ") and result.stderr.count("\n") == 1, result.stderr
    names(result.stderr, named)
    shown = subprocess.run([*CLI, *argv], cwd=tmp_path, capture_output=True, text=True,
                           env={**env, errors.DEBUG: "1"})
    assert shown.returncode != 0 and "Traceback (most recent call last)" in shown.stderr


@pytest.mark.parametrize("argv", [
    ["ngram", "build", "/dev/zero", "--order", "3", "--arpa", "m.arpa"],
    ["ngram", "build", "-", "--order", "3", "--arpa", "m.arpa"],          # stdin: /dev/zero
    ["ngram", "query", "/dev/zero", "t.txt"],                              # MODEL
    ["ngram", "query", "m.arpa", "/dev/zero"],                             # TEXT
])
def test_endless_binary_input_is_refused_at_its_first_chunk(argv, tmp_path):
    """/dev/zero (any huge binary input) is refused by its first chunk, not read to the end:
    the process runs with 4 GiB of address space and a timeout, where reading it all would
    take every byte of memory there is."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    (tmp_path / "t.txt").write_bytes(ARPA_TEXT)
    with open("/dev/zero", "rb") as zero:
        result = subprocess.run([*CLI, *argv], cwd=tmp_path, capture_output=True, text=True,
                                stdin=zero, timeout=120, preexec_fn=limited,
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(("lmpipe: error: TEXT ", "lmpipe: error: MODEL ")), result.stderr
    names(result.stderr, "binary", "offset 0")


def test_compare_shows_the_table_and_warns_when_the_pairs_artifact_is_missing_or_damaged(
        here, monkeypatch, capsys):
    """report/pairs.json of the execution missing (logged before lmpipe wrote it), not JSON, not
    a mapping, a pair without its keys: the table still prints, the verdicts are left out with
    one warning line on stderr, exit status 0."""
    from pipeline.tracking import artifacts
    run_id = store(here / "mlflow.db")
    capsys.readouterr()   # MLflow's own lines as it creates the store
    good = (ROOT / "metrics" / "pairs.json").read_bytes()
    for content, warning in [
            (None, (run_id, "report/pairs.json", "dvc repro -f -s evaluate")),
            (b"not json", (run_id, "report/pairs.json", "JSON", "dvc repro -f -s evaluate")),
            (b"\xff\xfe", ("report/pairs.json", "UTF-8")),
            (b"[1, 2]", ("report/pairs.json", "dictionary")),
            (b'{"gru_vs_ngram": {"a": "gru", "b": "ngram"}}',
             ("report/pairs.json", "gru_vs_ngram.delta_nats_per_token")),
            (b'{"x": {"a": "gru", "b": "ngram", "delta_nats_per_token": 0.1, "delta_ci_low": 0, '
             b'"delta_ci_high": 0.2, "p_better": 2, "level": 0.95}}', ("report/pairs.json", "x.p_better")),
            (good, None)]:
        def download(run_id, artifact_path, tracking_uri, dst_path, content=content):
            if content is None:
                raise OSError(f"no artifact {artifact_path}")
            local = here / "scratch" / artifact_path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(content)
            return str(local)
        monkeypatch.setattr(artifacts.mlflow.artifacts, "download_artifacts", download)
        # the store by its absolute path: MLflow keeps one store per URI in a process
        main(["compare", "--tracking-uri", f"sqlite:///{here / 'mlflow.db'}", "--experiment", "exp"])
        out, err = capsys.readouterr()
        assert out.startswith(f"sweep-a  (run {run_id}") and "In the MLflow UI" in out
        if warning is None:
            assert err == "" and "gru better than ngram: yes" in out
            continue
        assert "Paired bootstrap" not in out and err.count("\n") == 1, err
        assert err.startswith("lmpipe: warning: "), err
        names(err, *warning)


def test_generate_prints_each_batch_as_it_is_sampled(here, monkeypatch, capsys):
    """--n sentences come BATCH at a time (memory bounded, the first at once), flushed; the
    first batch is what one sample of up to BATCH sentences gives (seed --seed)."""
    import argparse

    import numpy as np

    from pipeline.cli import models
    from pipeline.evaluation import tasks
    calls, printed = [], []

    class Vocab:
        def __len__(self):
            return 3

        def decode(self, ids):
            return [f"w{i}" for i in ids]

    def sample(model, count, temperature, max_length, seed):
        calls.append((count, seed, max_length))
        printed.append(capsys.readouterr().out.count("\n"))   # the batch before, already out
        return [np.array([seed, i]) for i in range(count)]
    monkeypatch.setattr(models, "_tokenizer", lambda args: (Vocab(), None, None))
    monkeypatch.setattr(models, "load_models", lambda *args: {"gru": argparse.Namespace(kind="causal")})
    monkeypatch.setattr(tasks, "sample", sample)
    args = argparse.Namespace(command="generate", data=here, models=here, model=None, n=35,
                              temperature=1.0, max_length=40, seed=7)
    models.generate(args)
    assert calls == [(16, 7, 40), (16, 23, 40), (3, 39, 40)]
    assert printed == [1, 16, 16] and capsys.readouterr().out.count("\n") == 3   # 1: the header


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`lmpipe generate --n 100000 | head -3`: the closed pipe stops the command, status 0, no
    "Broken pipe" error line; a BrokenPipeError of anything but standard output is an error."""
    code = ("import argparse, sys\n"
            "from pipeline.cli.main import _until_the_reader_stops as run\n"
            "def endless(args):\n"
            "    while True:\n"
            "        print('a sampled sentence', flush=True)\n"
            "def other(args):\n"
            "    raise BrokenPipeError(32, 'Broken pipe')\n"
            "try:\n"
            "    run(argparse.Namespace(run=endless if sys.argv[1] == 'stdout' else other))\n"
            "except BrokenPipeError:\n"
            "    sys.exit(3)\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    reader = subprocess.Popen([sys.executable, "-c", code, "stdout"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout.readline() == b"a sampled sentence\n"
    reader.stdout.close()   # as head does
    assert reader.wait(timeout=60) == 0
    assert reader.stderr.read() == b""
    reader.stderr.close()
    other = subprocess.run([sys.executable, "-c", code, "other"], cwd=tmp_path, env=env,
                           capture_output=True, timeout=60)   # its stdout still read
    assert other.returncode == 3
