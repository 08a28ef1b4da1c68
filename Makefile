# The two commands a new user runs: `make demo` (the main job) and `make test` (everything).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration lint bench clean docs screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tofuflow demo

test: $(STAMP)
	tools/system-deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	TOFUFLOW_SCREENSHOTS=docs/images $(PY) -m pytest tests -n auto --dist loadfile

unit: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

docs: $(STAMP)
	$(PY) -m tofuflow.cli._reference docs/cli.md

# The console's screenshots in docs/console.md, taken by its browser acceptance test.
screenshots: $(STAMP)
	tools/system-deps
	TOFUFLOW_SCREENSHOTS=docs/images $(PY) -m pytest tests/e2e/test_console_browser.py -k approver_reads_the_plan
