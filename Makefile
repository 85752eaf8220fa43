# smls: `make serve` and `make test` are all a new user needs (see README.org).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test venv bench clean

serve: $(STAMP)  ## serve on $$SMLS_HOST:$$SMLS_PORT (127.0.0.1:8000)
	$(BIN)/gunicorn server:app -c gunicorn.conf.py

test: $(STAMP)  ## run the whole test suite (starts real gunicorns on loopback ports)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# The peer, Infinity, lives in its own venv so that its pins never touch ours.
INFINITY_VENV := .bench/infinity-venv
INFINITY_STAMP := $(INFINITY_VENV)/.installed

bench: $(STAMP) $(INFINITY_STAMP)  ## smls vs its ceiling, a naive server and Infinity: bench/results.md
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || echo "bench: please install wrk"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

$(INFINITY_STAMP): bench/infinity-requirements.txt bench/infinity-constraints.txt
	test -x $(INFINITY_VENV)/bin/python || $(PYTHON) -m venv $(INFINITY_VENV)
	if $(INFINITY_VENV)/bin/python -m pip install --disable-pip-version-check -q \
	    -c bench/infinity-constraints.txt -r bench/infinity-requirements.txt; then touch $@; \
	else echo "bench: Infinity could not be installed; the benchmark runs without it"; fi

# Re-install whenever requirements.txt or pyproject.toml changes.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .bench .cache
