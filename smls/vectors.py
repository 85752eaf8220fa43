"""Vector helpers shared by the encoders, the outputs and search. Pure numpy."""

from __future__ import annotations

import numpy as np

# As torch.nn.functional.normalize (sentence-transformers' Normalize): rows shorter than
# this are divided by it instead, so a zero row stays zero and nothing divides by zero.
_EPS = 1e-12


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (float32); a zero row stays zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, _EPS)).astype(np.float32, copy=False)
