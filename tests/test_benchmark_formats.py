"""A benchmark in its own form through every stage (in-process, tiny): a WikiText-style directory
(given split, headings, blank lines that are empty sentences, `<unk>` and `@-@` kept), and the
document split of a raw text with blank-line-separated documents."""
import json

import numpy as np
import pytest
import yaml

from pipeline.evaluation import report
from stages import evaluate as evaluate_stage
from stages import ngram as ngram_stage
from stages import prepare as prepare_stage
from stages import run_stage
from stages import train as train_stage

from .conftest import ROOT

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _documents(rng, count):
    """WikiText-like lines: a heading, then paragraphs, each followed by a blank line."""
    words = [LETTERS[i % 26] + LETTERS[i // 26] + "x" for i in range(60)] + ["<unk>", "@-@"]
    lines = []
    for _ in range(count):
        lines += [" = Heading = ", " "]
        for _ in range(3):
            lines += [" " + " ".join(rng.choice(words, rng.integers(3, 15))) + " . ", " "]
    return lines


def _stage(capsys, module, *args):
    status = run_stage(module.main, list(args))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "Traceback" not in err
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "wiki").mkdir()
    texts = {}
    for split, count in (("train", 60), ("valid", 8), ("test", 8)):
        texts[split] = _documents(rng, count)
        (tmp_path / "wiki" / f"wiki.{split}.tokens").write_text("\n".join(texts[split]) + "\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["corpus"].update(source="wiki", tokenizer="whitespace", lowercase=False)
    params["vocab"].update(min_count=1, max_size=0)
    params["ngram"].update(discount_fallback=True)
    params["train"].update(max_epochs=1, batch_size=4, bptt=8, num_threads=1)
    params["evaluate"].update(blanks=20, samples=2, max_length=10, register_models=False)
    params["mlflow"]["tracking_uri"] = "sqlite:///mlflow.db"
    params["models"] = {k: v for k, v in params["models"].items() if k in ("gru", "birnn")}
    for spec in params["models"].values():
        spec.update(embed_dim=16, hidden_dim=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "probes.yaml").write_text((ROOT / "configs" / "probes.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path, texts


def test_a_wikitext_directory_through_every_stage(workdir, capsys):
    root, texts = workdir
    out = _stage(capsys, prepare_stage, "data")
    assert "split given by the source" in out
    stats = json.loads((root / "data" / "stats.json").read_text())
    assert stats["split_method"] == "given"
    for split, lines in texts.items():      # every word as written, plus one </s> per line
        words = sum(len(line.split()) for line in lines)
        assert stats[split]["tokens"] == words + len(lines), split
        assert stats[split]["sentences"] == len(lines)
    # resampling units: lines (a given split keeps no documents); the text as written, + newlines
    assert stats["interval_unit"] == "sentences" and stats["test"]["units"] == len(texts["test"])
    assert stats["test"]["chars"] == sum(len(line) + 1 for line in texts["test"])
    assert stats["test"]["words"] == sum(len(line.split()) + 1 for line in texts["test"])
    vocab = json.loads((root / "data" / "vocab.json").read_text())["tokens"]
    train_types = {w for line in texts["train"] for w in line.split()}
    assert set(vocab) - {"<s>", "</s>"} == train_types | {"<unk>"} and "@-@" in vocab
    _stage(capsys, ngram_stage, "data", "models/ngram")
    for kind in ("gru", "birnn"):      # a causal and the bidirectional model
        _stage(capsys, train_stage, kind, "data", f"models/{kind}")
    _stage(capsys, evaluate_stage, "data", "models", "metrics")
    metrics = json.loads((root / "metrics" / "metrics.json").read_text())
    assert set(metrics) == {"ngram", "gru", "birnn"}
    for name, values in metrics.items():
        assert values["test_tokens"] == stats["test"]["tokens"], name
        assert 1 < values["test_ppl"] < len(vocab), name
        assert values["test_chars"] == stats["test"]["chars"], name
        for key in report.WITH_INTERVALS:
            assert values[f"{key}_ci_low"] <= values[key] <= values[f"{key}_ci_high"], (name, key)
        if values["objective"] == "causal":   # whitespace tokens are the words: the same number
            assert values["test_word_ppl"] == pytest.approx(values["test_ppl"], rel=1e-9), name
    assert set(json.loads((root / "metrics" / "pairs.json").read_text())) == {   # no cloze mixture
        "gru_vs_ngram", "gru+ngram_vs_gru", "gru+ngram_vs_ngram"}
    assert set(json.loads((root / "metrics" / "interpolation.json").read_text())) == {"gru+ngram"}


def test_documents_split_of_a_raw_text(workdir, capsys):
    root, texts = workdir
    (root / "book.txt").write_text("\n".join(texts["train"]) + "\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["corpus"].update(source="book.txt")
    params["split"].update(method="documents", valid=0.1, test=0.1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "split by documents" in _stage(capsys, prepare_stage, "data")
    stats = json.loads((root / "data" / "stats.json").read_text())
    # 60 headings and 180 paragraphs, each ended by a blank line: 240 documents
    assert stats["split_method"] == "documents"
    assert {k: stats[k]["documents"] for k in ("train", "valid", "test")} == {"train": 192, "valid": 24, "test": 24}
    assert stats["interval_unit"] == "documents" and stats["test"]["units"] == 24
    assert sum(stats[k]["sentences"] for k in ("train", "valid", "test")) == len(texts["train"])
