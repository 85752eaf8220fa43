"""A registry of ML services: builders registered by name, instances cached per configuration.

    >>> import smls
    >>> enc = smls.ml_services.get("SentenceEncoder")            # default model
    >>> enc is smls.ml_services.get("SentenceEncoder")           # same config, same object
    True

`get(name, **config)` first lets the service resolve its configuration (fill in
defaults, make paths absolute), so that spelling the default out loud returns the
same instance as leaving it out; different resolved configurations give different
instances. Builds happen once even when threads ask at the same moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from smls.errors import UnknownService

Builder = Callable[..., Any]
Resolver = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    resolve: Resolver | None


_entries: dict[str, _Entry] = {}
_instances: dict[tuple[str, Hashable], Any] = {}
_lock = threading.RLock()


def register(name: str, builder: Builder, *, resolve: Resolver | None = None) -> None:
    """Register `builder(**config)` under `name`; `resolve(config)` may canonicalise configs first."""
    with _lock:
        unregister(name)  # a re-registered name must not hand out instances of the old builder
        _entries[name] = _Entry(builder, resolve)


def unregister(name: str) -> None:
    """Remove service `name` and its cached instances (no error if it is unknown)."""
    with _lock:
        _entries.pop(name, None)
        for key in [k for k in _instances if k[0] == name]:
            del _instances[key]


def names() -> list[str]:
    """Names of every registered service, sorted."""
    return sorted(_entries)


def get(name: str, /, **config: Any) -> Any:
    """Return the cached instance of service `name` for this configuration, building it if needed."""
    try:
        entry = _entries[name]
    except KeyError:
        known = ", ".join(names()) or "none"
        raise UnknownService(f"unknown service {name!r}; known services: {known}") from None
    resolved = dict(entry.resolve(config)) if entry.resolve else config
    key = (name, _freeze(resolved))
    with _lock:
        instance = _instances.get(key)
        if instance is None:
            instance = _instances[key] = entry.builder(**resolved)
        return instance


def clear() -> None:
    """Forget every cached instance (the registrations stay)."""
    with _lock:
        _instances.clear()


def _freeze(value: Any) -> Hashable:
    """A hashable, order-independent form of a configuration value."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    hash(value)  # raises TypeError for anything else unhashable, naming its type
    return value
