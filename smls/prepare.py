"""`python -m smls prepare`: each embedding model's exports and int8 ranges made ahead of serving.

A server makes these the first time it needs them, into SMLS_EXPORT_DIR: the ONNX export
of a model (and its int8), and the per-dimension ranges that int8 and binary outputs are
scaled by. Made here once, at a container image's build for instance, they are only
read afterwards, so a server whose root filesystem is read-only starts in a second.
"""

from __future__ import annotations

from collections.abc import Sequence

from smls.config import Settings
from smls.errors import StartupError
from smls.outputs import Calibration
from smls.serving.loading import build_encoder


def prepare(settings: Settings, backends: Sequence[str] = ()) -> list[str]:
    """Make every served embedding model's files for its own backend and for `backends`; one line per model and backend."""
    done = []
    for spec in settings.catalog().models:
        if not spec.embeds:
            continue  # cross-encoders run on torch from their own folder: nothing to make
        for backend in dict.fromkeys([spec.backend or settings.backend, *backends]):
            encoder = build_encoder(model=str(spec.path), name=spec.name, backend=backend, cache_dir=str(settings.exports), threads=0)
            calibration = Calibration(encoder, settings.exports)
            calibration.ranges(None, False)  # computes the vectors and keeps them, where the folder can be written
            if not calibration.path.is_file():
                raise StartupError(f"could not write {calibration.path}: SMLS_EXPORT_DIR must be writable to prepare")
            done.append(f"{spec.name} ({backend}): ready in {settings.exports}")
    return done
