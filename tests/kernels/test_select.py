"""GPU-path selection (the histogram kernel for int32, torch.topk otherwise): any smallest set passes."""

import pytest
import torch
from helpers import DEVICE, assert_valid_selection, seeded

import adamas
from adamas.kernels import histogram_select


@pytest.mark.parametrize("length", [1, 67, 1000])
@pytest.mark.parametrize("budget", [1, 16, 64, 4096])
def test_select_kernel(length, budget):
    gen = seeded("sel", length, budget)
    dist = torch.randint(0, 3 * 128 + 1, (3, 8, length), generator=gen, dtype=torch.int32).to(DEVICE)
    assert_valid_selection(adamas.select(dist, budget, backend="triton"), dist, budget)


def test_select_kernel_with_heavy_ties():
    dist = torch.randint(0, 3, (2, 4, 500), generator=seeded("ties"), dtype=torch.int32).to(DEVICE)
    assert_valid_selection(adamas.select(dist, 100, backend="triton"), dist, 100)


@pytest.mark.parametrize("length", [5, 1500, 3000])
def test_select_kernel_puts_forced_first_and_excluded_last(length):
    dist = torch.randint(0, 3 * 64 + 1, (2, 3, length), generator=seeded("forced", length), dtype=torch.int32)
    dist[:, :, :3] = -1
    dist[1, :, length // 2 :] = torch.iinfo(torch.int32).max
    dist = dist.to(DEVICE)
    for budget in (4, length // 2 + 2):
        idx = adamas.select(dist, budget, backend="triton")
        assert_valid_selection(idx, dist, budget)
        assert set(range(3)) <= set(idx[0, 0].tolist()), "a forced token was dropped"


def test_select_kernel_breaks_ties_towards_earlier_tokens_in_token_order():
    dist = torch.zeros(1, 2, 300, dtype=torch.int32, device=DEVICE)
    dist[0, 1, 100:] = 5
    idx = adamas.select(dist, 150, backend="triton")
    assert idx[0, 0].tolist() == list(range(150))
    assert idx[0, 1].tolist() == list(range(150))


def test_select_kernel_takes_float_scores_through_topk():
    dist = torch.rand(2, 3, 200, generator=seeded("float-select")).to(DEVICE)
    assert_valid_selection(adamas.select(dist, 32, backend="triton"), dist, 32)


@pytest.mark.parametrize("length", [64 * 9 + 5, 64 * 16, 1000])
def test_select_kernel_over_many_chunks(length, monkeypatch):
    monkeypatch.setattr(histogram_select, "CHUNK", 64)  # 10-16 chunks
    dist = torch.randint(0, 61, (2, 3, length), generator=seeded("chunks", length), dtype=torch.int32).to(DEVICE)
    idx = adamas.select(dist, 200, backend="triton")
    assert_valid_selection(idx, dist, 200)
    assert torch.equal(dist.gather(-1, idx).sort(-1).values, dist.sort(-1).values[..., :200])
