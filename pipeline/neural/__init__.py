"""Recurrent language models. In: token-id streams from text/ and the train and model params.
Out: an `RNNLM` (embedding, recurrent stack of textbook or fused cells, softmax output) trained
by the Lightning Trainer, saved as config + state_dict, and its per-token log-probabilities.
The model (`cells`, `rnn`, `losses`, and `regularization`, AWD-LSTM's regularisers) needs torch
and never Lightning; `batches` reads text/'s special ids; `lit` (the LightningModule and
Trainer) adds Lightning and config.py; `resume` is the checkpoint directory's bookkeeping.
Never MLflow.
"""
