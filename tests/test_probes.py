"""The probes file (evaluate.probes, configs/probes.yaml) is checked whole, before any scoring,
by evaluation.probes.load_probes (a pydantic model per probe): one line naming the file, the probe (its
number from 1 and its name), the key and the fix. The repository's file passes unchanged."""
import pytest

from pipeline import files
from pipeline.config import ParamsError
from pipeline.evaluation import tasks
from pipeline.evaluation.probes import load_probes

from .conftest import ROOT

PROBES = ROOT / "configs" / "probes.yaml"


def test_the_repository_probes_pass_unchanged():
    """What evaluate scores is exactly what the file says (so metrics/probes.md is unchanged):
    the same dicts, keys and values, as the parser DVC uses reads them."""
    probes = load_probes(PROBES)
    assert probes == files.read_yaml(PROBES)
    assert [p["name"] for p in probes] == ["translation", "nour", "agreement", "louise"]
    words = {w for p in probes for t in (p.get("rank") or [p["text"]]) + p.get("options", [])
             for w in t.replace(tasks.BLANK, " ").split()}
    vocab = sorted(words)
    encode = lambda text: [vocab.index(w) for w in text.split()]  # noqa: E731
    assert load_probes(PROBES, encode, "words") == probes


def names(line: str, *things: str) -> None:
    """Each thing (the probe, a key, a value, a word of the fix) stands in the line."""
    missing = [thing for thing in things if thing not in line]
    assert not missing, (missing, line)


def _write(tmp_path, text: str):
    path = tmp_path / "probes.yaml"
    path.write_text(text)
    return path


FILL = "{name: agreement, text: 'they ___ everywhere .', "


@pytest.mark.parametrize(("text", "named"), [   # named: the probe, key, value and fix the line names
    # the replayed ones
    ("- {name: translation, rank: abc}", ("probe 1 ('translation')", "rank", "'abc'")),
    (f"- {FILL}open: true}}", ("probe 1 ('agreement')", "options", "top")),
    (f"- {FILL}top: 3, tpo: 3}}", ("'tpo'", "did you mean top?")),   # the hint is the point
    (f"- {{name: x, rank: [a b]}}\n- {FILL}options: [1, 2]}}", ("probe 2 ('agreement')", "options", "[1, 2]")),
    (f"- {FILL}top: 0}}", ("probe 1 ('agreement')", "top", "0")),
    (f"- {FILL}top: -2}}", ("top", "-2")),
    (f"- {FILL}top: 2.5}}", ("top", "2.5")),
    (f"- {FILL}top: true}}", ("top", "True")),
    (f"- {FILL}top: '3'}}", ("top", "'3'")),
    ("- {name: a, text: they run ., top: 3}", ("probe 1 ('a')", "'they run .'", "___")),
    ("- {name: a, text: ___ run ___, top: 3}", ("'___ run ___'", "2 ___")),
    (f"- {FILL}top: 3, open: yes}}", ("open", "'yes'")),
    # shapes
    ("- {name: a, rank: [a b], top: 3}", ("top", "rank:", "remove")),
    ("- {name: a, rank: [a b], open: false}", ("open", "rank:")),
    ("- {name: a, rank: [a b], text: a ___}", ("rank:", "text:", "split")),
    ("- {name: a, about: nothing}", ("probe 1 ('a')", "rank:", "text:")),
    ("- {name: a, rank: []}", ("rank", "one or more")),
    ("- {name: a, rank: [a b, 5]}", ("rank", "['a b', 5]")),
    ("- {name: a, rank: [a ___ b ___]}", ("'a ___ b ___'", "2 ___")),
    (f"- {FILL}options: []}}", ("options", "one or more")),
    (f"- {FILL}options: are}}", ("options='are' has the wrong type; list one or more single words, e.g. [are, is]",)),
    (f"- {FILL}options: [are you, is]}}", ("options", "['are you', 'is']")),
    ("- {name: 5, rank: [a b]}", ("probe 1:", "name", "5")),
    ("- {rank: [a b], about: [x]}", ("probe 1:", "about", "['x']")),
    ("- just words", ("probe 1:", "'just words'")),
    ("{name: a, rank: [a b]}", ("list", "{'name'")),
    ("", ("empty", "git checkout configs/probes.yaml")),
    ("# every probe commented out\n", ("empty",)),
    ("- {name: a, rank: [unclosed", ("YAML", "line 2, column 1")),
])
def test_a_bad_probe_is_one_line_naming_file_probe_and_key(tmp_path, text, named):
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ParamsError) as raised:
        load_probes(path)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(f"{path}: "), line
    names(line, *named)


def test_the_file_is_named_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "probes.yaml").write_text(f"- {FILL}options: [1, 2]}}\n")
    with pytest.raises(ParamsError, match=r"^configs/probes\.yaml: probe 1 \('agreement'\): options"):
        load_probes(tmp_path / "configs" / "probes.yaml")
    with pytest.raises(ParamsError, match=r"^evaluate\.probes='nosuch\.yaml'"):
        load_probes(tmp_path / "nosuch.yaml")


def test_an_empty_list_is_no_probes(tmp_path):
    assert load_probes(_write(tmp_path, "[]\n")) == []


def test_null_keys_are_left_out(tmp_path):
    """`open: null` (or ~) is as good as no open: run_probe sees only the keys given."""
    probes = load_probes(_write(tmp_path, f"- {FILL}top: 2, open: null, about: ~}}\n"))
    assert probes == [{"name": "agreement", "text": "they ___ everywhere .", "top": 2}]


def _encode(text: str) -> list[int]:
    """A words-like tokeniser: a trailing period is a token of its own."""
    return [hash(t) for t in text.replace(".", " .").split()]


def test_options_must_be_one_token_under_the_corpus_tokenizer(tmp_path):
    path = _write(tmp_path, f"- {FILL}options: [are, end.]}}\n")
    assert load_probes(path)   # the file alone is fine: the tokenizer decides
    with pytest.raises(ParamsError) as raised:
        load_probes(path, _encode, "words")
    names(str(raised.value), "probe 1 ('agreement')", "'end.'", "2 tokens", "corpus.tokenizer")


def test_under_chars_a_word_option_is_left_to_evaluate_which_skips_it(tmp_path):
    """Under corpus.tokenizer: chars every word is several tokens: evaluate reports the probe
    as skipped (one {"skipped": why} row), as it always has, instead of refusing the file."""
    path = _write(tmp_path, f"- {FILL}options: [are, is]}}\n")
    chars = lambda text: [ord(ch) for ch in text.replace(" ", "")]  # noqa: E731
    probes = load_probes(path, chars, "chars")
    [row] = tasks.run_probe(None, probes[0], chars, ("<unk>", "<s>", "</s>"))
    assert "option 'are' is 3 tokens" in row["skipped"]
