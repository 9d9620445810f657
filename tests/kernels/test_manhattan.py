"""Triton manhattan against the PyTorch reference: exact integer distances."""

import torch
from helpers import random_codes, seeded, shapes

import adamas
from adamas import reference


@shapes
def test_manhattan_kernel(shape):
    b, hq, hkv, length, d = shape
    gen = seeded("man", shape)
    q_codes, k_codes = random_codes(b, hq, d // 4, gen=gen), random_codes(b, hkv, length, d // 4, gen=gen)
    dist = adamas.manhattan(q_codes, k_codes, backend="triton")
    assert dist.dtype == torch.int32
    assert torch.equal(dist, reference.manhattan(q_codes, k_codes))
    assert int(dist.min()) >= 0 and int(dist.max()) <= 3 * d


def test_manhattan_kernel_reads_a_cache_slice():
    gen = seeded("slice")
    cache = random_codes(2, 2, 300, 32, gen=gen)
    k_codes = cache[:, :, :129]  # the filled part of a preallocated code cache
    q_codes = random_codes(2, 6, 32, gen=gen)
    assert torch.equal(adamas.manhattan(q_codes, k_codes, backend="triton"), reference.manhattan(q_codes, k_codes))
