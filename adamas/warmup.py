"""Compile the GPU decode path's Triton kernels before the first request, so that no run pays for it.

Triton compiles a kernel on its first call for each set of compile-time constants. The decode
kernels take lengths and counts as plain arguments, so what remains to compile depends on the
model's heads, its dtype and the context's order of magnitude (the scan's chunk and the split
kernel's block grow with it). `warm(model)` runs each kernel once over zeros for every power of
two of context up to the model's window, then one short decode of each setting (prefill, prompt
encoding, capture and replay of the step) on a 512-slot GraphDecoder.
"""

from __future__ import annotations

import logging
import time

import torch
from transformers import PreTrainedModel

from adamas import kernels, ops
from adamas.config import AdamasConfig
from adamas.loading import execution_device, head_dim, is_dispatched, max_context
from adamas.static import GraphDecoder

logger = logging.getLogger(__name__)

SHORTEST = 1024  # the shortest context warmed: its chunk (and the split's block) is the smallest one
BUDGETS = (128, 1024)  # a budget whose attention merges in its last split, and one merging in a kernel of its own
DECODE_CAPACITY = 512  # slots of the short decode that warms prefill, encoding and the captured step


@torch.no_grad()
def warm(model: PreTrainedModel, config: AdamasConfig | None = None) -> float | None:
    """Compile what `model`'s GPU decode under `config` (default AdamasConfig()) runs; seconds taken, None off CUDA.

    A dispatched model (spread over GPUs by accelerate) is left to compile on first use.
    """
    device = execution_device(model)
    if device.type != "cuda" or is_dispatched(model):
        return None
    config = config or AdamasConfig()
    start = time.perf_counter()
    with torch.cuda.device(device):
        _warm_kernels(model, device)
        _warm_decode(model, config)
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    logger.info("GPU decode kernels compiled in %.1f s", seconds)
    return seconds


def _warm_kernels(model: PreTrainedModel, device: torch.device) -> None:
    """Each step kernel over zeros, once per power-of-two context up to the model's window (at least SHORTEST)."""
    c = model.config
    hq, hkv, d = c.num_attention_heads, c.num_key_value_heads, head_dim(c)
    dtype = next(model.parameters()).dtype
    q = torch.zeros(1, hq, d, dtype=dtype, device=device)
    edges = torch.zeros(hkv, 3, device=device)  # per-KV-head thresholds, as "calibrated" fits them
    length = SHORTEST
    while True:
        k = torch.zeros(1, hkv, length, d, dtype=dtype, device=device)
        codes = torch.zeros(1, hkv, length, d // 4, dtype=torch.uint8, device=device)
        lengths = torch.full((1,), length, device=device)
        for budget in BUDGETS:
            for thresholds in (AdamasConfig().thresholds, "paper"):
                step = AdamasConfig(budget=budget, thresholds=thresholds, dense_layers=())
                per_head = edges if step.thresholds == "calibrated" else None
                ops.decode_attention(q, k, k, codes, step, thresholds=per_head, lengths=lengths, check_inputs=False)
        ops.dense_attention(q, k, k, valid=torch.ones(1, length, dtype=torch.bool, device=device), backend="triton")
        for thresholds in (edges, (-10.0, 0.0, 10.0)):
            kernels.append(k, k, q[:, :hkv, None], q[:, :hkv, None], lengths - 1, codes, thresholds)
        del k, codes
        if length >= max_context(model):
            return
        length = min(2 * length, max_context(model))


def _warm_decode(model: PreTrainedModel, config: AdamasConfig) -> None:
    """A few tokens of each setting on a short prompt: prefill, the prompt's encoding, capture and replay."""
    capacity = min(DECODE_CAPACITY, max_context(model))
    decoder = GraphDecoder(model, config, capacity)
    decoder.prefill(torch.zeros(1, capacity // 2, dtype=torch.long, device=decoder.device))
    for setting in (config, None, config):
        decoder.switch(setting)
        decoder.step()
