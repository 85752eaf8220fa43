"""The torch backend: sentence-transformers itself, for any sentence-transformers model and any torch device."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from smls.encoders.base import BatchResult, SentenceEncoder


def set_torch_threads(n: int) -> None:
    """Torch's intra-op threads in this process (0: leave the default); a no-op until torch is imported."""
    # Never import torch just for this: the ONNX backends do without it.
    torch = sys.modules.get("torch")
    if torch is None or n < 1:
        return
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work has started: harmless
        pass


class TorchEncoder(SentenceEncoder):
    """sentence-transformers on torch: any sentence-transformers model."""

    backend = "torch"

    def __init__(self, path: Path, name: str | None, batch_size: int, device: str = "cpu", threads: int = 0) -> None:
        super().__init__(path, name, batch_size)
        # Imported here so that `import smls`, gunicorn.conf.py and the onnx backends stay light.
        from sentence_transformers import SentenceTransformer

        set_torch_threads(threads)
        self.device = device
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._model.eval()
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self.max_seq_length = int(self._model.max_seq_length or 0)

    def _encode_batch(self, texts: list[str], prepared: list[Any] | None) -> BatchResult:
        import torch

        with torch.inference_mode():
            features = self._model.preprocess(texts)
            flags = _truncated_flags(features, texts, self._model.tokenizer, self.max_seq_length)
            counts = features["attention_mask"].sum(dim=1).numpy()
            if self.device != "cpu":
                features = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
            vectors = self._model.forward(dict(features))["sentence_embedding"].float().cpu().numpy()
        return vectors, flags, counts


def _truncated_flags(features: Any, texts: list[str], tokenizer: Any, max_len: int) -> list[bool]:
    """For each text, whether the tokenizer cut it to fit max_len."""
    encodings = getattr(features, "encodings", None)
    if encodings:  # fast tokenizers keep what they cut off in `overflowing`
        return [bool(e.overflowing) for e in encodings]
    lengths = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return [len(ids) > max_len for ids in lengths]
