"""Bit helpers shared by the kernels that score 2-bit codes: popcount, thermometer planes, Sylvester signs."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def popcount(x, HW_POPC: tl.constexpr):
    """Set bits of each uint32: the hardware instruction on GPUs, SWAR in the interpreter."""
    if HW_POPC:
        return libdevice.popc(x.to(tl.int32, bitcast=True))
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24).to(tl.int32)


@triton.jit
def thermometer(w):
    """Split 16 packed 2-bit codes c into bit planes (c > 0 | (c > 1) << 1, c > 2), fields in place."""
    b_hi = (w >> 1) & 0x55555555  # c > 1 moved to the field's low bit
    # low bit: hi | lo = c > 0, high bit: hi = c > 1 already; c > 2 = hi & lo in the low bit
    return w | b_hi, b_hi & w


@triton.jit
def sylvester(b_and, LOG2_N: tl.constexpr, HW_POPC: tl.constexpr = False):
    """Entries of a Sylvester Hadamard matrix from i & j: (-1) ** popcount(i & j) as fp32, for i, j < 2 ** LOG2_N.

    With HW_POPC, the parity is one hardware popcount (where many programs each build the matrix)."""
    if HW_POPC:
        b_par = popcount(b_and.to(tl.uint32), True) & 1
    else:
        b_par = tl.zeros_like(b_and)
        for bit in tl.static_range(LOG2_N):
            b_par = b_par ^ ((b_and >> bit) & 1)
    return (1 - 2 * b_par).to(tl.float32)


def words(codes: torch.Tensor) -> torch.Tensor:
    """Packed code bytes seen as int32 words (16 codes each) without a copy where strides allow."""
    try:
        return codes.view(torch.int32)
    except RuntimeError:
        return codes.contiguous().view(torch.int32)
