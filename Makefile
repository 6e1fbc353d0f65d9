# Two commands do everything on a fresh machine: `make demo` and `make test`.
# torch is installed first, pinned, in its own pip call, so no later requirement can make
# pip fetch another build; every other package is pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo figures bench lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

demo: $(STAMP)
	$(PY) -m recurvlm.demo

figures: $(STAMP)
	$(PY) -m recurvlm.figures fig=all

bench: $(STAMP)
	$(PY) -m recurvlm.bench stimuli
	$(PY) -m recurvlm.bench shortcuts

# Refresh constraints.txt from the current environment (torch is pinned by the Makefile).
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton)' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
