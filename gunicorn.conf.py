"""gunicorn settings for smls, read from SMLS_* variables (docs/reference.org has the table).

The master loads the app and the model once (preload_app) and runs no inference:
libgomp is not fork-safe, and a parallel torch op in the master before fork made
workers hang. Each worker sets its own torch thread count and warms up after fork.
"""

import os
import shutil
import sys
import tempfile

import gunicorn

from smls.auth import KeyRing, is_loopback
from smls.config import Settings
from smls.encoders.torch import set_torch_threads
from smls.errors import StartupError
from smls.logs import access_log_format as _access_log_format
from smls.memory import before_fork, limit_arenas
from smls.worker import CONNECTIONS, check_gunicorn

try:
    check_gunicorn(gunicorn.__version__)  # the worker class leans on gthread's internals
    _settings = Settings.from_env()
    _settings.catalog()  # fail fast, in one line, on a bad SMLS_MODELS entry, SMLS_MODEL or data/model
    _keys = KeyRing(_settings.api_key, _settings.api_key_file)  # and on a bad key or key file
except StartupError as _exc:
    sys.exit(f"smls: {_exc}")

# Before the app (and any thread) starts, so that the master and its workers keep one
# malloc arena each instead of one per thread (smls.memory).
limit_arenas(_settings.malloc_arenas)

# OpenMP reads this when torch first loads; post_fork sets torch's own count as well.
# (The encoder gets the same count from the settings: smls.serving.loading.encoder_for.)
os.environ.setdefault("OMP_NUM_THREADS", str(_settings.effective_torch_threads))

# Prometheus multiprocess mode: each worker writes its numbers into this folder and /metrics
# sums them. It must be set before prometheus_client is first imported (the app, below).
# A folder of our own is removed at exit; one the user set is left alone.
# (This file runs again on kill -HUP: the folder made the first time is kept.)
_own_metrics_dir = os.environ.get("_SMLS_OWN_METRICS_DIR")
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="smls-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["_SMLS_OWN_METRICS_DIR"] = _own_metrics_dir

bind = [_settings.bind_address]
workers = _settings.workers
worker_class = "smls.worker.ThreadWorker"  # gthread, with a deadline for receiving each request
threads = _settings.effective_threads
preload_app = True
timeout = _settings.timeout
graceful_timeout = 30
keepalive = 5
loglevel = _settings.log_level
accesslog = _settings.access_log or None
access_log_format = _access_log_format(_settings.access_log_format)
if _settings.access_log_format == "json":
    logger_class = "smls.logs.JsonAccessLogger"
errorlog = "-"
# gunicorn's control socket lives at one fixed path per user: two servers on one machine
# (tests, blue/green, several instances behind nginx) would fight over it.
control_socket_disable = True
# Bodies are limited by the app (SMLS_MAX_BODY_BYTES); these only bound the request line and headers.
limit_request_line = 8190
limit_request_fields = 100


def when_ready(server):
    """After the app is preloaded, before any fork: freeze and trim the heap so workers share more pages."""
    before_fork()
    cores = os.cpu_count() or 1
    total = _settings.workers * _settings.effective_torch_threads
    if total > cores:
        server.log.warning(
            "smls: %d workers x %d torch threads = %d > %d cores; expect oversubscription",
            _settings.workers, _settings.effective_torch_threads, total, cores,
        )
    if not _keys.enabled and not is_loopback(_settings.bind_address):
        server.log.warning(
            "smls: listening on %s, beyond this machine, with no API key: anyone who can reach it can use it "
            "(set SMLS_API_KEY or SMLS_API_KEY_FILE)", _settings.bind_address,
        )
    server.log.info(
        "smls: %d workers x %d inference streams x %d threads on %s",
        _settings.workers, _settings.effective_streams, _settings.effective_torch_threads, _settings.bind_address,
    )


def post_fork(server, worker):
    """In the new worker: give inference its share of the cores before it runs."""
    set_torch_threads(_settings.effective_torch_threads)


def post_worker_init(worker):
    """In the worker, once the app is loaded: warm up, so the first request is not the slow one."""
    from smls.web import warm_up

    warm_up(worker.wsgi)


def child_exit(server, worker):
    """A worker is gone (exited or killed): drop its live gauges from the metrics sums, and its connection count."""
    from prometheus_client import multiprocess

    CONNECTIONS.release(worker.age)
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """The server stops: remove the metrics folder we made."""
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def worker_exit(server, worker):
    """The worker is done (its requests finished): leave without running C++ destructors.

    ONNX Runtime's state, made in the master before the fork, aborts in its destructors
    in a forked child ("terminate called after throwing std::system_error"), which
    gunicorn logs as a worker killed by SIGABRT. Nothing is left to clean up here, so
    the worker exits at once, with the status it was going to exit with.
    """
    exc = sys.exc_info()[1]
    code = 0
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    elif exc is not None:
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
