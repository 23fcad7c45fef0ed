"""Breakdowns of the test log-loss (pipeline/evaluation/breakdowns.py): hand-checked cells, and
the cells of every breakdown add up to the whole (token counts and log-loss)."""
import json
import math

import numpy as np

from pipeline.evaluation import breakdowns
from pipeline.text.vocab import BOS_ID, UNK_ID


def test_frequency_cells_follow_the_train_counts_and_unk_has_its_own():
    counts = np.array([0, 7, 500, 1, 10, 11, 100, 101, 1000, 1001])   # ids 0-2: <unk>, <s>, </s>
    targets = np.array([UNK_ID, 3, 4, 5, 6, 7, 8, 9, 2])
    cells = breakdowns.by_frequency(targets, counts)
    assert [cells.labels[c] for c in cells.cell] == [
        "<unk>", "1-10", "1-10", "11-100", "11-100", "101-1,000", "101-1,000", "over 1,000", "101-1,000"]


def test_position_cells_count_from_the_word_after_s():
    words = [[5] * n for n in (1, 3, 12)]
    stream = np.concatenate([[BOS_ID, *w, 2] for w in words])
    cells = breakdowns.by_position(stream)
    labels = [cells.labels[c] for c in cells.cell]
    assert labels[:2] == ["1", "2"]                                   # a word and its </s>
    assert labels[2:6] == ["1", "2", "3", "4-10"]
    assert labels[6:] == ["1", "2", "3", *["4-10"] * 7, "11+", "11+", "11+"]
    assert len(labels) == int(np.count_nonzero(stream != BOS_ID))


def test_the_cells_add_up_to_the_whole(rng, tmp_path):
    sentences = [rng.integers(3, 40, rng.integers(1, 15)) for _ in range(120)]
    stream = np.concatenate([[BOS_ID, *s, 2] for s in sentences])
    stream[rng.random(len(stream)) < 0.05] = UNK_ID
    stream[np.concatenate([[0], np.cumsum([len(s) + 2 for s in sentences])[:-1]])] = BOS_ID
    targets = stream[stream != BOS_ID]
    unit = np.repeat(np.arange(120) // 3, [len(s) + 1 for s in sentences])                 # 40 units
    logprobs = {m: np.log(rng.uniform(1e-4, 1, len(targets))) for m in ("ngram", "rnn", "gru")}
    parts = [breakdowns.by_frequency(targets, rng.integers(0, 3000, 40)), breakdowns.by_position(stream),
             breakdowns.by_backoff_order(rng.integers(1, 4, len(targets)), 3)]
    found = breakdowns.tables(parts, logprobs, unit, 40, "ngram", 200, 7, 0.95)
    assert set(found) == {"frequency", "position", "backoff_order"}
    for name, table in found.items():
        cells = table["cells"].values()
        assert sum(c["tokens"] for c in cells) == len(targets), name
        assert math.isclose(sum(c["share"] for c in cells), 1.0)
        for model, lp in logprobs.items():
            assert math.isclose(sum(c[model]["nll_nats"] for c in cells), -lp.sum(), rel_tol=1e-12)
            for c in cells:
                v = c[model]
                assert v["ci_low"] <= v["bits_per_token"] <= v["ci_high"]
                assert math.isclose(v["bits_per_token"], v["nll_nats"] / c["tokens"] / math.log(2))
                assert ("vs_ngram" in v) == (model != "ngram")
    text = breakdowns.markdown(found, "ngram", 0.95)
    assert text.count("### Test log-loss") == 3 and "| \\<unk> |" in text and "| 11+ |" in text   # `<` escaped: a bare <unk> is an HTML tag
    (tmp_path / "plots").mkdir()
    written = breakdowns.write(tmp_path, found, 0.95)
    assert all(path.is_file() for path in written)
    assert json.loads((tmp_path / "breakdowns.json").read_text()) == found
