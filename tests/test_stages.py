"""Stages fail on bad input with one clear line, not a traceback."""
import subprocess
import sys

import yaml

from .conftest import ROOT


def _prepare(tmp_path, **corpus):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["corpus"].update(corpus)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "stages.prepare", "out"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_missing_corpus(tmp_path):
    result = _prepare(tmp_path, source="nowhere.txt")
    assert result.returncode == 2
    assert "corpus.source='nowhere.txt': no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_whitespace_only_corpus(tmp_path):
    (tmp_path / "blank.txt").write_text("  \n\t\n\n")
    result = _prepare(tmp_path, source="blank.txt")
    assert result.returncode == 2 and "holds no tokens" in result.stderr
    assert not (tmp_path / "out" / "train.npy").exists()


def test_corpus_too_small_for_the_split(tmp_path):
    (tmp_path / "tiny.txt").write_text("one line only\nand another\n")
    result = _prepare(tmp_path, source="tiny.txt")
    assert result.returncode == 2 and "split is empty" in result.stderr


def test_unknown_param_key(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["vocab"]["min_cout"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "stages.prepare", "out"], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "did you mean vocab.min_count" in result.stderr
