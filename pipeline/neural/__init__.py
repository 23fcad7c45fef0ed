"""Recurrent language models. In: token-id streams (text/) and the train and model params.
Out: an RNNLM trained by Lightning, saved as config + state_dict. cells, rnn, losses and
regularization need torch only; lit and fit add Lightning; nothing here imports MLflow."""
