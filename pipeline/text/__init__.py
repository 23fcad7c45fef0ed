"""The corpus side: sources (`corpus`), tokens (`tokenizers`), train/valid/test (`splits`),
resampling units (`units`), a `Vocab` and int32 id streams (`vocab`), written by `chunked` (the
prepare stage). Of lmpipe it imports only files.py; never torch or MLflow."""
