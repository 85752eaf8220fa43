"""What the routes need, built once by create_app and stored on the app."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from smls import auth, outputs
from smls.batching import MicroBatcher
from smls.config import Settings
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import Encoder


@dataclass(frozen=True)
class State:
    """The app's settings, model, batcher, document embedder, calibration and keys (app.extensions["smls"])."""

    settings: Settings
    encoder: Encoder
    batcher: MicroBatcher
    documents: DocumentEmbedder
    calibration: outputs.Calibration
    keys: auth.KeyRing
    description: dict[str, Any]  # the OpenAPI document, built once
    # Set by warm_up in each worker: an Event set in the master would be copied into every fork.
    ready: threading.Event = field(default_factory=threading.Event)
