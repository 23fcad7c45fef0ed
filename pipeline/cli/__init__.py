"""The `lmpipe` command: `main` parses every argument; a module per family of commands (`models`:
score, fill, generate; `ngram`: build, query; `experiments`: compare, mlflow-server, retrain;
`presets`; `seeds`). The top of the flow: may import any folder."""
