"""The `lmpipe` command. `main` parses every argument; the subcommands live by family: `models`
(score, fill, generate), `ngram` (build, query, as KenLM's lmplz and query) and `experiments`
(compare, preset, mlflow-server, retrain). The top of the flow: may import any folder.
"""
