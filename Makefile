# Two commands do all set-up on a fresh machine (Python 3.11 + pip):
#   make demo   -> venv, install, run the end-to-end demo (train, calibrate, evaluate, report)
#   make test   -> venv, install with test extras, lint (ruff check + format check, mypy), run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out
PYTEST_ARGS ?= -n 2 --dist loadfile

LINT_PATHS ?= chestxr tests benchmarks experiments

.PHONY: demo test lint bench install

install:
	bash scripts/setup_venv.sh $(VENV)

demo: install
	$(VENV)/bin/chestxr demo --out $(DEMO_OUT) --overwrite

# ruff (lint + format, config in pyproject.toml) and mypy ([tool.mypy]); any finding fails the build
lint:
	bash scripts/setup_venv.sh $(VENV) test
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

test: lint
	bash scripts/install_browser.sh || true
	bash scripts/install_orthanc.sh || true
	bash scripts/install_dicom_tools.sh || true
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench:
	bash scripts/setup_venv.sh $(VENV) bench
	$(PY) benchmarks/run_all.py
