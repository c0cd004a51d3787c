# Every target bootstraps .venv from nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test serve lint fmt typecheck install clean bench promtool pytest pytest-e2e pytest-rest

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# Byte-compile our sources once: start-up then reads .pyc even where the
	# environment sets PYTHONDONTWRITEBYTECODE.
	$(BIN)/python -m compileall -q src
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/troupe run "Plan a three-day trip to Kyoto for a family of four"

serve: $(STAMP)
	$(BIN)/troupe serve

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks deploy
	$(BIN)/ruff format --check src tests benchmarks deploy

fmt: $(STAMP)
	$(BIN)/ruff format src tests benchmarks deploy
	$(BIN)/ruff check --fix src tests benchmarks deploy

typecheck: $(STAMP)
	$(BIN)/mypy

# The type check (about a minute from a cold cache) runs beside the tests, and the
# end-to-end tests (mostly waiting on the servers they start) beside the others; each
# part's output is printed when it ends.
test: lint promtool
	$(BIN)/troupe policy test
	$(MAKE) --no-print-directory -j3 --output-sync=target typecheck pytest-e2e pytest-rest

pytest: $(STAMP)
	$(BIN)/pytest

pytest-e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

pytest-rest: $(STAMP)
	$(BIN)/pytest --ignore=tests/e2e

# promtool (alert rule tests) comes only with Debian's prometheus package: installed
# when missing and apt can; otherwise the promtool tests fail and say how to get it.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -q >/dev/null 2>&1 \
	       && $$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } \
	  || echo "could not install promtool: apt-get install prometheus"; }

bench: $(STAMP)
	$(BIN)/python benchmarks/simple_task_latency.py

clean:
	rm -rf $(VENV) .troupe .pytest_cache .mypy_cache .ruff_cache
