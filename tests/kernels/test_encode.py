"""Triton hadamard and encode against the PyTorch reference."""

import pytest
import torch
from helpers import DEVICE, TOL, assert_close, dtypes, randn, seeded

import adamas
from adamas import reference

ROWS = [(1, 1), (3, 37), (2, 130)]  # leading dims: one decode token, chunks off every block size


@pytest.mark.parametrize("d", [16, 64, 128, 256])
@pytest.mark.parametrize("rows", ROWS, ids=lambda r: f"rows{r[0]}x{r[1]}")
@dtypes
def test_hadamard_kernel(d, rows, dtype):
    x = randn(*rows, d, gen=seeded("had", d, rows, dtype), dtype=dtype, std=3.0)
    out = adamas.hadamard(x, backend="triton")
    assert out.dtype == dtype
    assert_close("hadamard", out, reference.hadamard(x), dtype)


@pytest.mark.parametrize("d", [16, 64, 128, 256])
@pytest.mark.parametrize("rows", ROWS, ids=lambda r: f"rows{r[0]}x{r[1]}")
@dtypes
@pytest.mark.parametrize("thresholds", [(-10.0, 0.0, 10.0), (-0.7, 0.1, 0.9)], ids=["paper", "narrow"])
def test_encode_kernel(d, rows, dtype, thresholds):
    std = 10.0 if thresholds[0] == -10.0 else 1.0  # spread values over all four buckets
    x = randn(*rows, d, gen=seeded("enc", d, rows, dtype, thresholds), dtype=dtype, std=std)
    codes = adamas.encode(x, thresholds, backend="triton")
    expected = reference.encode(x, thresholds)
    assert codes.dtype == torch.uint8 and codes.shape == expected.shape
    got, want = reference.unpack(codes), reference.unpack(expected)
    # a code may differ only where summation order decides a value sitting on a threshold
    y = reference.hadamard(x.float())
    near = torch.stack([(y - t).abs() <= 4 * TOL[torch.float32] * (1 + abs(t)) for t in thresholds]).any(0)
    assert ((got == want) | near).all(), f"{int(((got != want) & ~near).sum())} codes differ"


def test_encode_kernel_reads_strided_rows():
    gen = seeded("strided")
    cache = randn(2, 3, 50, 64, gen=gen, std=10.0)
    window = cache[:, :, 7:40]  # a slice of a preallocated cache: not contiguous
    assert torch.equal(adamas.encode(window, backend="triton"), reference.encode(window, (-10.0, 0.0, 10.0)))
    assert DEVICE in str(window.device)


@pytest.mark.parametrize("shape", [(2, 3, 64), (2, 3, 37, 64), (1, 4, 1, 128)], ids=["query", "keys", "one-key"])
@dtypes
def test_encode_kernel_per_head_thresholds(shape, dtype):
    gen = seeded("per-head", shape, dtype)
    x = randn(*shape, gen=gen, dtype=dtype, std=2.0)
    edges = torch.sort(torch.randn(shape[1], 3, generator=gen) * 2, dim=1).values.to(DEVICE)  # [H, 3]
    got = reference.unpack(adamas.encode(x, edges, backend="triton"))
    want = reference.unpack(reference.encode(x, edges))
    y = reference.hadamard(x.float())
    spread = edges.view(1, shape[1], *([1] * (x.ndim - 2)), 3)
    near = ((y[..., None] - spread).abs() <= 4 * TOL[torch.float32] * (1 + spread.abs())).any(-1)
    assert ((got == want) | near).all(), f"{int(((got != want) & ~near).sum())} codes differ"
