"""The probes file (evaluate.probes, configs/probes.yaml) is checked whole, before any scoring,
by evaluation.probes.load_probes (a pydantic model per probe): one line naming the file, the probe (its
number from 1 and its name), the key and the fix. The repository's file passes unchanged."""
import re

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


def _write(tmp_path, text: str):
    path = tmp_path / "probes.yaml"
    path.write_text(text)
    return path


FILL = "{name: agreement, text: 'they ___ everywhere .', "


@pytest.mark.parametrize(("text", "message"), [
    # the replayed ones
    ("- {name: translation, rank: abc}",
     r"probe 1 \('translation'\): rank must be a list of sentences, e\.g\. .*, not 'abc'; fix the file"),
    (f"- {FILL}open: true}}",
     r"probe 1 \('agreement'\): a text: probe needs options: \[words\] .* or top: K .*every word of "
     r"the vocabulary"),
    (f"- {FILL}top: 3, tpo: 3}}", r"unknown key 'tpo'; did you mean top\? \(a probe has name, about, "
                                  r"rank, text, options, top, open\); fix the file"),
    (f"- {{name: x, rank: [a b]}}\n- {FILL}options: [1, 2]}}",
     r"probe 2 \('agreement'\): options must be a list of words, e\.g\. \[are, is\], not \[1, 2\]; "
     r"fix the file$"),
    (f"- {FILL}top: 0}}", r"top must be a whole number >= 1 .*, not 0; fix the file"),
    (f"- {FILL}top: -2}}", r"top must be a whole number >= 1 .*, not -2"),
    (f"- {FILL}top: 2.5}}", r"top must be a whole number >= 1 .*, not 2\.5"),
    (f"- {FILL}top: true}}", r"top must be a whole number >= 1 .*, not true"),
    (f"- {FILL}top: '3'}}", r"top must be a whole number >= 1 .*, not '3'"),
    ("- {name: a, text: they run ., top: 3}",
     r"probe 1 \('a'\): text 'they run \.' has no ___; mark the one word to fill with ___"),
    ("- {name: a, text: ___ run ___, top: 3}", r"text '___ run ___' has 2 ___"),
    (f"- {FILL}top: 3, open: yes}}", r"open must be true or false, not 'yes'"),
    # shapes
    ("- {name: a, rank: [a b], top: 3}", r"top belongs to a text: probe .*, not to rank:; remove it$"),
    ("- {name: a, rank: [a b], open: false}", r"open belongs to a text: probe"),
    ("- {name: a, rank: [a b], text: a ___}", r"has both rank: and text:; .*split it in two"),
    ("- {name: a, about: nothing}", r"needs rank: \(sentences to rank\) or text: .*; add one"),
    ("- {name: a, rank: []}", r"rank must be a list of sentences.*, not \[\]"),
    ("- {name: a, rank: [a b, 5]}", r"rank must be a list of sentences.*, not \['a b', 5\]"),
    ("- {name: a, rank: [a ___ b ___]}", r"rank sentence 'a ___ b ___' has 2 ___"),
    (f"- {FILL}options: []}}", r"options must be a list of words.*, not \[\]"),
    (f"- {FILL}options: are}}", r"options must be a list of words.*, not 'are'"),
    (f"- {FILL}options: [are you, is]}}", r"options must be a list of words.*, not \['are you', 'is'\]"),
    ("- {name: 5, rank: [a b]}", r"probe 1: name must be a string naming the probe .*, not 5"),
    ("- {rank: [a b], about: [x]}", r"probe 1: about must be a string .*, not \['x'\]"),
    ("- just words", r"probe 1: must be a mapping \(name:, rank: or text:, \.\.\.\), not 'just words'"),
    ("{name: a, rank: [a b]}", r"must be a list of probes \(mappings with rank: or text:\), not \{"),
    ("", r"is empty; give a list of probes \(`git checkout configs/probes\.yaml` restores"),
    ("# every probe commented out\n", r"is empty; give a list of probes"),
    ("- {name: a, rank: [unclosed", r"not valid YAML \(line 2, column 1\)"),
])
def test_a_bad_probe_is_one_line_naming_file_probe_and_key(tmp_path, text, message):
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ParamsError) as raised:
        load_probes(path)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(f"{path}: "), line
    assert re.search(message, line), line


def test_the_file_is_named_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "probes.yaml").write_text(f"- {FILL}options: [1, 2]}}\n")
    with pytest.raises(ParamsError, match=r"^configs/probes\.yaml: probe 1 \('agreement'\): "
                                          r"options must be a list of words"):
        load_probes(tmp_path / "configs" / "probes.yaml")
    with pytest.raises(ParamsError, match=r"^evaluate\.probes='nosuch\.yaml': no such file"):
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
    with pytest.raises(ParamsError, match=r"probe 1 \('agreement'\): options: 'end\.' is 2 tokens "
                                          r"under corpus\.tokenizer words; a fill puts one token"):
        load_probes(path, _encode, "words")


def test_under_chars_a_word_option_is_left_to_evaluate_which_skips_it(tmp_path):
    """Under corpus.tokenizer: chars every word is several tokens: evaluate reports the probe
    as skipped (tasks.ProbeNotApplicable), as it always has, instead of refusing the file."""
    path = _write(tmp_path, f"- {FILL}options: [are, is]}}\n")
    chars = lambda text: [ord(ch) for ch in text.replace(" ", "")]  # noqa: E731
    probes = load_probes(path, chars, "chars")
    with pytest.raises(tasks.ProbeNotApplicable, match="fills one token"):
        tasks.run_probe(None, probes[0], chars, ("<unk>", "<s>", "</s>"))
