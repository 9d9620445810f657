"""Triton split-K dense decode attention against the PyTorch reference."""

import pytest
import torch
from helpers import DEVICE, assert_close, dtypes, randn, seeded, shapes

import adamas
from adamas import reference
from adamas.kernels import dense_decode


def random_valid(b: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """A padding mask [B, L] with about a third of the tokens left out, one valid token per row at least."""
    valid = torch.rand(b, length, generator=gen) > 0.35
    valid[:, -1] = True
    return valid.to(DEVICE)


@shapes
@dtypes
@pytest.mark.parametrize("masked", [False, True], ids=["all", "masked"])
def test_dense_attention_kernel(shape, dtype, masked):
    b, hq, hkv, length, d = shape
    gen = seeded("dense", shape, dtype, masked)
    q, k, v = (randn(*s, gen=gen, dtype=dtype) for s in [(b, hq, d), (b, hkv, length, d), (b, hkv, length, d)])
    valid = random_valid(b, length, gen) if masked else None
    out = adamas.dense_attention(q, k, v, valid=valid, backend="triton")
    assert out.dtype == dtype
    assert_close("dense_attention", out, reference.dense_attention(q, k, v, d**-0.5, valid), dtype)


@pytest.mark.parametrize("group", [5, 16, 32], ids=lambda g: f"group{g}")
def test_dense_attention_kernel_groups_past_the_padding(group):
    """GQA groups that are not a power of two, or fill (or pass) the 16 rows tl.dot needs."""
    gen = seeded("groups", group)
    q, k, v = randn(2, 2 * group, 64, gen=gen), randn(2, 2, 90, 64, gen=gen), randn(2, 2, 90, 64, gen=gen)
    out = adamas.dense_attention(q, k, v, scale=0.07, backend="triton")
    assert_close("dense_attention", out, reference.dense_attention(q, k, v, 0.07), torch.float32)


@dtypes
def test_dense_attention_kernel_fixed_capacity_cache(dtype, monkeypatch):
    """A cache slice whose written slots are a prefix, over many splits, some holding no valid token."""
    monkeypatch.setattr(dense_decode, "BLOCK_L", 16)  # many splits at a small size
    gen = seeded("capacity", dtype)
    k_cache, v_cache = randn(2, 3, 500, 64, gen=gen, dtype=dtype), randn(2, 3, 500, 64, gen=gen, dtype=dtype)
    k, v = k_cache[:, :, :400], v_cache[:, :, :400]
    q = randn(2, 9, 64, gen=gen, dtype=dtype)
    valid = torch.zeros(2, 400, dtype=torch.bool, device=DEVICE)
    valid[0, :37] = True  # most splits of row 0 hold nothing
    valid[1, :] = True
    valid[1, 200:260] = False
    assert dense_decode._splits(400, 2 * 3, dense_decode._block(64, k.element_size()))[0] > 8
    out = adamas.dense_attention(q, k, v, valid=valid, backend="triton")
    assert_close("dense_attention", out, reference.dense_attention(q, k, v, 0.125, valid), dtype)


def test_dense_attention_single_valid_token_is_its_value():
    gen = seeded("single")
    q, k, v = randn(1, 4, 32, gen=gen), randn(1, 2, 70, 32, gen=gen), randn(1, 2, 70, 32, gen=gen)
    valid = torch.zeros(1, 70, dtype=torch.bool, device=DEVICE)
    valid[0, 41] = True
    out = adamas.dense_attention(q, k, v, valid=valid, backend="triton")
    expected = v[:, [0, 0, 1, 1], 41]  # [B, Hq, d]: all weight on the one token, per KV head
    assert_close("dense_attention", out, expected, torch.float32)


def test_dense_attention_errors():
    gen = seeded("errors")
    q, k, v = randn(2, 4, 64, gen=gen), randn(2, 2, 10, 64, gen=gen), randn(2, 2, 10, 64, gen=gen)
    with pytest.raises(ValueError, match="valid must be bool"):
        adamas.dense_attention(q, k, v, valid=torch.ones(2, 9, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="at least one token in every batch row"):
        adamas.dense_attention(q.cpu(), k.cpu(), v.cpu(), valid=torch.tensor([[True] * 10, [False] * 10]))
    with pytest.raises(ValueError, match="scale must be a positive"):
        adamas.dense_attention(q, k, v, scale=-1.0)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        adamas.dense_attention(q[:, :3], k, v)
