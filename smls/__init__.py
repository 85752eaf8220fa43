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
from smls.encoders import SentenceEncoder  # noqa: E402
from smls.serving import loading  # noqa: E402
from smls.serving.loading import build_encoder  # noqa: E402
from smls.version import __version__  # noqa: E402

__all__ = ["__version__", "build_encoder", "create_app", "ml_services", "SentenceEncoder"]

loading.register()


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Build the Flask app (see smls.web.create_app); imported lazily to keep `import smls` light."""
    from smls.web import create_app as _create_app

    return _create_app(*args, **kwargs)
