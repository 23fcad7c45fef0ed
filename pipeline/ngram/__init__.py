"""Counted n-gram models. In: a token-id stream from text/. Out: `NgramCounts` (raw counts,
Kneser-Ney adjusted counts and count-of-counts per order, `counting`), an `NGramLM` (interpolated
modified Kneser-Ney as KenLM's lmplz estimates it, or textbook MLE; `kneser_ney`) that gives the
log10 probability of every target token, and ARPA files written and read (`arpa`). Imports text/
and numpy only; never torch, Lightning or MLflow.
"""
