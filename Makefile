# Two commands do all set-up on a fresh machine (Python 3.11 + pip):
#   make demo   -> venv, install, run the end-to-end demo (train, calibrate, evaluate, report)
#   make test   -> venv, install with test extras, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test bench install

install:
	bash scripts/setup_venv.sh $(VENV)

demo: install
	$(VENV)/bin/chestxr demo --out $(DEMO_OUT) --overwrite

test:
	bash scripts/setup_venv.sh $(VENV) test
	bash scripts/install_browser.sh || true
	bash scripts/install_orthanc.sh || true
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py
