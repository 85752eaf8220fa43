"""`python -m smls prepare`: a model's exports and int8 ranges made once, then only read (SMLS_EXPORT_DIR)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from smls.errors import StartupError
from smls.serving.loading import build_encoder
from tests.helpers import ROOT, server_env, start_server


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.live
def test_prepare_makes_what_a_server_then_only_reads(tmp_path, tiny_models):
    exports, cache = tmp_path / "exports", tmp_path / "cache"
    settings = {"SMLS_MODEL": str(tiny_models["tiny"]), "SMLS_EXPORT_DIR": str(exports), "SMLS_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-m", "smls", "prepare", "--backend", "onnx-int8"], cwd=ROOT, env=server_env(**settings),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"tiny ({backend}): ready in {exports}" for backend in ("onnx", "onnx-int8")]
    made = listing(exports)
    assert sum(name.endswith(".onnx") for name in made) == 2  # fp32 and int8
    calibrations = sorted(p for p in (exports / "calibration").iterdir())
    assert [p.name.rsplit("-", 1)[-1] for p in calibrations] == ["int8.npy", "onnx.npy"]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in calibrations)  # readable by a server running as another user

    server = start_server(tmp_path, workers=1, SMLS_BACKEND="onnx-int8", **settings)
    try:
        for precision in ("float32", "int8"):
            got = requests.post(server.url + "/embed", data={"message": "hello there", "precision": precision}, timeout=30)
            assert got.status_code == 200, got.text
    finally:
        server.stop()
    assert listing(exports) == made  # nothing written there: it may as well be read-only
    assert not (cache / "onnx").exists() and not (cache / "calibration").exists()


def test_a_missing_export_where_none_can_be_made_names_the_command(tmp_path, tiny_models):
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a folder below a file cannot be made, even by root
    with pytest.raises(StartupError, match=r"no onnx export of the model .* and it cannot be made there .*: run `python -m smls prepare --backend onnx`"):
        build_encoder(model=str(tiny_models["tiny"]), backend="onnx", cache_dir=str(blocked / "exports"))
