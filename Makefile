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

.PHONY: app test lint test-gpu test-floor bench-gpu bench-launch bench-e2e bench-attention bench-peers

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

# The GPU benchmarks in one command, results under BENCH_DIR: what a kernel boundary costs inside a
# CUDA graph (bench_launch), whole-model decode (bench_e2e), the
# attention grid with each kernel of the budget-128 step (bench_attention), and the peers' own
# kernels beside ours on the same inputs (bench_peers, which finds them through PEERS_ARGS and
# skips, saying why, any that is missing). *_ARGS narrow a run, e.g. ATTENTION_ARGS="--lengths 32768".
BENCH_DEVICE ?= h200
BENCH_DIR ?= benchmarks/results
E2E_ARGS ?=
# the attention step's cases of docs/performance.md: Llama-3-8B at budget 128, batches 1 and 8, and the targets' others
ATTENTION_CASES := $(foreach L,4096 8192 16384 32768 65536 131072 262144,llama3-8b:$(L):1:128 llama3-8b:$(L):8:128)
ATTENTION_CASES += mha-7b:32768:1:256 qwen2.5-7b:131072:1:128
ATTENTION_ARGS ?= --cases $(ATTENTION_CASES)
PEERS ?= .peers
PEERS_ARGS ?= --sglang $(PEERS)/sglang --adamas-src $(PEERS)/adamas-authors --include $(PEERS)/include
# bench-e2e, bench-attention and bench-peers run one of the three; never two at once, even under -j,
# as each times the GPU alone.
.NOTPARALLEL: bench-gpu
bench-gpu: bench-launch bench-e2e bench-attention bench-peers
bench-launch:
	$(GPU_PYTHON) -m benchmarks.bench_launch --out $(BENCH_DIR)/launch_$(BENCH_DEVICE).json
bench-e2e:
	$(GPU_PYTHON) -m benchmarks.bench_e2e $(E2E_ARGS) --out $(BENCH_DIR)/e2e_$(BENCH_DEVICE).json
bench-attention:
	$(GPU_PYTHON) -m benchmarks.bench_attention --profile $(ATTENTION_ARGS) --out $(BENCH_DIR)/attention_$(BENCH_DEVICE).json
bench-peers:
	$(GPU_PYTHON) -m benchmarks.bench_peers $(PEERS_ARGS) --out $(BENCH_DIR)/peers_$(BENCH_DEVICE).json
