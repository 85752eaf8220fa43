"""Sentence encoders: the contract the server speaks to (base.Encoder), and its backends.

  base.py    Encoder (the Protocol), Encoded, SentenceEncoder (sort by length, batch, restore order)
  torch.py   sentence-transformers on torch (any sentence-transformers model, any device)
  onnx.py    the same model exported to ONNX and run by ONNX Runtime: fp32 (exact) or int8
  export.py  the one-time ONNX export (and int8 quantisation) into the cache folder
  cross.py   cross-encoders (PairScorer): a query and a document read together, scored
  slots.py   how many passes run at once (a model's streams, and one budget across models)

Which backend loads a model folder, and with which settings, is the serving layer's
(smls.serving.loading); this package knows nothing of settings or the catalog.
"""

from __future__ import annotations

from smls.catalog import EMBEDDED_MODEL_NAME
from smls.encoders.base import Budget, Encoded, Encoder, SentenceEncoder, batches_by_length, model_fingerprint
from smls.encoders.cross import CrossEncoderModel, PairScorer, Scores

__all__ = [
    "EMBEDDED_MODEL_NAME", "Budget", "CrossEncoderModel", "Encoded", "Encoder", "PairScorer", "Scores", "SentenceEncoder",
    "batches_by_length", "model_fingerprint",
]
