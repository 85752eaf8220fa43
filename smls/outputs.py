"""Output options for embeddings: dimensions, normalisation, precision and encoding.

Pure numpy: shaping the vectors a client asked for never touches the model. int8 and
uint8 use fixed per-dimension ranges computed once per model from a bundled corpus
(see Calibration), so a sentence maps to the same codes whatever else is in its batch.
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smls.errors import InvalidOption
from smls.fields import show
from smls.parsing import parse_bool
from smls.vectors import unit_rows

if TYPE_CHECKING:
    from smls.encoders.base import Encoder

# The options that shape the vectors, by their names in a JSON body, a form or the query string.
OPTION_NAMES = ("normalize", "dimensions", "precision", "encoding")
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
ENCODINGS = ("json", "base64")
# The precisions whose codes come from the model's calibrated per-dimension ranges.
CALIBRATED = ("int8", "uint8")
# Little-endian on the wire whatever this machine is, so every client decodes the same bytes.
_WIRE_DTYPES = {"float32": "<f4", "int8": "i1", "uint8": "u1", "binary": "i1", "ubinary": "u1"}


@dataclass(frozen=True)
class OutputOptions:
    """What a client asked the vectors to look like."""

    normalize: bool = False
    dimensions: int | None = None
    precision: str = "float32"
    encoding: str = "json"

    @staticmethod
    def parsers(model_dimension: int) -> dict[str, Callable[[Any], Any]]:
        """How each option's raw value (JSON, form or query) is read and checked, by option name."""
        return {
            "normalize": lambda raw: parse_bool("normalize", raw),
            "dimensions": lambda raw: parse_dimensions(raw, model_dimension),
            "precision": lambda raw: _choice("precision", raw, PRECISIONS),
            "encoding": lambda raw: _choice("encoding", raw, ENCODINGS),
        }

    def output_dimension(self, model_dimension: int) -> int:
        """Dimensions of each vector before packing (the model's, or the truncated count)."""
        return self.dimensions or model_dimension


def parse_dimensions(raw: Any, model_dimension: int, name: str = "dimensions") -> int | None:
    """None (all), or an integer 1..model_dimension from JSON or a form string."""
    if raw is None:
        return None
    if isinstance(raw, float) and raw.is_integer():  # JSON's 300.0 is the integer 300
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise InvalidOption(f"option {name!r} must be an integer, got {show(raw)}")
    try:
        value = int(raw)
    except ValueError:
        raise InvalidOption(f"option {name!r} must be an integer, got {show(raw)}") from None
    if not 1 <= value <= model_dimension:
        raise InvalidOption(f"option {name!r} must be between 1 and {model_dimension} (the model's dimension), got {value}")
    return value


def _choice(name: str, raw: Any, allowed: tuple[str, ...]) -> str:
    if isinstance(raw, str) and raw.strip().lower() in allowed:
        return raw.strip().lower()
    raise InvalidOption(f"option {name!r} must be one of {', '.join(allowed)}, got {show(raw)}")


def truncate_and_normalize(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Keep the first `dimensions` (Matryoshka-style), then scale to unit length if asked."""
    out = vectors[:, :dimensions] if dimensions else vectors
    if normalize:
        out = unit_rows(out)
    return np.ascontiguousarray(out, dtype=np.float32)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """As sentence-transformers' quantize_embeddings, with values outside the ranges clipped.

    int8/uint8: 256 even steps between each dimension's calibrated min and max (`ranges`,
    shape (2, dims)); binary/ubinary: one bit per dimension (> 0), packed 8 to a byte,
    binary offset by -128 into int8.
    """
    if precision == "float32":
        return vectors
    if precision in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        raise ValueError(f"{precision} needs calibration ranges")
    starts, steps = ranges[0], (ranges[1] - ranges[0]) / 255
    steps = np.where(steps > 0, steps, 1.0)  # a constant dimension would divide by zero
    codes = np.clip(np.floor((vectors - starts) / steps), 0, 255)
    return (codes - 128).astype(np.int8) if precision == "int8" else codes.astype(np.uint8)


def encode_vectors(vectors: np.ndarray, precision: str, encoding: str) -> Any:
    """The embeddings for JSON: the array itself (orjson writes it) or one base64 string per vector."""
    if encoding == "json":
        return vectors
    wire = np.ascontiguousarray(vectors, dtype=_WIRE_DTYPES[precision])
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in wire]


def decode_base64(text: str, precision: str) -> np.ndarray:
    """The inverse of encode_vectors for one vector (for clients and tests)."""
    return np.frombuffer(base64.b64decode(text), dtype=_WIRE_DTYPES[precision])


def render(vectors: np.ndarray, options: OutputOptions, calibration: Calibration | None = None) -> Any:
    """The embeddings as the options ask: cut, normalised, quantised, then encoded for JSON.

    int8 and uint8 need `calibration` (the model's fixed ranges).
    """
    shaped = truncate_and_normalize(vectors, options.dimensions, options.normalize)
    ranges = None
    if options.precision in CALIBRATED:
        if calibration is None:
            raise ValueError(f"{options.precision} needs the model's calibration")
        ranges = calibration.ranges(options.dimensions, options.normalize)
    return encode_vectors(quantize(shaped, options.precision, ranges), options.precision, options.encoding)


def calibration_texts() -> list[str]:
    """The bundled calibration corpus: varied English prose, one sentence per line."""
    text = resources.files("smls").joinpath("calibration.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


class Calibration:
    """Per-dimension min/max of the model's vectors over the calibration corpus, computed once.

    The raw vectors are kept on disk under cache_dir (keyed by model fingerprint and
    backend), so that only the first worker ever computes them; the ranges for each
    (dimensions, normalize) pair are derived from them in memory.
    """

    def __init__(self, encoder: Encoder, cache_dir: Path) -> None:
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self._vectors: np.ndarray | None = None
        self._ranges: dict[tuple[int | None, bool], np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """Where the calibration vectors of this model and backend are kept."""
        return self.cache_dir / "calibration" / f"{self.encoder.fingerprint}-{self.encoder.backend}.npy"

    def ranges(self, dimensions: int | None, normalize: bool) -> np.ndarray:
        """(2, dims) float32: each dimension's min and max after the same truncation and scaling."""
        key = (dimensions, normalize)
        with self._lock:
            if key not in self._ranges:
                shaped = truncate_and_normalize(self._raw(), dimensions, normalize)
                self._ranges[key] = np.stack([shaped.min(axis=0), shaped.max(axis=0)])
            return self._ranges[key]

    def _raw(self) -> np.ndarray:
        if self._vectors is None:
            try:
                vectors = np.load(self.path)
                if vectors.shape[1] != self.encoder.dimension:
                    raise ValueError("stale calibration file")
            except (OSError, ValueError):
                vectors = self.encoder.encode(calibration_texts()).vectors
                self._save(vectors)
            self._vectors = vectors
        return self._vectors

    def _save(self, vectors: np.ndarray) -> None:
        # Written to a temporary file and renamed: another worker may be reading it.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path.parent, suffix=".npy", delete=False) as tmp:
                np.save(tmp, vectors)
            os.chmod(tmp.name, 0o644)  # not the temporary file's 0600: servers running as another user read it too
            os.replace(tmp.name, self.path)
        except OSError:
            pass  # a read-only cache only costs recomputing in the next process


def describe(options: OutputOptions, model_dimension: int) -> Mapping[str, Any]:
    """The response fields that say how to read the embeddings."""
    return {
        "dimension": options.output_dimension(model_dimension),
        "normalized": options.normalize,
        "precision": options.precision,
        "encoding": options.encoding,
    }

