"""API keys: Bearer on every route but /health, /ready (and the docs shell), 401 with a challenge, rotation, never logged."""

from __future__ import annotations

import pytest
import requests

import smls
from smls import auth
from smls.config import Settings
from smls.errors import StartupError
from tests.helpers import assert_error, assert_openai_error, start_server

KEY = "k-0123456789abcdef-first"
OTHER = "k-0123456789abcdef-second"


@pytest.fixture()
def locked(settings, encoder):
    """A client of an app that needs KEY."""
    from dataclasses import replace

    return smls.create_app(replace(settings, api_key=KEY), encoder=encoder).test_client()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_no_key_is_401_with_a_bare_challenge(locked):
    response = locked.post("/embed", json={"message": "hi"})
    assert "Authorization: Bearer" in assert_error(response, 401, "unauthorized")["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="smls"'


@pytest.mark.parametrize("header", [f"Bearer {OTHER}", f"Bearer {KEY}x", f"Basic {KEY}", "Bearer ", KEY, f"Bearer {KEY[:-1]}"])
def test_a_wrong_key_or_scheme_is_401_invalid_token(locked, header):
    response = locked.post("/embed", json={"message": "hi"}, headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="smls", error="invalid_token"'


def test_the_right_key_opens_every_route(locked):
    assert locked.post("/embed", json={"message": "hi"}, headers=bearer(KEY)).status_code == 200
    assert locked.post("/embed", json={"message": "hi"}, headers={"Authorization": f"bearer   {KEY}"}).status_code == 200
    for path in ("/", "/models", "/metrics", "/openapi.json", "/documents", "/v1/models"):
        assert locked.get(path).status_code == 401, path
        assert locked.get(path, headers=bearer(KEY)).status_code == 200, path


def test_health_readiness_and_the_docs_shell_need_no_key(locked):
    assert locked.get("/health").status_code == 200
    assert_error(locked.get("/ready"), 503, "not_ready")  # answered (not warmed up in a test client), not 401
    assert locked.get("/docs").status_code == 200
    assert locked.get("/docs/static/swagger-ui.css").status_code == 200
    assert_error(locked.get("/no/such/page"), 401, "unauthorized")  # routes are not revealed either


def test_openai_routes_answer_401_in_openai_shape(locked):
    response = locked.post("/v1/embeddings", json={"input": "hi"})
    assert assert_openai_error(response, 401, "unauthorized")["type"] == "authentication_error"


def test_no_key_configured_means_no_access_control(client):
    assert client.post("/embed", json={"message": "hi"}).status_code == 200


def test_key_file_rotation_without_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "_RECHECK_SECONDS", 0.0)
    path = tmp_path / "keys"
    path.write_text(f"# current key\n{KEY}\n\n")
    ring = auth.KeyRing(key_file=path)
    ring.check(f"Bearer {KEY}")
    with pytest.raises(smls.errors.Unauthorized):
        ring.check(f"Bearer {OTHER}")
    path.write_text(f"{KEY}\n{OTHER}\n")  # step 1: add the new key
    ring.check(f"Bearer {OTHER}")
    path.write_text(f"{OTHER}\n")  # step 2: retire the old one
    with pytest.raises(smls.errors.Unauthorized):
        ring.check(f"Bearer {KEY}")
    path.write_text("")  # an emptied (or half-written) file keeps the keys we had
    ring.check(f"Bearer {OTHER}")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("short\n", "shorter than 16"), ("# only a comment\n", "holds no key"), ("has a space in it ok\n", "printable ASCII")],
)
def test_bad_key_files_stop_the_start(tmp_path, content, fragment):
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(StartupError, match=fragment):
        auth.KeyRing(key_file=path)
    with pytest.raises(StartupError, match="cannot be read"):
        auth.KeyRing(key_file=tmp_path / "missing")


def test_the_key_is_not_in_the_settings_repr():
    assert KEY not in repr(Settings(api_key=KEY))


@pytest.mark.parametrize(("bind", "loopback"), [("127.0.0.1:8000", True), ("[::1]:80", True), ("localhost:1", True), ("unix:/tmp/s", True), ("0.0.0.0:8000", False), ("[::]:8000", False), ("10.0.0.5:8000", False)])
def test_loopback_detection(bind, loopback):
    assert auth.is_loopback(bind) is loopback


@pytest.mark.live
def test_live_keys_work_and_are_never_logged(tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"{KEY}\n")
    server = start_server(tmp_path, workers=1, SMLS_API_KEY_FILE=str(keyfile), SMLS_CACHE_DIR=str(tmp_path / "cache"), SMLS_LOG_LEVEL="debug")
    try:
        assert requests.get(server.url + "/health", timeout=30).status_code == 200
        assert requests.post(server.url + "/embed", data={"message": "hi"}, headers=bearer(KEY), timeout=30).status_code == 200
        assert requests.post(server.url + "/embed", data={"message": "hi"}, headers=bearer(OTHER), timeout=30).status_code == 401
        from openai import OpenAI

        client = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        assert len(client.embeddings.create(model="all-MiniLM-L6-v2", input="hi").data[0].embedding) == 384
    finally:
        server.stop()
    logs = server.access_log.read_text() + server.error_log.read_text()
    assert "/embed" in logs
    assert KEY not in logs and OTHER not in logs


@pytest.mark.live
def test_a_public_address_without_a_key_is_warned_about(tmp_path):
    server = start_server(tmp_path, workers=1, SMLS_HOST="0.0.0.0", SMLS_CACHE_DIR=str(tmp_path / "cache"))
    server.stop()
    assert "with no API key" in server.error_log.read_text()
