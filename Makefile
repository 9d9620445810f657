# The two README commands: `make app` runs the app, `make test` runs lint and the tests.
# Both build .venv on first use (and again when the dependency files change).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# On a CUDA machine whose python already holds torch and triton (no venv needed).
GPU_PYTHON ?= python3
GPU_REPORT ?= benchmarks/results/gpu_tests.json

.PHONY: app test lint test-gpu

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml .ci/setup
	bash .ci/setup $(VENV)
	touch $@

app: $(STAMP)
	$(PY) app.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

test-gpu:
	$(GPU_PYTHON) -m pytest --gpu-report $(GPU_REPORT)
