# smls: `make serve` and `make test` are all a new user needs (see README.org).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test venv clean

serve: $(STAMP)  ## serve on $$SMLS_HOST:$$SMLS_PORT (127.0.0.1:8000)
	$(BIN)/gunicorn server:app -c gunicorn.conf.py

test: $(STAMP)  ## run the whole test suite (starts real gunicorns on loopback ports)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# Re-install whenever requirements.txt or pyproject.toml changes.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
