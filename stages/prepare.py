"""Stage prepare: corpus source (params corpus.*) -> OUT/{train,valid,test}.npy, vocab.json,
stats.json. Usage: python -m stages.prepare data/prepared"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from pipeline import config, corpus
from pipeline.vocab import Vocab, split_stats


def main(out_dir: str) -> None:
    params = config.load()
    lines = corpus.read_lines(params.corpus.source)
    print(f"prepare: read {len(lines):,} lines from {params.corpus.source}", flush=True)
    sentences = corpus.sentences(lines, params.corpus.level, params.corpus.lowercase,
                                 params.corpus.max_sentences)
    if not sentences:
        raise corpus.CorpusError(f"corpus.source={params.corpus.source!r} holds no tokens; "
                                 "give a text with at least one non-blank line")
    parts = corpus.split(len(sentences), params.split.valid, params.split.test, params.seed)
    vocab = Vocab.build([sentences[i] for i in parts["train"]], params.vocab.min_count,
                        params.vocab.max_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = {"vocab_size": len(vocab),
             "corpus_hash": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]}
    for name, indices in parts.items():
        stream = vocab.stream([sentences[i] for i in indices])
        np.save(out / f"{name}.npy", stream)
        stats[name] = split_stats(stream)
        print(f"prepare: {name}: {stats[name]}", flush=True)
    (out / "vocab.json").write_text(json.dumps(vocab.to_json(), ensure_ascii=False))
    (out / "stats.json").write_text(json.dumps(stats, indent=2))


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
