"""The OpenVINO backends (optional: requirements-openvino.txt): the exported model run by OpenVINO on the CPU.

  openvino       the fp32 ONNX file at the CPU's default inference precision (bf16 where the
                 CPU has it, such as avx512_bf16; else fp32)
  openvino-int8  NNCF's static int8 of that file: activation ranges calibrated once, at
                 export, on smls/calibration.txt, so a text's vector never depends on its batch mates

Tokenising, the pass layout and pooling are OnnxEncoder's: only the pass itself runs
elsewhere. The model is compiled in the process that runs it (a gunicorn worker, after
the fork), since OpenVINO's thread pool does not survive a fork; so each worker holds its
own copy of the weights, unlike a one-thread ONNX Runtime session shared with the master.
"""

from __future__ import annotations

import os
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from smls.encoders.onnx import OnnxEncoder
from smls.encoders.slots import Budget
from smls.errors import StartupError


def check_installed() -> None:
    """StartupError, in one line, unless openvino and NNCF (which makes the int8 file, in a child process) are installed.

    Looked up, not imported: NNCF imports torch, which the serving process never needs.
    """
    missing = [name for name in ("openvino", "nncf") if find_spec(name) is None]
    if missing:
        raise StartupError(f"the openvino backends need the openvino and nncf packages ({', '.join(missing)} missing): pip install -r requirements-openvino.txt")


class OpenVinoEncoder(OnnxEncoder):
    """The exported model compiled by OpenVINO for this CPU; one infer request per thread, at most `streams` running at once."""

    names = ("openvino", "openvino-int8")
    shares_its_session = False  # compiled after the fork, in each worker (see the module's docstring)

    def __init__(self, path: Path, name: str | None, batch_size: int, *, quantized: bool, cache_dir: Path, threads: int = 0) -> None:
        check_installed()
        super().__init__(path, name, batch_size, quantized=quantized, cache_dir=cache_dir, threads=threads)
        self._requests = threading.local()

    def set_streams(self, n: int, budget: Budget | None = None) -> None:
        """As SentenceEncoder.set_streams; a model compiled for another number of streams is compiled again at its next pass."""
        if n != self.streams:
            self._session = None
        super().set_streams(n, budget)

    def _new_session(self) -> None:
        import openvino as ov

        # OpenVINO's threads are its streams' together: `streams` passes at once, each on `threads`.
        # Not pinned to cores: pinned, a c=1 server ran slower here (docs/benchmarks.org, "A pause before the pass").
        config: dict[str, Any] = {"NUM_STREAMS": self.streams, "ENABLE_CPU_PINNING": False}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads * self.streams
        core = ov.Core()
        self._session = core.compile_model(core.read_model(str(self.onnx_path)), "CPU", config)
        self._input_names = {i.get_any_name() for i in self._session.inputs}
        self._requests = threading.local()  # (a forked worker's requests are its own)
        self._session_pid = os.getpid()

    def _run(self, session: Any, feeds: dict[str, Any]) -> Any:
        """One pass, on this thread's own infer request (a request runs one pass at a time)."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = session.create_infer_request()
        return request.infer(feeds)[0]

    def info(self) -> dict[str, Any]:
        """As OnnxEncoder.info, plus the precision OpenVINO runs the pass at (once compiled)."""
        info = super().info()
        if self._session is not None:
            info["precision"] = self._session.get_property("INFERENCE_PRECISION_HINT").to_string()
        return info
