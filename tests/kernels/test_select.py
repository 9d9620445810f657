"""GPU-path selection: any valid set of the smallest distances passes."""

import pytest
import torch
from helpers import DEVICE, assert_valid_selection, seeded

import adamas


@pytest.mark.parametrize("length", [1, 67, 1000])
@pytest.mark.parametrize("budget", [1, 16, 64, 4096])
def test_select_kernel(length, budget):
    gen = seeded("sel", length, budget)
    dist = torch.randint(0, 3 * 128 + 1, (3, 8, length), generator=gen, dtype=torch.int32).to(DEVICE)
    assert_valid_selection(adamas.select(dist, budget, backend="triton"), dist, budget)


def test_select_kernel_with_heavy_ties():
    dist = torch.randint(0, 3, (2, 4, 500), generator=seeded("ties"), dtype=torch.int32).to(DEVICE)
    assert_valid_selection(adamas.select(dist, 100, backend="triton"), dist, 100)
