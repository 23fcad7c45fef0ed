"""Out-of-core counting and estimation (pipeline/ngram/external.py) give exactly the tables of the
in-memory path, and `lmpipe ngram build -S` the same ARPA bytes, on corpora spanning many
blocks, runs and key ranges (tiny budgets force every spill); the spill folder's failures are
one line naming -T; `lmpipe ngram build` starts without pandas or torch."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import config, files, out_of_core
from pipeline.cli.main import main
from pipeline.ngram import arpa, counting, external, kneser_ney
from pipeline.text.vocab import encode_text


def names(message: str, *things: str) -> None:
    """Each thing (an argument, a path, a value, a word of the fix) stands in the message."""
    missing = [thing for thing in things if thing not in message]
    assert not missing, (missing, message)


def _corpus(lines: int, seed: int, vocab: int = 400) -> str:
    """Zipf-ish random sentences of 0..30 words (a blank line is an empty sentence)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = 1 / np.arange(1, vocab + 1)
    weights /= weights.sum()
    return "".join(" ".join(rng.choice(words, size=rng.integers(0, 31), p=weights)) + "\n"
                   for _ in range(lines))


def _on_disk(stream: np.ndarray, folder: Path) -> external.TokenFile:
    np.save(folder / "stream.npy", stream.astype(np.int32))
    return external.TokenFile(folder / "stream.npy")


def _same_tables(memory: counting.NgramCounts, disk: counting.NgramCounts) -> None:
    for n in range(memory.order):
        for name in ("keys", "counts", "adjusted"):
            assert np.array_equal(getattr(memory, name)[n], getattr(disk, name)[n][:]), (name, n + 1)
        if n:
            assert np.array_equal(memory.suffix[n], disk.suffix[n][:]), ("suffix", n + 1)


@pytest.mark.parametrize("order,memory", [(1, 50_000), (3, 20_000), (5, 100_000), (4, 1 << 20)])
def test_out_of_core_tables_and_arpa_are_identical(tmp_path, order, memory):
    text = _corpus(3000, seed=order)
    tokens, stream, _ = encode_text(text)
    reference = counting.count(stream, len(tokens), order)
    model = kneser_ney.estimate(reference, fallback=kneser_ney.LMPLZ_FALLBACK)
    with out_of_core.Spill(tmp_path) as spill:
        source = _on_disk(stream, tmp_path)
        assert len(external.sentence_blocks(source, max(memory // external.BYTES_PER_POSITION,
                                                         1024))) > 1 or memory >= 1 << 20
        disk = external.count(source, len(tokens), order, memory, spill)
        _same_tables(reference, disk)
        estimated = kneser_ney.estimate(disk, kneser_ney.LMPLZ_FALLBACK, memory=memory, spill=spill)
        assert estimated.discounts == model.discounts
        for n in range(order):   # bitwise: the same sums in the same order
            assert np.array_equal(estimated.log10_prob[n][:], model.log10_prob[n])
            assert np.array_equal(estimated.log10_backoff[n][:], model.log10_backoff[n])
            assert np.array_equal(disk.words(n + 1, 7, 900), reference.words(n + 1, 7, 900))
        with open(tmp_path / "disk.arpa", "wb") as handle:
            arpa.write(estimated, disk, tokens, handle, chunk=777)
        with open(tmp_path / "memory.arpa", "wb") as handle:
            arpa.write(model, reference, tokens, handle)
    assert (tmp_path / "disk.arpa").read_bytes() == (tmp_path / "memory.arpa").read_bytes()
    assert not any(p.name.startswith("lmpipe-ngram-") for p in tmp_path.iterdir())  # cleaned up


@settings(max_examples=25, deadline=None)
@given(lines=st.lists(st.lists(st.integers(0, 6), max_size=40), min_size=1, max_size=60),
       order=st.integers(1, 4), memory=st.integers(1, 6000))
def test_any_text_any_budget(tmp_path_factory, lines, order, memory):
    """Sentences of any length (longer than a block too), a vocabulary with unused words."""
    text = "".join(" ".join(f"v{w}" for w in line) + "\n" for line in lines)
    tokens, stream, _ = encode_text(text)
    tokens = (*tokens, "never", "seen")
    longest = int(np.diff(np.flatnonzero(stream == 1), append=len(stream)).max())
    if order > longest:
        return
    folder = tmp_path_factory.mktemp("spill")
    with out_of_core.Spill(folder) as spill:
        disk = external.count(_on_disk(stream, folder), len(tokens), order, memory, spill)
        _same_tables(counting.count(stream, len(tokens), order), disk)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """About 200 KB: several text blocks at -S 1M (64 KiB each)."""
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(_corpus(8000, seed=11), encoding="utf-8")
    return path


def test_cli_budget_gives_the_same_arpa(tmp_path, text_file, capsys):
    main(["ngram", "build", str(text_file), "--order", "4", "--arpa", str(tmp_path / "a.arpa"),
          "--discount-fallback"])
    main(["ngram", "build", str(text_file), "--order", "4", "--arpa", str(tmp_path / "b.arpa"),
          "--discount-fallback", "-S", "1M", "-T", str(tmp_path)])
    assert "counting out of core" in capsys.readouterr().err
    assert (tmp_path / "a.arpa").read_bytes() == (tmp_path / "b.arpa").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.arpa", "b.arpa"]


def test_text_blocks_count_offsets_from_the_file_start(tmp_path, text_file, capsys):
    """A bad byte in a later block is named by its offset and line in the whole file."""
    data = text_file.read_bytes()
    at = len(data) - 1000
    at = data.index(b"\n", at) + 1
    bad = tmp_path / "bad.txt"
    bad.write_bytes(data[:at] + b"\xff" + data[at:])
    with pytest.raises(SystemExit) as exit:
        main(["ngram", "build", str(bad), "--order", "3", "--arpa", str(tmp_path / "m.arpa"),
              "-S", "1M"])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = data[:at].count(b"\n") + 1
    assert err[-1].startswith(f"lmpipe: error: TEXT {str(bad)!r}"), err
    names(err[-1], "UTF-8", f"offset {at}", f"line {line}")


def _failing_build(tmp_path, text_file, capsys, monkeypatch, sabotage) -> str:
    out = tmp_path / "out.arpa"
    out.write_bytes(b"an earlier model\n")
    spill_parent = tmp_path / "spill"
    spill_parent.mkdir()
    sabotage(monkeypatch, spill_parent)
    with pytest.raises(SystemExit) as exit:
        main(["ngram", "build", str(text_file), "--order", "3", "--arpa", str(out), "-S", "1M",
              "-T", str(spill_parent), "--discount-fallback"])
    assert exit.value.code == 2
    assert out.read_bytes() == b"an earlier model\n"          # nothing produced is lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.arpa", "spill"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if not line.startswith("lmpipe ngram:")]) == 1, err
    return err[-1]


def test_spill_folder_that_vanishes(tmp_path, text_file, capsys, monkeypatch):
    def sabotage(monkeypatch, parent):
        merge = external._merge
        def vanish(runs, *args):
            shutil.rmtree(runs[0]["keys"].spill.path)
            return merge(runs, *args)
        monkeypatch.setattr(external, "_merge", vanish)
    line = _failing_build(tmp_path, text_file, capsys, monkeypatch, sabotage)
    assert line.startswith(f"lmpipe: error: -T/--temp-prefix {tmp_path / 'spill'}/lmpipe-ngram-")
    assert "vanished" in line


def test_spill_folder_that_fills_up(tmp_path, text_file, capsys, monkeypatch):
    """Writes go to /dev/full, so the kernel's own ENOSPC is what the code sees."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    def sabotage(monkeypatch, parent):
        real = open
        def full(path, mode="r", *args, **kwargs):
            return real("/dev/full", mode, *args, **kwargs) if mode == "ab" else real(path, mode, *args, **kwargs)
        monkeypatch.setattr(out_of_core, "open", full, raising=False)
    line = _failing_build(tmp_path, text_file, capsys, monkeypatch, sabotage)
    assert line.startswith(f"lmpipe: error: -T/--temp-prefix {tmp_path / 'spill'}"), line
    names(line, "space", "disk")


@pytest.mark.parametrize("argv,named", [
    (["-T", "/nonexistent/spill"], ("-T/--temp-prefix /nonexistent/spill",)),
    (["-S", "10"], ("argument -S/--memory: '10' is 10,240 bytes, below the least budget of 1M",)),  # whole
    (["-S", "lots"], ("argument -S/--memory", "'lots'")),
])
def test_bad_budget_or_folder(tmp_path, text_file, capsys, argv, named):
    with pytest.raises(SystemExit) as exit:
        main(["ngram", "build", str(text_file), "--order", "3", "--arpa",
              str(tmp_path / "m.arpa"), *argv])
    assert exit.value.code == 2
    names(capsys.readouterr().err, *named)
    assert not (tmp_path / "m.arpa").exists()


def test_parse_size_follows_lmplz():
    assert files.parse_size("100M") == 100 << 20
    assert files.parse_size("2G") == 2 << 30
    assert files.parse_size("2048") == 2 << 20          # lmplz: no unit means KiB
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert files.parse_size("50%") == physical // 2


def test_ngram_build_starts_without_pandas_or_torch(tmp_path, text_file):
    script = ("import sys\nfrom pipeline.cli.main import main\n"
              f"main(['ngram', 'build', {str(text_file)!r}, '--order', '2', '--arpa', "
              f"{str(tmp_path / 'm.arpa')!r}, '--discount-fallback'])\n"
              "heavy = sorted(m for m in ('pandas', 'torch', 'lightning', 'mlflow') if m in sys.modules)\n"
              "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "m.arpa").read_text().startswith("\\data\\")


def test_spill_error_names_the_cause():
    names(out_of_core.spill_message(Path("/tmp"), OSError(errno.ENOSPC, "x")), "/tmp", "space", "disk")
    names(out_of_core.spill_message(Path("/tmp"), OSError(errno.EACCES, "denied")), "/tmp", "denied", "writable")


def test_ngram_stage_out_of_core_writes_the_same_outputs(tmp_path, monkeypatch, capsys):
    """stages/ngram.py with ngram.memory too small for the in-memory path: model.npz, model.arpa,
    memory.json and counts.parquet hold what the in-memory path writes."""
    import json

    import pandas as pd

    import stages.ngram as stage
    tokens, stream, _ = encode_text(_corpus(3000, seed=5))
    data = tmp_path / "prepared"
    data.mkdir()
    np.save(data / "train.npy", stream.astype(np.int32))
    (data / "vocab.json").write_text(json.dumps({"tokens": list(tokens)}))
    outputs = {}
    for memory in ("1G", "1M"):
        params = config.Params(ngram=config.NgramParams(
            order=3, memory_orders=4, memory=memory, temp_dir=str(tmp_path), discount_fallback=True))
        monkeypatch.setattr(config, "load", lambda *a, params=params, **k: params)
        monkeypatch.setattr(external, "IN_MEMORY_BYTES", 40)
        stage.main(str(data), str(tmp_path / memory))
        outputs[memory] = tmp_path / memory
        assert ("counting out of core" in capsys.readouterr().out) == (memory == "1M")
    small, large = outputs["1M"], outputs["1G"]
    for name in ("model.arpa", "memory.json"):
        assert (small / name).read_bytes() == (large / name).read_bytes(), name
    a, b = np.load(small / "model.npz"), np.load(large / "model.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    pd.testing.assert_frame_equal(pd.read_parquet(small / "counts.parquet"),
                                  pd.read_parquet(large / "counts.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1G", "1M", "prepared"]


def test_a_block_without_ngrams_of_an_order_is_an_empty_run(tmp_path):
    """A block of only blank lines holds no 3-gram: its run is empty, and the merge samples it."""
    words, _, _ = encode_text(_corpus(300, seed=3))
    _, stream, _ = encode_text(_corpus(300, seed=3) + "\n" * 2000 + _corpus(300, seed=4), words)
    tokens = (*words, *(f"w{i}" for i in range(400)))
    with out_of_core.Spill(tmp_path) as spill:
        disk = external.count(_on_disk(stream, tmp_path), len(tokens), 3, 1, spill)
        _same_tables(counting.count(stream, len(tokens), 3), disk)


def test_many_runs_hold_no_file_open(tmp_path):
    """Hundreds of runs merge when only a few dozen more files can be opened."""
    import resource
    _, stream, _ = encode_text(_corpus(12000, seed=8))
    tokens = len(np.unique(stream)) + 3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the limit sits `free` above the files open now, whatever earlier tests left open
    open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    free = 40
    limit = open_now + free
    with out_of_core.Spill(tmp_path) as spill:
        source = _on_disk(stream, tmp_path)
        assert len(external.sentence_blocks(source, 1024)) > 4 * free
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            disk = external.count(source, tokens + 400, 2, 1, spill)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        _same_tables(counting.count(stream, tokens + 400, 2), disk)


def test_arpa_to_a_pipe_is_written_in_place(tmp_path, text_file):
    """--arpa a FIFO (`>(gzip > m.gz)`) is written into, not replaced by a regular file."""
    import threading
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    main(["ngram", "build", str(text_file), "--order", "2", "--arpa", str(fifo),
          "--discount-fallback"])
    reader.join(timeout=60)
    assert received and received[0].startswith(b"\\data\\")
    assert fifo.is_fifo()
