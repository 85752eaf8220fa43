"""Which backend loads a model, with which settings: the registry's builders, and the served models' loader.

`build_encoder` and `build_reranker` are smls.ml_services' "SentenceEncoder" and "Reranker"
builders (with `resolve_config` and `resolve_reranker_config`, which fill a configuration
from the SMLS_* settings so that equal configurations share one instance). `load_model`
is what the server loads for each entry of the catalog (through the registry, so an
in-process user and the server share one copy); `machine_encoder` lays a model out over
every core, for a command that is the only job on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from smls import ml_services
from smls.catalog import ModelSpec, default_name, detect_kind
from smls.config import BACKENDS, Settings, check_model_dir, cpu_count
from smls.encoders import CrossEncoderModel, SentenceEncoder
from smls.errors import StartupError

__all__ = [
    "build_encoder", "build_reranker", "encoder_for", "load_model", "machine_encoder", "register", "resolve_config", "resolve_reranker_config",
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
        if backend.startswith("openvino"):
            from smls.encoders.openvino import OpenVinoEncoder

            return OpenVinoEncoder(path, name, batch_size, quantized=backend == "openvino-int8", cache_dir=Path(cache_dir), threads=threads)
        from smls.encoders.onnx import OnnxEncoder

        return OnnxEncoder(path, name, batch_size, quantized=backend == "onnx-int8", cache_dir=Path(cache_dir), threads=threads)
    except StartupError:
        raise
    except Exception as exc:  # any other loading failure is a start-up failure with the path in it
        raise StartupError(f"could not load the model at {str(path)!r}: {type(exc).__name__}: {exc}") from exc


def load_model(spec: ModelSpec, settings: Settings) -> SentenceEncoder | CrossEncoderModel:
    """The registry's instance for one served model (loaded once per process), on the workers' share of the cores."""
    common = {
        "model": str(spec.path),
        "name": spec.name,
        "device": settings.device,
        "batch_size": spec.batch_size or settings.batch_size,
        "cache_dir": str(settings.exports),
        "threads": settings.effective_torch_threads,
    }
    if spec.embeds:
        encoder: SentenceEncoder = ml_services.get("SentenceEncoder", backend=spec.backend or settings.backend, **common)
        return encoder
    reranker = ml_services.get("Reranker", backend="torch", **common)
    model: CrossEncoderModel = reranker.model
    return model


def encoder_for(settings: Settings, model: str | None = None) -> SentenceEncoder:
    """The SentenceEncoder of the served model named `model` (None: the default), loaded as the server loads it."""
    catalog = settings.catalog()
    named = [s for s in catalog.models if s.name == (model or catalog.default)]
    if not named:
        raise StartupError(f"no model named {model!r}; SMLS_MODELS has {', '.join(s.name for s in catalog.models)}")
    if not named[0].embeds:
        raise StartupError(f"model {model!r} is a cross-encoder; it makes no embeddings")
    encoder = load_model(named[0], settings)
    assert isinstance(encoder, SentenceEncoder)
    return encoder


def _settings_model(config: Mapping[str, Any], settings: Settings) -> tuple[Path, ModelSpec | None]:
    """The folder a config's `model` means: a path, a name in SMLS_MODELS, or (None) the default model."""
    wanted = config.get("model")
    if wanted is None:
        spec = settings.catalog().default_spec
        return spec.path, spec
    text = os.fspath(wanted)
    if settings.models is not None and not Path(text).expanduser().exists():
        named = [s for s in settings.catalog().models if s.name == text]
        if named:
            return named[0].path, named[0]
    return check_model_dir(Path(text).expanduser(), "model"), None


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a SentenceEncoder config from SMLS_* settings, so equal configs share one instance."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise TypeError(f"SentenceEncoder does not take {', '.join(sorted(unknown))}")
    settings = Settings.from_env()
    model_path, spec = _settings_model(config, settings)
    if detect_kind(model_path) != "embedding":
        raise StartupError(f"the model at {str(model_path)!r} is a cross-encoder: it scores pairs; use smls.ml_services.get(\"Reranker\", model=...)")
    backend = config.get("backend") or (spec and spec.backend) or settings.backend
    return _filled(config, settings, model_path, spec, backend, settings.model_name)


def _filled(config: Mapping[str, Any], settings: Settings, model_path: Path, spec: ModelSpec | None, backend: str, name: str | None) -> dict[str, Any]:
    """A whole config for either service: what `config` says, else its SMLS_MODELS entry's, else the settings'."""
    return {
        "model": str(model_path),
        "name": config.get("name") or (spec.name if spec else None) or name or default_name(model_path),
        "device": config.get("device") or settings.device,
        "batch_size": int(config.get("batch_size") or (spec and spec.batch_size) or settings.batch_size),
        "backend": backend,
        "cache_dir": str(Path(config.get("cache_dir") or settings.exports).resolve()),
        # In-process use gets the library's default (every core) unless it asks; the server
        # asks for its workers' share (load_model).
        "threads": int(config.get("threads") or 0),
    }


def build_reranker(*, kind: str, **config: Any) -> Any:
    """The registry's "Reranker": a cross-encoder's scores, or an embedding model's cosine similarity."""
    from smls.rerank import CosineReranker, CrossReranker  # (here: its request parsing needs werkzeug, which `import smls` need not load)

    if kind == "cross-encoder":
        return CrossReranker(
            CrossEncoderModel(Path(config["model"]), config["name"], config["batch_size"], config["device"], config["threads"])
        )
    return CosineReranker(ml_services.get("SentenceEncoder", **config))


def resolve_reranker_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a Reranker config: `model` a cross-encoder or embedding folder (or a SMLS_MODELS name); none: the
    first cross-encoder in SMLS_MODELS, else the default embedding model (cosine)."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise TypeError(f"Reranker does not take {', '.join(sorted(unknown))}")
    settings = Settings.from_env()
    if config.get("model") is None:
        cross = [s for s in settings.catalog().models if not s.embeds]
        if cross:
            config = {**config, "model": str(cross[0].path), "name": config.get("name") or cross[0].name}
    model_path, spec = _settings_model(config, settings)
    if detect_kind(model_path) == "embedding":
        return {"kind": "embedding", **resolve_config({**config, "model": str(model_path), "name": config.get("name") or (spec.name if spec else None)})}
    if (config.get("backend") or "torch") != "torch":
        raise StartupError(f"the cross-encoder at {str(model_path)!r} runs on torch, not {config['backend']}")
    return {"kind": "cross-encoder", **_filled(config, settings, model_path, spec, "torch", None)}


def machine_encoder(settings: Settings, model: str | None, cores: int | None = None) -> SentenceEncoder:
    """The model laid out over every core (or `cores` of them): one single-threaded stream per core (ONNX, the fastest layout measured), else one stream on all.

    A server shares the cores among its workers; a command such as precompute is the only
    job on the machine, and a Ray actor has the cores it asked for.
    """
    catalog = settings.catalog()
    spec = next((s for s in catalog.models if s.name == (model or catalog.default)), None)
    parallel = (spec.backend if spec and spec.backend else settings.backend) != "torch"
    cores = cores or cpu_count()
    encoder = encoder_for(replace(settings, torch_threads=1 if parallel else cores, inference_streams=None), model)
    encoder.set_streams(cores if encoder.parallel_safe else 1)
    return encoder


def register() -> None:
    """Register the "SentenceEncoder" and "Reranker" services (smls/__init__.py does, on import)."""
    ml_services.register("SentenceEncoder", build_encoder, resolve=resolve_config)
    ml_services.register("Reranker", build_reranker, resolve=resolve_reranker_config)
