"""Stage prepare: corpus source (params corpus.*) -> OUT/{train,valid,test}.npy, vocab.json,
stats.json. Usage: python -m stages.prepare data/prepared"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from pipeline import config, files
from pipeline.text import corpus
from pipeline.text.vocab import SPECIALS, Vocab, split_stats


def main(out_dir: str) -> None:
    params = config.load()
    config.check_machine(params.train)   # refuse impossible training before hours of preparing
    c = params.corpus
    lines = corpus.read_lines(c.source, c.encoding_errors, c.sha256)
    print(f"prepare: read {len(lines):,} lines from {c.source}", flush=True)
    report = {}
    sentences = corpus.sentences(lines, c.level, c.lowercase, c.max_sentences, c.max_line_tokens,
                                 report)
    if not sentences:
        raise corpus.CorpusError(f"corpus.source={c.source!r} holds no tokens (an empty file, or "
                                 "only blank lines); give a text with at least one non-blank line")
    if report["lines_cut"]:
        print(f"prepare: {report['lines_cut']:,} line(s) longer than corpus.max_line_tokens="
              f"{c.max_line_tokens} were cut into sentences of at most that many tokens", flush=True)
    parts = corpus.split(len(sentences), params.split.valid, params.split.test, params.seed)
    vocab = Vocab.build([sentences[i] for i in parts["train"]], params.vocab.min_count,
                        params.vocab.max_size)
    if len(vocab) == len(SPECIALS):
        raise corpus.CorpusError(f"the vocabulary is empty: no train word occurs vocab.min_count="
                                 f"{params.vocab.min_count} times; lower vocab.min_count or use a "
                                 "larger corpus")
    out = Path(out_dir)
    stats = {"vocab_size": len(vocab),
             "corpus_hash": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]}
    if report["lines_cut"]:
        stats["lines_cut"] = report["lines_cut"]
    if c.encoding_errors == "replace":
        stats["replaced_characters"] = sum(line.count("\ufffd") for line in lines)
    for name, indices in parts.items():
        stream = vocab.stream([sentences[i] for i in indices])
        with files.atomic_file(out / f"{name}.npy") as scratch:
            np.save(scratch, stream)
        stats[name] = split_stats(stream)
        print(f"prepare: {name}: {stats[name]}", flush=True)
    files.write_text(out / "vocab.json", json.dumps(vocab.to_json(), ensure_ascii=False))
    files.write_text(out / "stats.json", json.dumps(stats, indent=2))


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
