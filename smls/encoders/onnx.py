"""The ONNX backends: the model's transformer exported to ONNX (fp32, or int8), run by ONNX Runtime, pooled in numpy.

OnnxEncoder also holds what every runtime of the exported file shares (the tokenizer, the
pass layout, the pooling); smls.encoders.openvino runs the same file with OpenVINO.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smls.encoders import export
from smls.encoders.base import BatchResult, SentenceEncoder


class OnnxEncoder(SentenceEncoder):
    """The model's transformer exported to ONNX, run by ONNX Runtime, pooled like sentence-transformers."""

    # session.run is thread-safe, and the tokenizer is only used to encode (never reconfigured).
    parallel_safe = True

    names = ("onnx", "onnx-int8")  # the backend's name, fp32 and int8 (which file each runs: export.ensure_exported)

    def __init__(self, path: Path, name: str | None, batch_size: int, *, quantized: bool, cache_dir: Path, threads: int = 0) -> None:
        super().__init__(path, name, batch_size)
        self.backend = self.names[quantized]
        self.threads = threads  # per forward pass; 0: the runtime's default (every core)
        self.spec = export.read_spec(path)
        self.dimension, self.max_seq_length = self.spec.dimension, self.spec.max_seq_length
        self.onnx_path = export.ensure_exported(path, self.fingerprint, cache_dir, self.backend)
        self._tokenizer, self._pad_id = export.load_tokenizer(path, self.max_seq_length)
        # A pass holds at most 64 padded tokens (and batch_size sentences): on one CPU thread
        # small passes run faster per sentence than big ones (their activations stay in the
        # core's cache), while very short texts still share one. Measured in-process, 2
        # streams x 1 thread, calls of 16 (sentences/s, batch_size 8 alone -> with 64 tokens):
        # onnx-int8 205 -> 331 (demo corpus), 313 -> 491 (standard-library docstrings),
        # 1097 -> 1266 (four-word texts); onnx 136 -> 202, 189 -> 285, 680 -> 761. 48 to 128
        # tokens came within 5% of each other; torch is the other way round (bigger passes
        # faster), so it keeps batch_size alone.
        self.pass_tokens = 64
        if self.backend == "onnx-int8":
            # One text a pass: dynamic int8 scales each pass's activations by what the pass
            # holds, so a text sharing a pass got a vector that moved with its batch mates
            # (cosine 0.996 to itself alone). Alone in its pass, a text's vector is the same
            # bits whoever else is asking, and better (its scale is its own): on 2,000
            # standard-library sentences min cosine 0.989 -> 0.995 with the export below
            # (docs/benchmarks.org, "int8 that does not depend on its batch mates"). On this
            # CPU int8's passes gain nothing from sharing: two streams ran 563-569 sentences/s
            # one text a pass against 562-572 in passes of up to 8.
            self.pass_sentences = 1
        self._session: Any = None
        self._input_names: set[str] = set()
        self._session_pid = 0
        self._session_lock = threading.Lock()
        self._shared = False
        if threads == 1 and self.shares_its_session:
            # One thread per forward pass: ONNX Runtime then starts no threads of its own, so
            # the session can be made here (in the gunicorn master) and its weights shared
            # copy-on-write by every worker, instead of one private copy per worker.
            self._session_for_this_process()
            self._shared = True

    # ONNX Runtime on one thread starts no threads: a session made in the gunicorn master is safe to fork.
    shares_its_session = True

    def info(self) -> dict[str, Any]:
        """As SentenceEncoder.info, plus the ONNX file in use."""
        return {**super().info(), "onnx_file": str(self.onnx_path)}

    def _session_for_this_process(self) -> Any:
        # A session with threads is made in the process that runs it: threads do not survive a fork.
        # (A shared one is never remade, so it asks for no process id: a system call a pass.)
        if self._session is None or (not self._shared and self._session_pid != os.getpid()):
            with self._session_lock:  # two streams may get here first at once
                if self._session is None or (not self._shared and self._session_pid != os.getpid()):
                    self._new_session()
        return self._session

    def _new_session(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.enable_cpu_mem_arena = False  # no per-process arena of activations kept around
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Busy-waiting threads would steal the core from the request threads between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._session_pid = os.getpid()

    def _run(self, session: Any, feeds: dict[str, Any]) -> Any:
        """One pass of the model: the token embeddings (batch, sequence, dimension)."""
        return session.run(None, feeds)[0]

    def prepare(self, texts: Sequence[str]) -> list[Any]:
        """Tokenise (unpadded): the Rust tokenizer releases the GIL, so request threads can do this."""
        return self._tokenizer.encode_batch(list(texts))

    def _lengths(self, texts: list[str], prepared: list[Any] | None) -> list[int]:
        """Token counts (the padded width of a pass), where the texts were tokenised already."""
        return [len(e.ids) for e in prepared] if prepared is not None else super()._lengths(texts, prepared)

    def _encode_batch(self, texts: list[str], prepared: list[Any] | None) -> BatchResult:
        session = self._session_for_this_process()
        encodings = prepared if prepared is not None else self.prepare(texts)
        feeds = export.model_feeds(encodings, self._pad_id, self._input_names)
        mask = feeds["attention_mask"]
        hidden = self._run(session, feeds)
        vectors = self.spec.pool(hidden, mask)
        return vectors, [bool(e.overflowing) for e in encodings], mask.sum(axis=1)
