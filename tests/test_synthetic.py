"""benchmarks/synthetic.py: the same seed gives the same bytes (and a smaller size a prefix),
the size is reached within one sentence, the text is words-per-line, the vocabulary grows
towards --vocab and its rank-frequency curve is Zipf's (slope near -1), the CLI writes its file
and summary. Small sizes and vocabularies (the KJV is read once, ~2 s)."""
import collections
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import synthetic

from .conftest import ROOT

VOCAB = 20_000      # above the KJV's 12,827 types: types are split into variants


def _text(tokens: int, seed: int = 0, vocab: int = VOCAB, order: int = 2) -> tuple[str, dict]:
    out = io.BytesIO()
    summary = synthetic.generate(tokens, out, seed=seed, vocab=vocab, order=order)
    return out.getvalue().decode("utf-8"), summary


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others():
    first, _ = _text(30_000, seed=0)
    again, _ = _text(30_000, seed=0)
    other, _ = _text(30_000, seed=1)
    assert first == again
    assert first != other
    assert first.splitlines()[0] != other.splitlines()[0]


def test_a_smaller_size_is_a_prefix_of_a_larger_one():
    small, _ = _text(150_000)       # two blocks (the first holds ~120k words)
    large, _ = _text(600_000)
    assert len(large) > 3 * len(small)
    assert large.startswith(small)


@pytest.mark.parametrize("tokens", [1, 999, 123_457])
def test_the_size_is_reached_within_one_sentence(tokens):
    text, summary = _text(tokens)
    lines = text.splitlines()
    words = text.split()
    assert len(words) >= tokens > len(words) - len(lines[-1].split())
    assert summary["tokens"] == len(words) and summary["sentences"] == len(lines)
    assert summary["distinct_words"] == len(set(words))


def test_zero_tokens_write_nothing():
    text, summary = _text(0)
    assert text == "" and (summary["tokens"], summary["sentences"], summary["distinct_words"]) == (0, 0, 0)


def test_words_per_line_format():
    text, _ = _text(100_000)
    assert text.endswith("\n") and "\t" not in text and "\r" not in text
    lines = text.split("\n")[:-1]
    assert all(line and line == " ".join(line.split()) for line in lines)   # no empty lines,
    lengths = [len(line.split()) for line in lines]                        # single spaces
    assert 20 < np.mean(lengths) < 40 and max(lengths) <= synthetic.MAX_WORDS
    assert sum("~" in word for word in text.split()) > len(text.split()) / 3   # variants


def test_a_text_stream_gets_the_same_text():
    out = io.StringIO()
    synthetic.generate(5_000, out, seed=3, vocab=VOCAB)
    assert out.getvalue() == _text(5_000, seed=3)[0]


def test_sentences_are_cut_at_max_words(monkeypatch):
    monkeypatch.setattr(synthetic, "MAX_WORDS", 5)
    lengths = [len(line.split()) for line in _text(20_000)[0].splitlines()]
    assert max(lengths) == 5 and lengths.count(5) > len(lengths) / 2


def test_distinct_words_grow_towards_the_vocabulary():
    counts = [_text(n)[1]["distinct_words"] for n in (20_000, 200_000, 1_000_000)]
    assert counts[0] < counts[1] < counts[2] <= VOCAB
    assert counts[1] > 12_827                # more than the KJV's types: variants appear
    assert counts[2] > 0.9 * VOCAB           # 0.92 (0.98 at 2M)
    text, summary = _text(1_000_000, vocab=5_000)   # below the KJV's types: the rest is <unk>
    assert 0.99 * 5_000 < summary["distinct_words"] <= 5_000
    assert "<unk>" in text.split() and not any("~" in w for w in text.split()[:10_000])


def test_rank_frequency_slope_is_near_minus_one():
    text, _ = _text(200_000)
    counts = np.sort(list(collections.Counter(text.split()).values()))[::-1][:1000]
    slope = np.polyfit(np.log(np.arange(1, len(counts) + 1)), np.log(counts), 1)[0]
    assert -1.15 < slope < -0.85, slope   # -0.98 to -0.99 for seeds 0-5; -0.74 if each type's
    #                                       variants were equally likely instead of Zipfian


def test_a_higher_order_chain_gives_other_text():
    two, _ = _text(10_000, vocab=5_000, order=2)
    three, _ = _text(10_000, vocab=5_000, order=3)
    assert two != three and three.endswith("\n")


def test_sizes_and_bad_arguments():
    assert [synthetic.parse_size(s) for s in ("12", "20K", "1.5M", "100m", "1G")] == \
        [12, 20_000, 1_500_000, 100_000_000, 10**9]
    for bad in ("", "1T", "-5", "M"):
        with pytest.raises(ValueError):
            synthetic.parse_size(bad)
    with pytest.raises(ValueError, match="order 1"):
        synthetic.generate(10, io.BytesIO(), order=1)
    with pytest.raises(ValueError, match="vocab 5"):
        synthetic.generate(10, io.BytesIO(), vocab=5)


def test_cli_writes_the_file_and_a_summary(tmp_path, capsys):
    out = tmp_path / "corpus.txt"
    synthetic.main(["--tokens", "2K", "--out", str(out), "--seed", "7", "--vocab", "20K"])
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["tokens"] == len(out.read_text().split()) >= 2_000
    assert summary["seed"] == 7 and summary["vocab"] == 20_000 and summary["tokens_per_s"] > 0
    assert out.read_text() == _text(2_000, seed=7)[0]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]    # no .partial left


def test_cli_writes_through_a_link_in_place(tmp_path, capsys):
    real, link = tmp_path / "real.txt", tmp_path / "link.txt"
    real.write_text("old")
    link.symlink_to(real)
    synthetic.main(["--tokens", "1K", "--out", str(link), "--vocab", "20K"])
    assert link.is_symlink() and real.read_text() == _text(1_000)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_cli_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    for args, message in ((["--tokens", "1T"], "'1T' is not a size"),
                          (["--tokens", "1K", "--vocab", "5"], "vocab 5: give 10 to 2M"),
                          (["--tokens", "1K", "--out", str(tmp_path / "no" / "c.txt")],
                           "No such file or directory")):
        with pytest.raises(SystemExit) as exit_:
            synthetic.main(args if "--out" in args else [*args, "--out", str(tmp_path / "c.txt")])
        err = capsys.readouterr().err
        assert exit_.value.code != 0 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_script_runs_as_a_program():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "synthetic.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--tokens" in result.stdout
