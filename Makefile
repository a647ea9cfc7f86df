# Every target does its own set-up on a fresh machine: it creates .venv and installs
# the project (make demo: what it runs; the others: with the dev extras too). torch is
# pinned to 2.13.0, the CPU build available here; any other version pulls gigabytes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed

.PHONY: install browser test demo bench lint clean

# What the demo needs (one resolver run), then the dev tools on top for tests and lint.
$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless chromium for the dashboard's browser tests: Debian's package, which Playwright
# drives through executable_path (it downloads no browser of its own).
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: $(STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q tests

demo: $(RUNTIME)
	$(BIN)/headwater demo

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .headwater .headwater-demo .pytest_cache .mypy_cache .ruff_cache
