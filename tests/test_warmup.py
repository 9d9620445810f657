"""adamas.warmup: the GPU decode's kernels compiled at load, so that a first request compiles nothing."""

import importlib

import pytest
import torch
from helpers import CUDA
from tiny_models import prompt_batch, tiny_model

import adamas
from adamas import warmup
from adamas.kernels import dense_decode, scan_select, sparse_decode, split_k
from adamas.static import GraphDecoder

STEP_KERNELS = [
    importlib.import_module("adamas.kernels.append")._append_kernel,  # the package's `append` is the function
    scan_select._scan_kernel,
    scan_select._split_kernel,
    sparse_decode._sparse_attention_partial_kernel,
    dense_decode._dense_attention_partial_kernel,
    split_k._merge_splits_kernel,
]


def compiled() -> int:
    """Compiled variants of the decode step's kernels, over every device."""
    return sum(len(caches[0]) for kernel in STEP_KERNELS for caches in kernel.device_caches.values())


def test_warm_is_a_no_op_off_the_gpu():
    if CUDA:
        pytest.skip("a CPU model is what this checks")
    assert warmup.warm(tiny_model("llama")) is None


@pytest.mark.skipif(not CUDA, reason="Triton compiles on a GPU")
@pytest.mark.parametrize("capacity", [300, 509], ids=["300-slots", "509-slots"])
def test_after_warm_a_decode_at_another_context_compiles_nothing(capacity):
    model = tiny_model("llama", torch.bfloat16)
    assert warmup.warm(model) > 0
    before = compiled()
    ids = prompt_batch(batch=1, length=capacity // 2)[0]
    decoder = GraphDecoder(model, adamas.AdamasConfig(budget=8), capacity)
    decoder.prefill(ids)
    for setting in (None, decoder.adamas_config):
        decoder.switch(setting)
        for _ in range(3):
            decoder.step()
    assert compiled() == before, "the first decode after warm() compiled a kernel"
