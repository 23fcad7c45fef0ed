"""lmpipe's library. Folders follow the data flow, and imports only point back along it:

    text  ──▶  ngram ─┐
          └─▶ neural ─┴─▶ evaluation ──▶ tracking ──▶ cli        (stages/ call in from outside)

text/        corpus sources and formats, tokenisation, split, vocabulary, token-id streams
ngram/       n-gram counting, Kneser-Ney and MLE estimation, ARPA files
neural/      recurrent cells, the RNN language model, output layer and loss, batching, the
             Lightning shell, resuming
evaluation/  the one scoring path, tasks (fill-in-the-blank, probes, sampling), reports
tracking/    MLflow runs and registry, serving (pyfunc), promotion, retraining from CI
cli/         the `lmpipe` command
config.py    params.yaml as typed, checked params (may import text/ for allowed values)
files.py     outputs written whole or not at all (imports nothing of lmpipe)

A module may import from its own folder, from folders before it in the flow, and config.py and
files.py; tests/test_layout.py fails on any import that points the other way.
"""
