"""Sentence encoders: the interface the server speaks to, and its backends.

`SentenceEncoder` holds what every backend shares (sort by length, batch, count
truncation and tokens, restore order, normalise); a backend only turns one batch of
texts into vectors:
  * torch      sentence-transformers on torch (any sentence-transformers model)
  * onnx       the same model exported to ONNX and run by ONNX Runtime (fp32, exact)
  * onnx-int8  that export with int8 dynamic quantisation (faster, cosine ~0.99 to fp32)
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from smls.config import BACKENDS, Settings, check_model_dir
from smls.errors import StartupError

log = logging.getLogger("smls")

EMBEDDED_MODEL_NAME = "all-MiniLM-L6-v2"

# Threads one inference may use in this process; gunicorn's post_fork sets it per worker.
_inference_threads = 0  # 0: the library's default


def set_inference_threads(n: int) -> None:
    """Threads each forward pass may use in this process (torch now, ONNX Runtime at session creation)."""
    global _inference_threads
    _inference_threads = n
    import sys

    if "torch" in sys.modules:  # never import torch just for this: the onnx backends do without it
        torch = sys.modules["torch"]
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or inter-op work has started: harmless
            pass


@dataclass(frozen=True)
class Encoded:
    """Vectors for a list of texts, in input order, with what truncation did to each."""

    vectors: np.ndarray  # float32, shape (n, dimension)
    truncated_flags: np.ndarray  # bool, shape (n,): the text was longer than max_seq_length and cut
    token_counts: np.ndarray  # int, shape (n,): tokens fed to the model, special tokens included

    @property
    def truncated(self) -> int:
        """How many texts were truncated."""
        return int(self.truncated_flags.sum())

    @property
    def tokens(self) -> int:
        """Tokens fed to the model in all."""
        return int(self.token_counts.sum())

    def slice(self, start: int, stop: int) -> "Encoded":
        """The part of this result for texts[start:stop]."""
        return Encoded(self.vectors[start:stop], self.truncated_flags[start:stop], self.token_counts[start:stop])

    def normalized(self) -> "Encoded":
        """The same result with every vector scaled to unit length (zero vectors stay zero)."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        vectors = np.divide(self.vectors, norms, out=np.zeros_like(self.vectors), where=norms > 0)
        return Encoded(vectors, self.truncated_flags, self.token_counts)


class SentenceEncoder:
    """A sentence embedding model loaded once; thread-safe, one forward pass at a time."""

    backend = "abstract"

    def __init__(self, path: Path, name: str | None, batch_size: int) -> None:
        self.path = path
        self.name = name or _default_name(path)
        self.batch_size = batch_size
        self.fingerprint = model_fingerprint(path)
        self.dimension = 0
        self.max_seq_length = 0
        self.device = "cpu"
        # Forward passes allowed at once in this process (see set_streams). One by default:
        # concurrent passes on the same cores only fight over them.
        self.streams = 1
        self._slots = threading.Semaphore(1)
        self._count_lock = threading.Lock()
        # Sentences run through the model: lets tests and metrics see cache hits.
        self.sentences_encoded = 0
        # Called after each encode with (sentences, tokens, truncated); the server counts them.
        self.on_encoded: Callable[[int, int, int], Any] | None = None

    #: Whether forward passes may run in several threads at once (see set_streams).
    parallel_safe = False

    def set_streams(self, n: int) -> None:
        """Let up to `n` forward passes run at once in this process (each on its own inference threads)."""
        if n > 1 and not self.parallel_safe:
            raise StartupError(f"the {self.backend} backend runs one forward pass at a time; SMLS_INFERENCE_STREAMS must be 1")
        self.streams = n
        self._slots = threading.Semaphore(n)

    def info(self) -> dict[str, Any]:
        """Model name, path, backend, dimension, max sequence length, device and fingerprint."""
        return {
            "name": self.name,
            "path": str(self.path),
            "backend": self.backend,
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "device": self.device,
            "fingerprint": self.fingerprint,
        }

    def run(self, texts: Sequence[str], *, normalize: bool = False) -> np.ndarray:
        """Embed `texts`; return a float32 array of shape (len(texts), dimension)."""
        return self.encode(texts, normalize=normalize).vectors

    def prepare(self, texts: Sequence[str]) -> list[Any] | None:
        """Work that may run outside the model lock, in the caller's thread (e.g. tokenising); None if none."""
        return None

    def encode(self, texts: Sequence[str], *, normalize: bool = False, prepared: list[Any] | None = None) -> Encoded:
        """Embed `texts` in batches, longest first, and report truncation and token counts.

        `prepared` is what prepare(texts) returned, if the caller did that part already.
        """
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("SentenceEncoder.encode takes a list of strings")
        if prepared is None:
            prepared = self.prepare(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        tokens = np.zeros(len(texts), dtype=np.int64)
        # Like SentenceTransformer.encode: similar lengths share a batch, so padding is small.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self._slots:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                part = None if prepared is None else [prepared[i] for i in idx]
                out[idx], truncated[idx], tokens[idx] = self._encode_batch([texts[i] for i in idx], part)
                with self._count_lock:
                    self.sentences_encoded += len(idx)
        result = Encoded(out, truncated, tokens)
        if self.on_encoded is not None:
            self.on_encoded(len(texts), int(tokens.sum()), int(truncated.sum()))
        return result.normalized() if normalize else result

    def _encode_batch(self, texts: list[str], prepared: list[Any] | None) -> tuple[np.ndarray, Sequence[bool], Sequence[int]]:
        """Vectors, truncated flags and token counts for one batch (called holding one of the streams)."""
        raise NotImplementedError


class TorchEncoder(SentenceEncoder):
    """sentence-transformers on torch: any sentence-transformers model."""

    backend = "torch"

    def __init__(self, path: Path, name: str | None, batch_size: int, device: str = "cpu") -> None:
        super().__init__(path, name, batch_size)
        # Imported here so that `import smls`, gunicorn.conf.py and the onnx backends stay light.
        from sentence_transformers import SentenceTransformer

        self.device = device
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._model.eval()
        self.dimension = int(self._model.get_embedding_dimension())
        self.max_seq_length = int(self._model.max_seq_length)

    def _encode_batch(self, texts: list[str], prepared: list[Any] | None) -> tuple[np.ndarray, Sequence[bool], Sequence[int]]:
        import torch

        with torch.inference_mode():
            features = self._model.preprocess(texts)
            flags = _truncated_flags(features, texts, self._model.tokenizer, self.max_seq_length)
            counts = features["attention_mask"].sum(dim=1).numpy()
            if self.device != "cpu":
                features = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in features.items()}
            vectors = self._model.forward(dict(features))["sentence_embedding"].float().cpu().numpy()
        return vectors, flags, counts


class OnnxEncoder(SentenceEncoder):
    """The model's transformer exported to ONNX, run by ONNX Runtime, pooled like sentence-transformers."""

    # session.run is thread-safe, and the tokenizer is only used to encode (never reconfigured).
    parallel_safe = True

    def __init__(self, path: Path, name: str | None, batch_size: int, *, quantized: bool, cache_dir: Path) -> None:
        super().__init__(path, name, batch_size)
        from smls import onnx_export

        self.backend = "onnx-int8" if quantized else "onnx"
        self.spec = onnx_export.read_spec(path)
        self.dimension, self.max_seq_length = self.spec.dimension, self.spec.max_seq_length
        self.onnx_path = onnx_export.ensure_exported(path, self.fingerprint, cache_dir, quantized=quantized)
        self._tokenizer, self._pad_id = onnx_export.load_tokenizer(path, self.max_seq_length)
        self._session: Any = None
        self._session_pid = 0
        self._session_lock = threading.Lock()
        self._shared = False
        if _inference_threads == 1:
            # One thread per forward pass: ONNX Runtime then starts no threads of its own, so
            # the session can be made here (in the gunicorn master) and its weights shared
            # copy-on-write by every worker, instead of one private copy per worker.
            self._session_for_this_process()
            self._shared = True

    def info(self) -> dict[str, Any]:
        """As SentenceEncoder.info, plus the ONNX file in use."""
        return {**super().info(), "onnx_file": str(self.onnx_path)}

    def _session_for_this_process(self) -> Any:
        # A session with threads is made in the process that runs it: threads do not survive a fork.
        if self._session is None or (self._session_pid != os.getpid() and not self._shared):
            with self._session_lock:  # two streams may get here first at once
                if self._session is None or (self._session_pid != os.getpid() and not self._shared):
                    self._new_session()
        return self._session

    def _new_session(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _inference_threads
        options.enable_cpu_mem_arena = False  # no per-process arena of activations kept around
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Busy-waiting threads would steal the core from the request threads between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._session_pid = os.getpid()

    def prepare(self, texts: Sequence[str]) -> list[Any]:
        """Tokenise (unpadded): the Rust tokenizer releases the GIL, so request threads can do this."""
        return self._tokenizer.encode_batch(list(texts))

    def _encode_batch(self, texts: list[str], prepared: list[Any] | None) -> tuple[np.ndarray, Sequence[bool], Sequence[int]]:
        session = self._session_for_this_process()
        encodings = prepared if prepared is not None else self.prepare(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], types[row, :n], mask[row, :n] = e.ids, e.type_ids, 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = types
        hidden = session.run(None, feeds)[0]
        vectors = self.spec.pool(hidden, mask)
        return vectors, [bool(e.overflowing) for e in encodings], mask.sum(axis=1)


def build_encoder(
    *, model: str, name: str | None = None, device: str = "cpu", batch_size: int = 8, backend: str = "onnx", cache_dir: str = ".cache/smls"
) -> SentenceEncoder:
    """Load the model at `model` with the given backend (the registry's "SentenceEncoder" builder)."""
    path = check_model_dir(Path(model), "model")
    if backend not in BACKENDS:
        raise StartupError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "torch" and device != "cpu":
        raise StartupError(f"SMLS_BACKEND={backend} runs on the CPU only; use SMLS_BACKEND=torch for {device!r}")
    try:
        if backend == "torch":
            return TorchEncoder(path, name, batch_size, device)
        return OnnxEncoder(path, name, batch_size, quantized=backend == "onnx-int8", cache_dir=Path(cache_dir))
    except StartupError:
        raise
    except Exception as exc:  # any other loading failure is a start-up failure with the path in it
        raise StartupError(f"could not load the model at {str(path)!r}: {type(exc).__name__}: {exc}") from exc


def model_fingerprint(path: Path) -> str:
    """A short digest of the model folder (file names, sizes, mtimes): changes when the weights change."""
    digest = hashlib.sha256(str(path).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _truncated_flags(features: Any, texts: list[str], tokenizer: Any, max_len: int) -> list[bool]:
    """For each text, whether the tokenizer cut it to fit max_len."""
    encodings = getattr(features, "encodings", None)
    if encodings:  # fast tokenizers keep what they cut off in `overflowing`
        return [bool(e.overflowing) for e in encodings]
    lengths = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return [len(ids) > max_len for ids in lengths]


def _default_name(path: Path) -> str:
    """The name clients see: the embedded model's real name, else the folder name."""
    from smls.config import embedded_model_path

    try:
        if path == embedded_model_path().resolve():
            return EMBEDDED_MODEL_NAME
    except StartupError:
        pass
    return path.name


def encoder_for(settings: Settings) -> SentenceEncoder:
    """The registry's SentenceEncoder for these settings (loaded once per process)."""
    from smls import ml_services

    model_path, _ = settings.model_path()
    return ml_services.get(
        "SentenceEncoder",
        model=str(model_path),
        name=settings.model_name,
        device=settings.device,
        batch_size=settings.batch_size,
        backend=settings.backend,
        cache_dir=str(settings.cache_dir),
    )


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a SentenceEncoder config from SMLS_* settings, so equal configs share one instance."""
    unknown = set(config) - {"model", "name", "device", "batch_size", "backend", "cache_dir"}
    if unknown:
        raise TypeError(f"SentenceEncoder does not take {', '.join(sorted(unknown))}")
    settings = Settings.from_env()
    if config.get("model") is None:
        model_path, _ = settings.model_path()
    else:
        model_path = check_model_dir(Path(os.fspath(config["model"])).expanduser(), "model")
    return {
        "model": str(model_path),
        "name": config.get("name") or settings.model_name or _default_name(model_path),
        "device": config.get("device") or settings.device,
        "batch_size": int(config.get("batch_size") or settings.batch_size),
        "backend": config.get("backend") or settings.backend,
        "cache_dir": str(Path(config.get("cache_dir") or settings.cache_dir).resolve()),
    }

