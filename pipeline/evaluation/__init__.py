"""Evaluation, one path for every model: scoring, bootstrap intervals, tasks beyond perplexity,
the metrics/ files DVC tracks (run.py). Imports text/, ngram/, neural/; never MLflow."""
