"""gunicorn settings for smls, read from SMLS_* variables (see README.org for the table).

The master loads the app and the model once (preload_app) and runs no inference:
libgomp is not fork-safe, and a parallel torch op in the master before fork made
workers hang. Each worker sets its own torch thread count and warms up after fork.
"""

import gc
import os
import sys

from smls.config import Settings
from smls.encoders import set_inference_threads
from smls.errors import StartupError

try:
    _settings = Settings.from_env()
    _settings.model_path()  # fail fast, in one line, on a bad SMLS_MODEL or data/model
except StartupError as _exc:
    sys.exit(f"smls: {_exc}")

# OpenMP reads this when torch first loads; post_fork sets torch's own count as well.
os.environ.setdefault("OMP_NUM_THREADS", str(_settings.effective_torch_threads))
# Known before the app loads, so that a one-thread ONNX session can be made once in the
# master and shared by the workers (see smls.encoders.OnnxEncoder). Sets no torch state.
set_inference_threads(_settings.effective_torch_threads)

bind = [_settings.bind_address]
workers = _settings.workers
worker_class = "gthread"
threads = _settings.threads
preload_app = True
timeout = _settings.timeout
graceful_timeout = 30
keepalive = 5
loglevel = _settings.log_level
accesslog = _settings.access_log or None
errorlog = "-"
# gunicorn's control socket lives at one fixed path per user: two servers on one machine
# (tests, blue/green, several instances behind nginx) would fight over it.
control_socket_disable = True
# Bodies are limited by the app (SMLS_MAX_BODY_BYTES); these only bound the request line and headers.
limit_request_line = 8190
limit_request_fields = 100


def when_ready(server):
    """After the app is preloaded, before any fork: freeze the heap so workers share more pages."""
    gc.collect()
    gc.freeze()
    cores = os.cpu_count() or 1
    total = _settings.workers * _settings.effective_torch_threads
    if total > cores:
        server.log.warning(
            "smls: %d workers x %d torch threads = %d > %d cores; expect oversubscription",
            _settings.workers, _settings.effective_torch_threads, total, cores,
        )
    server.log.info(
        "smls: %d workers x %d inference streams x %d threads on %s",
        _settings.workers, _settings.effective_streams, _settings.effective_torch_threads, _settings.bind_address,
    )


def post_fork(server, worker):
    """In the new worker: give inference its share of the cores before it runs."""
    set_inference_threads(_settings.effective_torch_threads)


def post_worker_init(worker):
    """In the worker, once the app is loaded: warm up, so the first request is not the slow one."""
    from smls.web import warm_up

    warm_up(worker.wsgi)
