"""Evaluation, one path for every model. In: trained models, the valid and test streams. Out: each
target's ln p and rank (scoring), metrics with bootstrap intervals (report, bootstrap), tasks
beyond perplexity (tasks), the metrics/ files DVC tracks. Imports text/, ngram/, neural/; never MLflow."""
