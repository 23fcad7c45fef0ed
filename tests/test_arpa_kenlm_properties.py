"""ARPA files as KenLM reads them (the `kenlm` module, a dev extra): hypothesis re-spells a small
model's numbers (printf's spellings), spacing, line endings and encoding, prunes entries and may
break one line. lmpipe then scores every sentence as KenLM does, or both refuse the file, lmpipe
with one line naming the line KenLM names. Orders 2-5: KenLM's probing model refuses order 1."""
import io
import random
import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pipeline.ngram import arpa, counting, kneser_ney
from pipeline.ngram.arpa import ArpaError
from pipeline.text.vocab import BOS_ID, EOS_ID, Vocab

from .oracle_prepare import vocab_of
from .test_properties import examples

kenlm = pytest.importorskip("kenlm", reason="the kenlm module (dev extra) is not installed")

WORDS = st.sampled_from(("a", "b", "c", "d", "rivière", "ça"))   # Latin-1 can spell them all
corpora = st.lists(st.lists(WORDS, min_size=1, max_size=6), min_size=1, max_size=8)
SPELLINGS = ("{:.%de}", "{:.%dE}", "{:.%df}", "{:.%dg}", "{:#.%dg}")   # %d: 0 to 25 digits
# one defect KenLM refuses: (what, where): a number, the tab after a 1-gram's probability, a line end
DEFECTS = (("-0_5", "number"), ("-0x1p-1", "number"), ("--0.5", "number"), ("0.5", "number"),
           ("nan", "number"), ("-Infinity", "number"), ("-0.5.1", "number"), (" ", "tab"),
           (" ", "end"), ("\t", "end"), ("\t-0.1", "top"), ("", "orphan"), ("", "word"))


def _entries(corpus, order) -> dict[int, list[list]]:
    """{n: [[log10 p, words, log10 backoff or None], ...]} of lmpipe's model of `corpus`."""
    assume(max(map(len, corpus)) + 2 >= order)   # as tests/test_arpa.py: counting needs one n-gram
    vocab = vocab_of(corpus, 1, 0)
    counts = counting.count(vocab.stream(corpus), len(vocab), order)
    buffer = io.BytesIO()
    arpa.write(kneser_ney.estimate(counts, fallback=(0.5, 1.0, 1.5)), counts, vocab.tokens, buffer)
    grams = {}
    for n, section in enumerate(re.split(r"\n\\\d-grams:\n", buffer.getvalue().decode())[1:], 1):
        rows = [line.split("\t") for line in section.splitlines() if "\t" in line]
        grams[n] = [[float(r[0]), r[1].split(" "), float(r[2]) if len(r) > 2 else None] for r in rows]
    return grams


def _prune(grams, rng) -> None:
    """Drop entries of orders >= 2 that are no kept entry's context (KenLM fills missing suffixes)."""
    for n in range(len(grams), 1, -1):
        contexts = {tuple(w[:-1]) for _, w, _ in grams.get(n + 1, [])}
        grams[n] = [g for g in grams[n] if tuple(g[1]) in contexts or rng.random() < 0.7]


def _spell(value: float, rng) -> str:
    if value == int(value) and rng.random() < 0.3:
        text = str(int(value))
    else:
        text = rng.choice(SPELLINGS).replace("%d", str(rng.randint(0, 25))).format(value)
    if rng.random() < 0.2:   # a leading '+', or `-.5` for `-0.5`
        text = "+" + text if not text.startswith("-") else text.replace("-0.", "-.", 1)
    return text


def _render(grams, rng, defect) -> tuple[bytes, str]:
    """(the ARPA text of `grams`, its encoding): any spelling, spacing and line end KenLM reads,
    and `defect` on one line."""
    what, where = defect or ("", "")
    top = len(grams)
    spot = (top if where in ("top", "end") else 1 if where == "tab" else rng.randrange(1, top + 1), rng.random())
    lines = ["\\data\\"] + [f"ngram {n}={len(g)}" for n, g in grams.items()] + [""]
    for n, rows in grams.items():
        lines.append(f"\\{n}-grams:")
        for i, (prob, words, backoff) in enumerate(rows):
            here = defect is not None and (n, i) == (spot[0], int(spot[1] * len(rows))) and not (
                what == "-Infinity" and words == ["<s>"])   # lmpipe reads -inf's Python spellings
            number = ("-inf" if words == ["<s>"] and rng.random() < 0.3 else _spell(prob, rng))
            after = "\t" + rng.choice(["", " ", "\t"]) if n == 1 else rng.choice(["\t", " ", "\t\t", " \t "])
            text = (rng.choice(["", "", " ", "\t"]) + (what if here and where == "number" else number)
                    + (" " if here and where == "tab" else after) + rng.choice([" ", "\t", "  ", " \t"]).join(words))
            if backoff is not None:
                text += "\t" + rng.choice(["", " ", "\t"]) + _spell(backoff, rng)
            lines.append(text + (what if here and where in ("end", "top") else ""))
            lines += [rng.choice(["", "  ", "\t"])] * (rng.random() < 0.1)
        lines.append("")
    encoding = rng.choice(["utf-8", "latin-1"])
    return rng.choice(["\n", "\r\n"]).join(lines + ["\\end\\", ""]).encode(encoding), encoding


def _break(grams, rng, where) -> None:
    """`orphan`: drop the context of a 3-gram; `word`: a 1-gram that a 2-gram uses."""
    if where == "orphan" and len(grams) >= 3 and grams[3]:
        drop = rng.choice(grams[3])[1][:-1]
        grams[2] = [g for g in grams[2] if g[1] != drop]
    elif where == "word" and grams[2]:
        word = rng.choice(grams[2])[1][0]
        grams[1] = [g for g in grams[1] if g[1] != [word]]


def _ours(model, tokens, sentence: bytes) -> np.ndarray:
    """lmpipe's log10 p of each word and </s> of `sentence`, its words as arpa.read spells them."""
    words = sentence.decode("utf-8", "surrogateescape").split()
    return model.log10_probs(np.concatenate([[BOS_ID], Vocab(tokens).encode(words), [EOS_ID]]))


@examples(400)
@given(corpus=corpora, order=st.integers(2, 5), seed=st.integers(0, 2**32),
       defect=st.one_of(st.none(), st.none(), st.sampled_from(DEFECTS)))
def test_lmpipe_reads_and_scores_as_kenlm_does(tmp_path_factory, corpus, order, seed, defect):
    rng = random.Random(seed)
    grams = _entries(corpus, order)
    _prune(grams, rng)
    if defect and defect[1] in ("orphan", "word"):
        _break(grams, rng, defect[1])
    text, encoding = _render(grams, rng, defect)
    path = tmp_path_factory.mktemp("arpa") / "m.arpa"
    path.write_bytes(text)
    try:
        theirs = kenlm.Model(str(path))
    except (OSError, RuntimeError, UnicodeDecodeError) as error:   # the last: a Latin-1 word in its message
        assume("ProbingSizeException" not in str(error))   # too many filled-in suffixes for its table
        with pytest.raises(ArpaError) as caught:
            arpa.read(path)
        assert "\n" not in str(caught.value), caught.value
        at, line = re.search(r"Byte: (\d+)", str(error)), re.search(r": line (\d+):", str(caught.value))
        if at and line:   # KenLM's offset is on lmpipe's line, or after blank lines it skipped reading on
            theirs, ours = text.count(b"\n", 0, int(at.group(1))) + 1, int(line.group(1))
            assert ours <= theirs and not b"".join(text.split(b"\n")[ours:theirs - 1]).strip(), (error, caught.value)
        return
    # KenLM reads an orphan whose context is the suffix of an n-gram before it (filled in as a
    # blank): lmpipe refuses it, and --orphans keep scores it as KenLM
    model, tokens = arpa.read(path, orphans="keep" if defect == ("", "orphan") else "refuse")
    for sentence in [*(" ".join(s) for s in corpus[:3]), "b zebra a", "rivière d ça"]:
        spelled = sentence.encode(encoding)
        full = [score for score, _, _ in theirs.full_scores(spelled)]
        np.testing.assert_allclose(_ours(model, tokens, spelled), full, atol=1e-4)
