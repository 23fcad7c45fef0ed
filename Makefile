# Two entry points: `make repro` (whole pipeline on the default corpus), `make test`;
# `make docs` serves the documentation (docs/, mkdocs.yml).
# Both create .venv on first use and install the project with the pinned versions in
# requirements.lock; later calls reuse it unless pyproject.toml or the lock changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup repro test docs lint bench clean-venv mlflow-ui mlflow-server browser

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { echo "need Python 3.11 on PATH as python3.11 (or run: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	@test -d .git || { git init -q && echo "initialised a git repository (DVC needs one)"; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# the docs first (a broken link or anchor fails, in a second), then the suite on two workers
# (pytest-xdist), each test file on one of them: the end-to-end files spend much of their time in
# single-threaded stage processes, so the other core runs the rest meanwhile. pytest-randomly
# shuffles the order and prints its seed in the header; replay an order with
# `make test PYTEST_ARGS=--randomly-seed=N`, keep the file order with PYTEST_ARGS='-p no:randomly'
PYTEST_ARGS ?=
test: $(STAMP) browser
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# headless Chromium (Debian package) for the test that reads the MLflow UI
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null || \
	  { $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; }; }

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/pipeline_timing.py

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

mlflow-server: $(STAMP)
	$(BIN)/lmpipe mlflow-server --port 5000

clean-venv:
	rm -rf $(VENV)
