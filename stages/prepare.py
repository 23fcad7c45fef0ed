"""Stage prepare: corpus source (params corpus.*) -> OUT/{train,valid,test}.npy, vocab.json,
stats.json. Usage: python -m stages.prepare data/prepared"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from pipeline import config, files
from pipeline.text import corpus, splits, units
from pipeline.text.vocab import SPECIALS, Vocab, split_stats


def main(out_dir: str) -> None:
    params = config.load()
    config.check_machine(params.train)   # refuse impossible training before hours of preparing
    c, split = params.corpus, params.split
    text = corpus.read(c.source, c.encoding_errors, c.sha256, c.valid_source, c.test_source)
    print(f"prepare: read {len(text.lines):,} lines from {', '.join(text.files)}", flush=True)
    report = {}

    def tokenized(lines):
        return corpus.sentences(lines, c.tokenizer, c.lowercase, c.unk, c.max_sentences,
                                c.max_line_tokens, report)

    wanted = {"train": split.train, "valid": split.valid, "test": split.test}
    method, parts, documents, line_of = splits.divide(text, tokenized, split.method, wanted, params.seed,
                                             c.source)
    if method == "given":
        print(f"prepare: split given by the source ({', '.join(text.files)}); split.* unused",
              flush=True)
    else:
        print(f"prepare: split by {method} ({', '.join(f'{k} {v:g}' for k, v in wanted.items())}"
              f"; 0 = the rest)", flush=True)
    if report["lines_cut"]:
        print(f"prepare: {report['lines_cut']:,} line(s) longer than corpus.max_line_tokens="
              f"{c.max_line_tokens} were cut into sentences of at most that many tokens", flush=True)
    vocab = Vocab.build(parts["train"], params.vocab.min_count, params.vocab.max_size)
    if len(vocab) == len(SPECIALS):
        raise corpus.CorpusError(f"the vocabulary is empty: no train word occurs vocab.min_count="
                                 f"{params.vocab.min_count} times; lower vocab.min_count or use a "
                                 "larger corpus")
    out = Path(out_dir)
    unit, measured = units.measure(text.lines, line_of,
                                   text.documents if method == "documents" else None)
    if method == "documents" and unit != "documents":
        print(f"prepare: valid or test holds fewer than {units.MIN_DOCUMENTS} documents, too few "
              "to resample; intervals resample sentences instead (narrower: neighbours are not "
              "independent)", flush=True)
    with files.atomic_file(out / units.FILE) as scratch:
        np.savez(scratch, **measured)
    stats = {"vocab_size": len(vocab), "split_method": method, "interval_unit": unit,
             "corpus_hash": hashlib.sha256("\n".join(text.lines).encode()).hexdigest()[:16]}
    if report["lines_cut"]:
        stats["lines_cut"] = report["lines_cut"]
    if c.encoding_errors == "replace":
        stats["replaced_characters"] = sum(line.count("\ufffd") for line in text.lines)
    for name in ("valid", "test", "train"):     # train last, as always: a kill leaves no train.npy
        sentences = parts[name]
        if not sentences:
            raise corpus.CorpusError(f"the {name} split is empty ({', '.join(text.files)}); give "
                                     "it at least one line")
        stream = vocab.stream(sentences)
        with files.atomic_file(out / f"{name}.npy") as scratch:
            np.save(scratch, stream)
        stats[name] = split_stats(stream)
        if name in documents:
            stats[name]["documents"] = documents[name]
        if name != "train":
            stats[name]["units"] = len(measured[f"{name}_chars"])
            stats[name].update({field: int(measured[f"{name}_{field}"].sum()) for field in units.FIELDS})
        part = stats[name]
        print(f"prepare: {name}: {part['sentences']:,} sentences, {part['tokens']:,} tokens, "
              f"{part['types']:,} types, OOV rate {part['oov_rate']:.2%}", flush=True)
    files.write_text(out / "vocab.json", json.dumps(vocab.to_json(), ensure_ascii=False))
    files.write_text(out / "stats.json", json.dumps(stats, indent=2))


if __name__ == "__main__":
    sys.exit(config.run_stage(main, sys.argv[1:]))
