"""Sentence encoders: the interface the server speaks to, and its sentence-transformers backend."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from smls.config import Settings, check_model_dir
from smls.errors import StartupError

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Encoded:
    """Vectors for a list of texts, in input order, with what truncation did to each."""

    vectors: np.ndarray  # float32, shape (n, dimension)
    truncated_flags: np.ndarray  # bool, shape (n,): the text was longer than max_seq_length and cut
    token_counts: np.ndarray  # int, shape (n,): tokens fed to the model, special tokens included

    @property
    def truncated(self) -> int:
        """How many texts were truncated."""
        return int(self.truncated_flags.sum())

    @property
    def tokens(self) -> int:
        """Tokens fed to the model in all."""
        return int(self.token_counts.sum())

    def slice(self, start: int, stop: int) -> "Encoded":
        """The part of this result for texts[start:stop]."""
        return Encoded(self.vectors[start:stop], self.truncated_flags[start:stop], self.token_counts[start:stop])

    def normalized(self) -> "Encoded":
        """The same result with every vector scaled to unit length (zero vectors stay zero)."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        vectors = np.divide(self.vectors, norms, out=np.zeros_like(self.vectors), where=norms > 0)
        return Encoded(vectors, self.truncated_flags, self.token_counts)


class SentenceEncoder:
    """A sentence-transformers model loaded once; thread-safe, one forward pass at a time."""

    def __init__(self, *, model: str, name: str | None = None, device: str = "cpu", batch_size: int = 32) -> None:
        # Imported here so that `import smls` and gunicorn.conf.py stay light.
        from sentence_transformers import SentenceTransformer

        path = check_model_dir(Path(model), "model")
        self.path = path
        self.name = name or _default_name(path)
        self.device = device
        self.batch_size = batch_size
        try:
            self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # any loading failure is a start-up failure with the path in it
            raise StartupError(f"could not load the model at {str(path)!r}: {type(exc).__name__}: {exc}") from exc
        self._model.eval()
        self.dimension = int(self._model.get_embedding_dimension())
        self.max_seq_length = int(self._model.max_seq_length)
        # Inference is serialised per process: concurrent forward passes on the same cores
        # only fight over them (and over OpenMP's thread pool).
        self._lock = threading.Lock()
        # Sentences this instance has run through the model: lets tests and metrics see cache hits.
        self.sentences_encoded = 0
        self.fingerprint = model_fingerprint(path)

    def info(self) -> dict[str, Any]:
        """Model name, path, dimension, max sequence length and device."""
        return {
            "name": self.name,
            "path": str(self.path),
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "device": self.device,
            "fingerprint": self.fingerprint,
        }

    def run(self, texts: Sequence[str], *, normalize: bool = False) -> np.ndarray:
        """Embed `texts`; return a float32 array of shape (len(texts), dimension)."""
        return self.encode(texts, normalize=normalize).vectors

    def encode(self, texts: Sequence[str], *, normalize: bool = False) -> Encoded:
        """Embed `texts` in batches, longest first, and report truncation and token counts."""
        import torch

        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("SentenceEncoder.encode takes a list of strings")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        tokens = np.zeros(len(texts), dtype=np.int64)
        # Like SentenceTransformer.encode: similar lengths share a batch, so padding is small.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                features = self._model.preprocess([texts[i] for i in idx])
                truncated[idx] = _truncated_flags(features, [texts[i] for i in idx], self._model.tokenizer, self.max_seq_length)
                tokens[idx] = features["attention_mask"].sum(dim=1).numpy()
                if self.device != "cpu":
                    features = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in features.items()}
                emb = self._model.forward(dict(features))["sentence_embedding"]
                out[idx] = emb.float().cpu().numpy()
                self.sentences_encoded += len(idx)
        result = Encoded(out, truncated, tokens)
        return result.normalized() if normalize else result


def model_fingerprint(path: Path) -> str:
    """A short digest of the model folder (file names, sizes, mtimes): changes when the weights change."""
    digest = hashlib.sha256(str(path).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _truncated_flags(features: Any, texts: list[str], tokenizer: Any, max_len: int) -> list[bool]:
    """For each text, whether the tokenizer cut it to fit max_len."""
    encodings = getattr(features, "encodings", None)
    if encodings:  # fast tokenizers keep what they cut off in `overflowing`
        return [bool(e.overflowing) for e in encodings]
    lengths = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return [len(ids) > max_len for ids in lengths]


def _default_name(path: Path) -> str:
    """The name clients see: the embedded model's real name, else the folder name."""
    from smls.config import embedded_model_path

    try:
        if path == embedded_model_path().resolve():
            return EMBEDDED_MODEL_NAME
    except StartupError:
        pass
    return path.name


def encoder_for(settings: Settings) -> SentenceEncoder:
    """The registry's SentenceEncoder for these settings (loaded once per process)."""
    from smls import ml_services

    model_path, _ = settings.model_path()
    return ml_services.get(
        "SentenceEncoder", model=str(model_path), name=settings.model_name, device=settings.device, batch_size=settings.batch_size
    )


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a SentenceEncoder config from SMLS_* settings, so equal configs share one instance."""
    unknown = set(config) - {"model", "name", "device", "batch_size"}
    if unknown:
        raise TypeError(f"SentenceEncoder does not take {', '.join(sorted(unknown))}")
    settings = Settings.from_env()
    if config.get("model") is None:
        model_path, _ = settings.model_path()
    else:
        model_path = check_model_dir(Path(os.fspath(config["model"])).expanduser(), "model")
    return {
        "model": str(model_path),
        "name": config.get("name") or settings.model_name or _default_name(model_path),
        "device": config.get("device") or settings.device,
        "batch_size": int(config.get("batch_size") or settings.batch_size),
    }
