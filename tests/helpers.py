"""Shared test vocabulary: the device, shape cases, per-dtype tolerances and checks."""

from __future__ import annotations

import zlib

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]

# relative-to-max-magnitude tolerance of each dtype's output rounding
TOL = {torch.float64: 1e-12, torch.float32: 5e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

# (B, Hq, Hkv, L, d): L = 1, L off every block size, GQA ratios 1, 3, 4, 8, batch 1 and 3
SHAPES = [
    (1, 1, 1, 1, 64),
    (3, 3, 1, 67, 64),
    (1, 4, 1, 130, 128),
    (3, 8, 1, 33, 128),
    (1, 8, 8, 97, 64),
    (3, 4, 4, 1, 128),
    (1, 8, 2, 200, 64),
]
if CUDA:  # the GPU runs the same cases plus real lengths
    SHAPES += [(1, 32, 8, 32_771, 128), (3, 28, 4, 8_191, 128), (2, 9, 3, 4_099, 64)]


def shape_id(shape: tuple[int, ...]) -> str:
    b, hq, hkv, length, d = shape
    return f"B{b}-Hq{hq}-Hkv{hkv}-L{length}-d{d}"


shapes = pytest.mark.parametrize("shape", SHAPES, ids=[shape_id(s) for s in SHAPES])
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)


def seeded(*parts: object) -> torch.Generator:
    """A generator seeded from the test's parameters, so each case draws its own fresh inputs."""
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, parts)).encode()))


def randn(*shape: int, gen: torch.Generator, dtype=torch.float32, std: float = 1.0) -> torch.Tensor:
    """Normal samples drawn on the CPU (reproducible) and moved to DEVICE."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype=dtype, device=DEVICE)


def random_codes(*shape: int, gen: torch.Generator) -> torch.Tensor:
    """Random packed code bytes (every byte value is a valid group of four 2-bit codes)."""
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(DEVICE)


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """|actual - expected| <= TOL[dtype] * max(|expected|, 1) everywhere, printing the error otherwise."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.double().cpu(), expected.double().cpu()
    assert not a.isnan().any(), f"{name}: {int(a.isnan().sum())} NaN (unwritten?) outputs"
    err = (a - e).abs().max().item()
    bound = TOL[dtype] * max(e.abs().max().item(), 1.0)
    assert err <= bound, f"{name} ({dtype}): max abs error {err:.3e} > {bound:.3e}"


def assert_valid_selection(idx: torch.Tensor, dist: torch.Tensor, budget: int) -> None:
    """idx holds min(budget, L) distinct indices per row whose distances are a smallest set (any tie-break)."""
    length = dist.shape[-1]
    k = min(budget, length)
    assert idx.dtype == torch.int64 and idx.shape == (*dist.shape[:-1], k), (idx.dtype, tuple(idx.shape))
    idx, dist = idx.cpu(), dist.cpu().double()
    assert int(idx.min()) >= 0 and int(idx.max()) < length, "index out of range"
    assert (idx.sort(dim=-1).values.diff(dim=-1) > 0).all(), "an index repeats"
    kth = dist.sort(dim=-1).values[..., k - 1]  # [B, Hq] the k-th smallest distance
    chosen = dist.gather(-1, idx)
    assert (chosen <= kth[..., None]).all(), "a selected distance is larger than the k-th smallest"


def assert_codes_follow_keys(layer) -> None:
    """A cache layer's codes are the reference's codes of its written keys, under its thresholds."""
    from adamas import reference

    written = layer.get_seq_length()
    codes, keys = layer.codes[:, :, :written].cpu(), layer.keys[:, :, :written].cpu()
    thresholds = layer.thresholds.cpu() if isinstance(layer.thresholds, torch.Tensor) else layer.thresholds
    expected = reference.encode(keys, thresholds)
    assert torch.equal(codes, expected), f"{int((codes != expected).sum())} code bytes differ from their keys' codes"
