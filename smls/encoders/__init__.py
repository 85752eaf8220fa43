"""Sentence encoders: the contract the server speaks to (base.Encoder), and its backends.

  base.py    Encoder (the Protocol), Encoded, SentenceEncoder (sort by length, batch, restore order)
  torch.py   sentence-transformers on torch (any sentence-transformers model, any device)
  onnx.py    the same model exported to ONNX and run by ONNX Runtime: fp32 (exact) or int8
  export.py  the one-time ONNX export (and int8 quantisation) into the cache folder

`build_encoder` is the registry's "SentenceEncoder" builder; `encoder_for(settings)` is
what the server loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smls.config import BACKENDS, Settings, check_model_dir
from smls.encoders.base import EMBEDDED_MODEL_NAME, Encoded, Encoder, SentenceEncoder, default_name, model_fingerprint
from smls.errors import StartupError

__all__ = [
    "EMBEDDED_MODEL_NAME", "Encoded", "Encoder", "SentenceEncoder", "build_encoder", "encoder_for", "model_fingerprint", "resolve_config",
]

_CONFIG_KEYS = frozenset({"model", "name", "device", "batch_size", "backend", "cache_dir", "threads"})


def build_encoder(
    *,
    model: str,
    name: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    backend: str = "onnx",
    cache_dir: str = ".cache/smls",
    threads: int = 0,
) -> SentenceEncoder:
    """Load the model at `model` with the given backend; `threads` per forward pass (0: the library's default)."""
    path = check_model_dir(Path(model), "model")
    if backend not in BACKENDS:
        raise StartupError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "torch" and device != "cpu":
        raise StartupError(f"SMLS_BACKEND={backend} runs on the CPU only; use SMLS_BACKEND=torch for {device!r}")
    try:
        if backend == "torch":
            from smls.encoders.torch import TorchEncoder

            return TorchEncoder(path, name, batch_size, device, threads)
        from smls.encoders.onnx import OnnxEncoder

        return OnnxEncoder(path, name, batch_size, quantized=backend == "onnx-int8", cache_dir=Path(cache_dir), threads=threads)
    except StartupError:
        raise
    except Exception as exc:  # any other loading failure is a start-up failure with the path in it
        raise StartupError(f"could not load the model at {str(path)!r}: {type(exc).__name__}: {exc}") from exc


def encoder_for(settings: Settings) -> SentenceEncoder:
    """The registry's SentenceEncoder for these settings (loaded once per process), on the workers' share of the cores."""
    from smls import ml_services

    model_path, _ = settings.model_path()
    encoder: SentenceEncoder = ml_services.get(
        "SentenceEncoder",
        model=str(model_path),
        name=settings.model_name,
        device=settings.device,
        batch_size=settings.batch_size,
        backend=settings.backend,
        cache_dir=str(settings.cache_dir),
        threads=settings.effective_torch_threads,
    )
    return encoder


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a SentenceEncoder config from SMLS_* settings, so equal configs share one instance."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise TypeError(f"SentenceEncoder does not take {', '.join(sorted(unknown))}")
    settings = Settings.from_env()
    if config.get("model") is None:
        model_path, _ = settings.model_path()
    else:
        model_path = check_model_dir(Path(os.fspath(config["model"])).expanduser(), "model")
    return {
        "model": str(model_path),
        "name": config.get("name") or settings.model_name or default_name(model_path),
        "device": config.get("device") or settings.device,
        "batch_size": int(config.get("batch_size") or settings.batch_size),
        "backend": config.get("backend") or settings.backend,
        "cache_dir": str(Path(config.get("cache_dir") or settings.cache_dir).resolve()),
        # In-process use gets the library's default (every core) unless it asks; the server
        # asks for its workers' share (encoder_for).
        "threads": int(config.get("threads") or 0),
    }
