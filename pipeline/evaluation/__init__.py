"""Evaluation, one path for every model. In: trained n-gram and recurrent models and the valid
and test token streams. Out: the log-probability and rank of every target token (`scoring`), the
metrics computed once from them (perplexity, bits per token, top-k accuracy), tasks beyond
perplexity (fill-in-the-blank, probes, sampling: `tasks`), and the report files DVC tracks as
metrics and plots (`report`). Imports text/, ngram/ and neural/; never MLflow.
"""
