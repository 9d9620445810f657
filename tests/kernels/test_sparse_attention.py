"""Triton split-K sparse attention against the PyTorch reference."""

import pytest
import torch
from helpers import DEVICE, assert_close, dtypes, randn, seeded, shapes

import adamas
from adamas import kernels, reference


def random_indices(b: int, hq: int, length: int, n_sel: int, gen: torch.Generator) -> torch.Tensor:
    """Distinct random rows per (batch, head): int64 [B, Hq, n_sel]."""
    rows = [torch.randperm(length, generator=gen)[:n_sel] for _ in range(b * hq)]
    return torch.stack(rows).view(b, hq, n_sel).to(DEVICE)


@shapes
@dtypes
@pytest.mark.parametrize("budget", [1, 40, 4096])
def test_sparse_attention_kernel(shape, dtype, budget):
    b, hq, hkv, length, d = shape
    gen = seeded("attn", shape, dtype, budget)
    q, k, v = (randn(*s, gen=gen, dtype=dtype) for s in [(b, hq, d), (b, hkv, length, d), (b, hkv, length, d)])
    idx = random_indices(b, hq, length, min(budget, length), gen)
    out = adamas.sparse_attention(q, k, v, idx, backend="triton")
    assert out.dtype == dtype
    assert_close("sparse_attention", out, reference.sparse_attention(q, k, v, idx, d**-0.5), dtype)


def test_sparse_attention_kernel_int32_indices_custom_scale_and_cache_slice():
    gen = seeded("slice")
    k_cache, v_cache = randn(2, 2, 400, 64, gen=gen), randn(2, 2, 400, 64, gen=gen)
    k, v = k_cache[:, :, :250], v_cache[:, :, :250]
    q = randn(2, 4, 64, gen=gen)
    idx = random_indices(2, 4, 250, 97, gen).to(torch.int32)
    out = adamas.sparse_attention(q, k, v, idx, scale=0.05, backend="triton")
    assert_close("sparse_attention", out, reference.sparse_attention(q, k, v, idx, 0.05), torch.float32)


@dtypes
def test_sparse_attention_kernel_skips_empty_slots(dtype):
    gen = seeded("empty", dtype)
    q, k, v = randn(2, 4, 64, gen=gen, dtype=dtype), randn(2, 2, 300, 64, gen=gen, dtype=dtype), None
    v = randn(2, 2, 300, 64, gen=gen, dtype=dtype)
    idx = random_indices(2, 4, 300, 200, gen)
    idx[0, 0, :150] = -1  # whole splits with nothing in them
    idx[1, 3, 1:] = -1  # a single real row
    out = adamas.sparse_attention(q, k, v, idx, backend="triton")
    assert_close("sparse_attention", out, reference.sparse_attention(q, k, v, idx, 0.125), dtype)


@pytest.mark.parametrize("fused_merge_programs", [0, 10**6], ids=["merge-kernel", "last-split-merges"])
@dtypes
def test_sparse_attention_kernel_merges_splits_either_way(fused_merge_programs, dtype):
    """The splits' partials joined by a kernel of their own or by each head's last split: the same output, twice."""
    b, hq, hkv, length, d = 2, 6, 2, 500, 64
    gen = seeded("attn-merge", fused_merge_programs, dtype)
    q, k, v = (randn(*s, gen=gen, dtype=dtype) for s in [(b, hq, d), (b, hkv, length, d), (b, hkv, length, d)])
    idx = random_indices(b, hq, length, 200, gen)  # several splits per head
    want = reference.sparse_attention(q, k, v, idx, d**-0.5)
    for _ in range(2):  # the second call finds the counters the first left at zero
        out = kernels.sparse_attention(q, k, v, idx, d**-0.5, fused_merge_programs=fused_merge_programs)
        assert_close("sparse_attention", out, want, dtype)
