"""Shared fixtures: the real model loaded once, an app built from test settings, a live gunicorn."""

from __future__ import annotations

from pathlib import Path

import pytest

import smls
from smls.config import Settings
from tests.helpers import start_server


@pytest.fixture(scope="session")
def encoder():
    """The real embedded all-MiniLM-L6-v2, loaded once per test session."""
    return smls.ml_services.get("SentenceEncoder")


@pytest.fixture()
def settings(tmp_path) -> Settings:
    """Small limits so that limit errors are cheap to provoke; private data and cache folders."""
    (tmp_path / "data").mkdir()
    return Settings(max_messages=8, max_body_bytes=4096, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", doc_batch=4)


@pytest.fixture()
def app(settings, encoder):
    """The Flask app over the real encoder, with test settings."""
    return smls.create_app(settings, encoder=encoder)


@pytest.fixture()
def client(app):
    """Flask's test client for fast HTTP-layer tests."""
    return app.test_client()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """One real gunicorn with 2 workers, shared by the live tests."""
    tmp = tmp_path_factory.mktemp("live")
    server = start_server(tmp, workers=2, SMLS_MAX_MESSAGES="64", SMLS_MAX_BODY_BYTES="65536", SMLS_CACHE_DIR=str(tmp / "cache"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny random-weight models built here (no download): an embedding model and a cross-encoder."""
    from scripts.tiny_models import build_cross_encoder, build_embedding

    root = tmp_path_factory.mktemp("models")
    return {"tiny": build_embedding(root / "tiny"), "judge": build_cross_encoder(root / "judge")}


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL 18 server (with pgvector) for the whole run (scripts/postgres.py); each test takes a fresh database of it."""
    from scripts.postgres import start_postgres
    from tests.helpers import free_port

    server = start_postgres(free_port())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_without_pgvector():
    """A PostgreSQL server whose extensions lack pgvector: smls falls back to each worker's own search index."""
    from scripts.postgres import start_postgres
    from tests.helpers import free_port

    server = start_postgres(free_port(), pgvector=False)
    yield server
    server.stop()

