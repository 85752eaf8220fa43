"""Start Infinity's ONNX (optimum) engine on a local folder: run with Infinity's own Python.

infinity-emb 0.0.78 hands optimum the ONNX file as a path relative to the model folder
("onnx/model.onnx" or "model.onnx" as a PosixPath string), and optimum-onnx 0.1.0 wants a
bare file name for a local folder. This wraps the one function that picks the file so it
returns the bare name; everything else is Infinity's own CLI (`infinity_emb v2 ...`).
"""

import sys
from pathlib import Path

import infinity_emb.transformer.embedder.optimum as optimum_embedder

_pick = optimum_embedder.get_onnx_files


def _bare_name(**kwargs):
    return Path(Path(_pick(**kwargs)).name)


optimum_embedder.get_onnx_files = _bare_name

from infinity_emb.cli import cli  # noqa: E402  (after the patch, which must precede the engine's use)

if __name__ == "__main__":
    sys.argv[0] = "infinity_emb"
    sys.exit(cli())
