# Every target bootstraps .venv from nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test serve lint fmt typecheck install clean bench

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
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

fmt: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/troupe policy test
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/simple_task_latency.py

clean:
	rm -rf $(VENV) .troupe .pytest_cache .mypy_cache .ruff_cache
