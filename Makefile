# The two README commands: `make app` runs the app, `make test` runs lint and the tests
# (the integration tests also against the oldest supported transformers).
# Both build .venv on first use, and again when pyproject.toml (the dependency list) or the set-up changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# On a CUDA machine whose python already holds torch and triton (no venv needed).
GPU_PYTHON ?= python3
GPU_REPORT ?= benchmarks/results/gpu_tests.json
# pytest-xdist workers of `make test-gpu`: they share the GPU, and compile the Triton kernels in parallel.
GPU_TEST_WORKERS ?= 8
# pytest-xdist workers of `make test` (the Triton interpreter runs one Python thread a kernel).
TEST_WORKERS ?= auto

# The oldest transformers release we support, tested in its own environment.
FLOOR_VENV ?= .venv-floor
TRANSFORMERS_FLOOR ?= transformers==5.17.0

.PHONY: app test lint test-gpu test-floor bench-gpu

$(STAMP): pyproject.toml .ci/setup
	bash .ci/setup $(VENV)
	touch $@

app: $(STAMP)
	$(PY) app.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS)
	$(MAKE) test-floor

$(FLOOR_VENV)/.installed: pyproject.toml .ci/setup
	TRANSFORMERS_SPEC=$(TRANSFORMERS_FLOOR) bash .ci/setup $(FLOOR_VENV)
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest tests/test_integration.py tests/test_loading.py

test-gpu:
	$(GPU_PYTHON) -m pytest -n $(GPU_TEST_WORKERS) --gpu-report $(GPU_REPORT)

# Both performance benchmarks on a CUDA machine, in one command (results under BENCH_DIR). On an
# H200 it took 9 min 15 s: bench_e2e about 2.2 min, then the attention grid, which also breaks the
# budget-128 step into its kernels (--profile). The old whole-model baseline (SDPA for the masked
# dense steps) is `bench_e2e --dense-backend torch --batches 1`, measured in e2e_h200_sdpa.json.
BENCH_DEVICE ?= h200
BENCH_DIR ?= benchmarks/results
bench-gpu:
	$(GPU_PYTHON) -m benchmarks.bench_e2e --out $(BENCH_DIR)/e2e_$(BENCH_DEVICE).json
	$(GPU_PYTHON) -m benchmarks.bench_attention --profile --out $(BENCH_DIR)/attention_$(BENCH_DEVICE).json
