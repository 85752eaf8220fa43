"""What the routes need, built once by create_app and stored on the app: the served models, keys, readiness, transfer slots."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from flask import g, has_request_context

from smls import auth, memory
from smls.config import Settings
from smls.errors import Overloaded
from smls.library import Library
from smls.serving.engine import Engine
from smls.serving.models import EmbeddingModel, Served

# What Infinity's generated client sends as `model` when its user names none: the default.
# (A served name cannot contain "/", so no model is shadowed.)
UNSPECIFIED = "default/not-specified"
# The model named by a request answered outside Flask, for its metrics label: State.model sets
# it, smls.web.lane reads it (Flask's requests use g.model). Every such request runs in a
# greenlet of its own, with a context of its own.
LANE_MODEL: ContextVar[str] = ContextVar("smls_lane_model", default="")


class TransferSlots:
    """How many document transfers (downloads and uploads) a worker runs at once; beyond, Overloaded at once.

    A transfer holds its request thread for the whole document, which may take minutes
    (computed, or read by a slow client). Without a cap, a few of them took every thread
    and short requests waited behind them: measured, four uncached 2,000-sentence downloads
    on a 2-worker server with 2 threads each stopped /embed altogether for 20 s. The cap
    is SMLS_THREADS - 1, so one thread is always left for everything else.

    A transfer past the cap waits up to `wait` seconds for a slot before it is refused:
    most transfers (a small upload, a cached document) take milliseconds, and refusing
    them at once would turn a burst of small ones into errors. The wait holds a thread,
    so it is short: a request queued behind it waits at most that long more.
    """

    def __init__(self, threads: int, wait: float = 1.0) -> None:
        self.limit = max(1, threads - 1)
        self.wait = wait
        self._free = threading.BoundedSemaphore(self.limit)

    def take(self) -> Lease:
        """Take a slot, waiting up to `wait` seconds; Overloaded if none came free."""
        if not self._free.acquire(timeout=self.wait):
            raise Overloaded(
                f"this worker is already sending or receiving {self.limit} documents (SMLS_THREADS - 1, keeping a "
                "thread for short requests); retry shortly"
            )
        return Lease(self._free.release)


class Lease:
    """One taken slot; `give_back` frees it once, however many of the ways a response ends call it."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release
        self._lock = threading.Lock()

    def give_back(self) -> None:
        """Free the slot (the first call; later ones do nothing)."""
        with self._lock:
            release, self._release = self._release, None
        if release is not None:
            release()

    def until_sent(self, body: Iterable[bytes]) -> Iterator[bytes]:
        """The body, giving the slot back once its last part is out (or the client went away)."""
        try:
            yield from body
        finally:
            self.give_back()


@dataclass(frozen=True)
class State:
    """What the routes need: the served models (smls.serving), keys, the OpenAPI document, readiness and per-worker limits."""

    engine: Engine
    keys: auth.KeyRing
    description: dict[str, Any]  # the OpenAPI document, built once
    # Set by warm_up in each worker: an Event set in the master would be copied into every fork.
    ready: threading.Event = field(default_factory=threading.Event)
    # Gives the memory a burst of requests freed back to the system once the worker is quiet.
    trimmer: memory.Trimmer = field(default_factory=memory.Trimmer)
    # Document downloads and uploads at once (made in create_app from SMLS_THREADS).
    transfers: TransferSlots = field(default_factory=lambda: TransferSlots(4))

    @property
    def settings(self) -> Settings:
        """The settings the app was built with."""
        return self.engine.settings

    @property
    def library(self) -> Library:
        """The documents: uploaded ones and the data folder's."""
        return self.engine.library

    @property
    def models(self) -> dict[str, Served]:
        """The served models by name, in the configured order."""
        return self.engine.models

    @property
    def default(self) -> str:
        """The default (embedding) model's name."""
        return self.engine.default

    @property
    def embedders(self) -> list[EmbeddingModel]:
        """The embedding models, in the configured order."""
        return self.engine.embedders

    def model(self, name: str | None, *, listed_at: str = "GET /models") -> Served:
        """The model a request names (None, or Infinity's placeholder: the default), or ModelNotFound listing the served names."""
        found = self.engine.model(None if name == UNSPECIFIED else name, listed_at=listed_at)
        # The request's model label in the metrics (smls.web._after; outside Flask, smls.web.lane).
        if has_request_context():
            g.model = found.name
        else:
            LANE_MODEL.set(found.name)
        return found

    def embedding(self, name: str | None, *, listed_at: str = "GET /models") -> EmbeddingModel:
        """The embedding model a request names (None: the default); WrongModelKind for a cross-encoder."""
        return self.engine.embedding(self.model(name, listed_at=listed_at))
