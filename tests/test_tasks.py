"""Fill-in-the-blank, probes and generation over one interface for n-gram and RNN models."""
import numpy as np
import psutil
import pytest
import torch

from pipeline import out_of_core
from pipeline.evaluation import models, scoring, tasks
from pipeline.neural.batches import pad_sentences, sentences_of
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.ngram import counting, kneser_ney
from pipeline.text.vocab import BOS_ID, EOS_ID

WORDS = ("<unk>", "<s>", "</s>") + tuple("w" + chr(97 + i % 26) * (1 + i // 26) for i in range(27)) + (".",)


def _stream(seed, sentences=200):
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(sentences):   # a learnable language: runs of consecutive words
        start = rng.integers(3, 20)
        parts.append(np.concatenate([[BOS_ID], np.arange(start, start + rng.integers(3, 9)), [30, EOS_ID]]))
    return np.concatenate(parts).astype(np.int64)


@pytest.fixture(scope="module")
def ngram():
    return models.NgramModel(kneser_ney.estimate(counting.count(_stream(0), 31, 3),
                                                fallback=(0.5, 1.0, 1.5)))


@pytest.fixture(scope="module")
def rnn():
    torch.manual_seed(0)
    return models.RecurrentModel(RNNLM(ModelConfig(vocab_size=31, cell="gru", embed_dim=8,
                                                hidden_dim=8, dropout=0.0)))


def test_sentence_logprobs_are_the_scoring_path(ngram, rnn):
    sentences = sentences_of(_stream(1, 12))
    ours = ngram.sentence_logprobs(sentences)
    np.testing.assert_allclose(ours, [scoring.ngram_logprobs(ngram.lm, s).sum() for s in sentences])
    ours = rnn.sentence_logprobs(sentences)
    direct = [scoring.causal_scores(rnn.model, s, num_columns=1).logprobs.sum() for s in sentences]
    np.testing.assert_allclose(ours, direct, rtol=1e-5)


def test_rnn_fills_batched_equal_whole_sentences(rnn):
    """Fills of several lengths, blanks first and last, more candidates than a batch: the batched
    causal path equals the whole filled sentences scored; the cloze path, each sentence alone."""
    sentences = sentences_of(_stream(2, 6))
    fills = [(s, position, np.arange(3, 31)) for s in sentences for position in (1, len(s) - 2)]
    fills.append((sentences[0], 2, np.arange(3, 31).repeat(12)))   # 336 rows: two batches
    fast = rnn.fill_logprobs(fills)
    slow = models.LanguageModel.fill_logprobs(rnn, fills)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    sentence, candidates = sentences[0], np.arange(3, 31)
    open_end = rnn.fill_logprobs([(sentence, 2, candidates)], open_end=True)[0]
    np.testing.assert_allclose(np.exp(open_end), rnn.next_distributions([sentence[:2]])[0][0][candidates],
                               rtol=1e-5)
    torch.manual_seed(0)
    cloze = models.RecurrentModel(RNNLM(ModelConfig(vocab_size=31, cell="gru", embed_dim=8, hidden_dim=8,
                                                    dropout=0.0, bidirectional=True)))
    for (s, position, c), logp in zip(fills, cloze.fill_logprobs(fills), strict=True):
        tokens, lengths = pad_sentences([s])
        alone = torch.log_softmax(cloze.model.cloze(tokens, lengths)[0, position - 1], -1)[c]
        np.testing.assert_allclose(logp, alone.detach().double().numpy(), rtol=1e-5)


def test_blanks_are_reproducible_and_fair():
    test, frequency = _stream(3, 50), np.bincount(_stream(0), minlength=len(WORDS))
    blanks = tasks.make_blanks(test, frequency, WORDS, count=30, seed=7)
    again = tasks.make_blanks(test, frequency, WORDS, count=30, seed=7)
    assert len(blanks) == 30
    for b, c in zip(blanks, again, strict=True):
        assert b.position == c.position and (b.candidates == c.candidates).all()
        assert b.candidates[b.answer] == b.sentence[b.position]
        assert len(set(b.candidates.tolist())) == 5
        assert all(WORDS[i].startswith("w") for i in b.candidates)   # words, never "." or specials
        # distractors are the answer's frequency-rank neighbours
        ranks = np.argsort(np.argsort(-frequency[3:30], kind="stable"), kind="stable")
        spread = ranks[b.candidates - 3]
        assert spread.max() - spread.min() <= 4


def test_a_model_that_knows_the_language_fills_blanks(ngram, rnn):
    blanks = tasks.make_blanks(_stream(3, 80), np.bincount(_stream(0), minlength=len(WORDS)), WORDS, count=60, seed=0)
    assert np.mean(tasks.blank_correct(ngram, blanks)) > 0.8      # chance is 0.2
    assert 0 <= np.mean(tasks.blank_correct(rnn, blanks)) <= 1


def test_a_test_split_without_vocabulary_words_is_refused_before_scoring():
    all_unknown = np.array([BOS_ID, 0, 0, EOS_ID] * 5, dtype=np.int64)
    with pytest.raises(ValueError, match="test.npy"):
        tasks.make_blanks(all_unknown, np.bincount(_stream(0), minlength=len(WORDS)), WORDS, count=10, seed=0)


def test_probes(ngram, rnn):
    encode = lambda text: [WORDS.index(t) for t in text.split()]  # noqa: E731
    ranked = tasks.run_probe(ngram, {"rank": ["wd we wf .", "wf we wd ."]}, encode, WORDS)
    assert [r["text"] for r in ranked] == ["wd we wf .", "wf we wd ."]
    options = tasks.run_probe(ngram, {"text": "wd we ___ wg .", "options": ["wj", "wf"]}, encode, WORDS)
    assert options[0]["text"] == "wf"
    top = tasks.run_probe(rnn, {"text": "wd we ___", "top": 3, "open": True}, encode, WORDS)
    assert len(top) == 3 and top[0]["logprob"] >= top[-1]["logprob"]
    probe = {"name": "two", "text": "wd ___ .", "options": ["we wf"]}
    skipped = tasks.run_probe(ngram, probe, encode, WORDS)
    assert skipped == [{"skipped": "option 'we wf' is 2 tokens; a fill probe fills one token"}]
    # evaluate reports such a probe (word options under the chars tokenizer) as skipped
    from pipeline.evaluation.report import probes_markdown
    page = probes_markdown([probe], {"ngram": [[{"skipped": "option 'we wf' is 2 tokens"}]]})
    assert "Skipped: option 'we wf' is 2 tokens." in page


@pytest.mark.parametrize("which", ["ngram", "rnn"])
def test_sampling_is_seeded_and_greedy_at_low_temperature(which, ngram, rnn):
    model = ngram if which == "ngram" else rnn
    first = tasks.sample(model, 4, temperature=1.0, max_length=12, seed=3)
    again = tasks.sample(model, 4, temperature=1.0, max_length=12, seed=3)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert all(len(s) <= 12 and BOS_ID not in s for s in first)
    greedy = tasks.sample(model, 3, temperature=1e-4, max_length=8, seed=1)
    assert all((g == greedy[0]).all() for g in greedy)


def test_every_model_scores_exactly_the_same_target_tokens(ngram, rnn):
    """The perplexity contract: n-gram, causal RNN and cloze RNN all predict every word, `<unk>`
    and `</s>` of the split, and never `<s>` — the same N tokens, in the same order."""
    stream = _stream(4, 25)
    stream[5] = 0  # an <unk>
    torch.manual_seed(0)
    cloze = RNNLM(ModelConfig(vocab_size=31, bidirectional=True, embed_dim=8, hidden_dim=8, dropout=0.0))
    counts = {len(scoring.ngram_scores(ngram.lm, stream).logprobs),
              len(scoring.causal_scores(rnn.model, stream).logprobs),
              len(scoring.cloze_scores(cloze, stream).logprobs)}
    assert counts == {int(np.sum(stream != BOS_ID))}
    # n-gram and RNN per-token results line up with the stream: </s> positions agree
    eos = stream[stream != BOS_ID] == EOS_ID
    per_token = scoring.causal_scores(rnn.model, stream, num_columns=1)
    direct = [scoring.causal_scores(rnn.model, s, num_columns=1).logprobs[-1] for s in sentences_of(stream)]
    np.testing.assert_allclose(per_token.logprobs[eos][:1], direct[:1], rtol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_generation_carries_the_recurrent_state(cell, monkeypatch):
    """One step per generated token: the tokens fed to the network grow linearly with the
    length (the old loop fed every prefix again: ~n²/2), and the sentences are those of
    rescoring each whole prefix."""
    class Rescoring(models.RecurrentModel):   # each whole prefix read again, no state carried
        def next_distributions(self, prefixes, state=None):
            return np.concatenate([super(Rescoring, self).next_distributions([p])[0]
                                   for p in prefixes]), None

    torch.manual_seed(0)
    rnn = models.RecurrentModel(RNNLM(ModelConfig(vocab_size=31, cell=cell, embed_dim=8, hidden_dim=8,
                                               dropout=0.0)))
    expected = tasks.sample(Rescoring(rnn.model), 4, temperature=1.0, max_length=30, seed=5)
    fed = []
    forward = type(rnn.model).forward
    monkeypatch.setattr(type(rnn.model), "forward",
                        lambda self, tokens, state=None: fed.append(tokens.numel()) or
                        forward(self, tokens, state))
    got = tasks.sample(rnn, 4, temperature=1.0, max_length=30, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    steps = max(len(s) for s in got) + 1        # + the step that drew </s> (or the cap)
    assert sum(fed) <= 4 * steps and len(fed) <= steps


def test_fills_over_the_vocabulary_never_propose_unk_and_mark_unknown_words(ngram, rnn):
    index = {w: i for i, w in enumerate(WORDS)}

    def encode(text):
        return np.array([index.get(w, 0) for w in text.split()], dtype=np.int64)

    def unknown(text):
        return [w for w in text.split() if w not in index]
    for model in (ngram, rnn):
        rows = tasks.run_probe(model, {"text": "wd we ___ zzz", "open": True}, encode, WORDS, unknown)
        assert len(rows) == len(WORDS) - 3 and "<unk>" not in {r["text"] for r in rows}
        assert all(r["oov"] == [] and r["context_oov"] == ["zzz"] for r in rows)
        options = tasks.run_probe(model, {"text": "wd ___ .", "options": ["we", "qq"]}, encode,
                                  WORDS, unknown)
        assert {r["text"]: r["oov"] for r in options} == {"we": [], "qq": ["qq"]}
        ranked = tasks.run_probe(model, {"rank": ["wd we", "wd qq"]}, encode, WORDS, unknown)
        assert {r["text"]: r["oov"] for r in ranked} == {"wd we": [], "wd qq": ["qq"]}


def test_ngram_tables_are_checked_as_the_scorer_reads_them(ngram, tmp_path):
    """NGramLM.problem: what log10_probs and gram_ids assume (sorted keys, log10 p finite and
    <= 0 but <s>'s -inf, finite backoffs); an estimated model has none of these problems."""
    from pipeline.ngram.backoff import NGramLM
    lm = ngram.lm
    assert lm.problem() is None and lm.log10_prob[0][BOS_ID] == -np.inf

    def changed(n, field, at, value):
        tables = {k: [a.copy() for a in getattr(lm, k)] for k in ("keys", "log10_prob", "log10_backoff")}
        tables[field][n][at] = value
        return NGramLM(lm.vocab_size, **tables, discounts=lm.discounts).problem()
    assert "order-2 keys out of order" in changed(1, "keys", 0, lm.keys[1][1])
    assert "order-3 keys out of order or out of range" in changed(2, "keys", -1, 10**12)
    assert "order-1 keys other than the word ids" in changed(0, "keys", 4, 5)
    assert "non-finite log10 probabilities (1 of order 1, the first -inf at entry 4)" in changed(
        0, "log10_prob", 4, -np.inf)
    assert "positive log10 probabilities" in changed(2, "log10_prob", 0, 1e-3)
    assert changed(2, "log10_prob", 0, 1e-12) is None     # rounding of p = 1
    assert "non-finite log10 backoffs" in changed(1, "log10_backoff", 0, np.nan)
    # memory-mapped tables (evaluate's model.npz) are checked a slice at a time, read, not mapped
    np.save(tmp_path / "keys.npy", lm.keys[2])
    mapped = np.load(tmp_path / "keys.npy", mmap_mode="r")
    read = list(out_of_core.chunks(mapped, 7))
    assert np.array_equal(np.concatenate(read), lm.keys[2]) and all(type(c) is np.ndarray for c in read)


def test_released_pages_leave_the_resident_set(tmp_path):
    """out_of_core.release: what a mapped table's lookups touched no longer counts in RSS."""
    np.save(tmp_path / "big.npy", np.ones(1 << 23))                   # 64 MiB
    mapped, process = np.load(tmp_path / "big.npy", mmap_mode="r"), psutil.Process()
    before = process.memory_info().rss
    assert mapped.sum() == 1 << 23
    touched = process.memory_info().rss
    out_of_core.release([mapped[:10], np.ones(3)])   # a view's whole map; other arrays left alone
    assert touched - before > 60 * 2**20 > process.memory_info().rss - before
    assert mapped[-1] == 1                                            # read again from the page cache


def test_a_model_file_with_nan_weights_is_refused(rnn, tmp_path):
    from pipeline.errors import StateError
    folder = tmp_path / "models" / "gru"
    folder.mkdir(parents=True)
    state = {k: v.clone() for k, v in rnn.model.state_dict().items()}
    torch.save({"config": rnn.model.config.checkpoint(), "state_dict": state}, folder / "model.pt")
    assert models.load_model(folder, 31).path == folder / "model.pt"   # found in the folder
    next(iter(state.values())).view(-1)[0] = float("inf")
    torch.save({"config": rnn.model.config.checkpoint(), "state_dict": state}, folder / "model.pt")
    with pytest.raises(StateError, match=r"model\.pt: damaged, holds NaN or infinite weights .*"
                                         r"dvc repro -f -s train@gru"):
        models.load_model(folder / "model.pt", 31)
