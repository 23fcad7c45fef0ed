"""A tokenizer and a source kind are each one entry of a dict (tokenizers.TOKENIZERS,
corpus.SOURCES): a toy of each, registered here, runs through the whole prepare."""
import json

import numpy as np
import pytest
import yaml

from pipeline import config
from pipeline.text import chunked, corpus, tokenizers
from pipeline.text.tokenizers import Tokenizer, tokenize

from .conftest import ROOT

DOCUMENTS, LINES = 20, 3     # the toy source: 20 documents of 3 lines, the last of each blank


def _reversed_line(line: str, lowercase: bool, unk: str) -> list[str]:
    return [word[::-1] for word in line.split()]


def _reversed_block(text: str, lowercase: bool, unk: str):
    lines = [_reversed_line(line, lowercase, unk) for line in text.split("\n")[:-1]]
    distinct = list(dict.fromkeys(token for line in lines for token in line))
    index = {token: i for i, token in enumerate(distinct)}
    codes = np.array([index[token] for line in lines for token in line], dtype=np.int32)
    return distinct, codes, np.array([len(line) for line in lines], dtype=np.int64)


def _toy_source(source: str, errors: str, sha256: str) -> corpus.Source:
    """`toy:WORD`: DOCUMENTS documents of two lines of WORD and its neighbours and a blank line,
    in one block with the documents it gives."""
    word = source.split(":", 1)[1]
    lines = [f"{word}{d} {word}{d + 1}\n{word}{d % 3}\n\n" for d in range(DOCUMENTS)]
    documents = np.repeat(np.arange(DOCUMENTS), LINES)
    return corpus.Source((source,), False, lambda size: iter([(0, "".join(lines), documents)]))


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setitem(tokenizers.TOKENIZERS, "reversed", Tokenizer(
        _reversed_block, blank_lines_are_sentences=True))
    kind = corpus.Kind(lambda source: source.startswith("toy:"), _toy_source)
    monkeypatch.setattr(corpus, "SOURCES", {"toy": kind, **corpus.SOURCES})


def test_a_toy_tokenizer_and_source_run_through_prepare(toys, tmp_path):
    assert tokenize("abc de", "reversed") == ["cba", "ed"]
    params = config.Params(
        seed=3, corpus=config.CorpusParams(source="toy:ab", tokenizer="reversed"),
        split=config.SplitParams(method="documents", train=0, valid=0.1, test=0.1),
        vocab=config.VocabParams(min_count=1, max_size=0))
    said = []
    chunked.prepare(params, tmp_path, 1 << 30, progress=said.append)
    assert said[0] == f"prepare: read {DOCUMENTS * LINES} lines from toy:ab"
    tokens = json.loads((tmp_path / "vocab.json").read_text())["tokens"]
    assert tokens[3:] and all(token.endswith("ba") for token in tokens[3:])   # reversed "ab.."
    stats = json.loads((tmp_path / "stats.json").read_text())
    # every line is a sentence (a blank one too), and the source's documents are what is split
    assert sum(stats[name]["sentences"] for name in ("train", "valid", "test")) == DOCUMENTS * LINES
    assert {name: stats[name]["documents"] for name in ("train", "valid", "test")} == \
        {"train": DOCUMENTS - 4, "valid": 2, "test": 2}
    streams = [np.load(tmp_path / f"{name}.npy") for name in ("train", "valid", "test")]
    assert sum(int(np.sum(stream == 2)) for stream in streams) == DOCUMENTS * LINES   # </s>


def test_an_unregistered_tokenizer_is_refused_naming_the_key():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["corpus"]["tokenizer"] = "reversed"
    with pytest.raises(config.ParamsError, match=r"^corpus\.tokenizer='reversed' is not allowed"):
        config.from_dict(raw)
