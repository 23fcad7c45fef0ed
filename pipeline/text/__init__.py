"""The corpus side: `corpus`, `tokenizers`, `splits`, `units`, `vocab` (a Vocab, int32 id streams),
written by `chunked` (prepare). Of lmpipe it imports only files.py; never torch or MLflow."""
