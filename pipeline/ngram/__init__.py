"""Counted n-gram models. In: a token-id stream from text/. Out: `NgramCounts` (`counting`), an
`NGramLM` (interpolated modified Kneser-Ney as KenLM's lmplz estimates it, or MLE; `kneser_ney`)
scoring every target token, ARPA files written and read (`arpa`); in memory or out of core within
a budget (`external`), by one build for the stage and the CLI (`builder`) and one writer per stage
file (`outputs`, the only user of pandas and pyarrow here). Never torch, Lightning or MLflow.
"""
