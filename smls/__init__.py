"""smls: a small, fast server for sentence embeddings (and an in-process registry of ML services)."""

from __future__ import annotations

import os

# Weights come from local folders only; never let a library reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Tokenizer threads would oversubscribe the cores that gunicorn workers already share out,
# and they are not fork-safe (the master tokenises nothing, but a library might).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from smls import ml_services  # noqa: E402
from smls.encoders import SentenceEncoder, build_encoder, build_reranker, resolve_config, resolve_reranker_config  # noqa: E402

__version__ = "0.1.0"
__all__ = ["__version__", "create_app", "ml_services", "SentenceEncoder"]

ml_services.register("SentenceEncoder", build_encoder, resolve=resolve_config)
ml_services.register("Reranker", build_reranker, resolve=resolve_reranker_config)


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Build the Flask app (see smls.web.create_app); imported lazily to keep `import smls` light."""
    from smls.web import create_app as _create_app

    return _create_app(*args, **kwargs)
