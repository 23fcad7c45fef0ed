"""Counted n-gram models as KenLM's lmplz builds them: counts (`counting`, out of core: `external`),
Kneser-Ney (`kneser_ney`), ARPA (`arpa`, `read_arpa`), one build (`builder`), the stage's files
(`outputs`, the only user of pandas here). Never torch or MLflow."""
