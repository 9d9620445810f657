"""Split-K decode attention's shared pieces: a split's online softmax, its partials, and their merge.

sparse_decode (over each head's selected rows) and dense_decode (over every valid key) cut a head's
keys into splits. Each split keeps, in log2 units (scores times scale * LOG2E, so that exp2 serves),
a running max, a running sum and an fp32 accumulator: `rescale` updates them block by block. It
writes them as partials, row (b * Hq + h) * num_splits + split, and `merge_splits` (or `merge_head`,
inside a kernel) joins a head's splits by log-sum-exp.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def rescale(b_m, b_m_block):
    """The running max after a block whose own max is b_m_block: (new max, max to subtract, factor for the sums).

    The max to subtract is 0 while every score seen is -inf (a block of empty or masked slots), so
    that no NaN appears; the factor rescales what was summed under the old max.
    """
    b_m_new = tl.maximum(b_m, b_m_block)
    b_m_safe = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
    return b_m_new, b_m_safe, tl.exp2(b_m - b_m_safe)


@triton.jit
def merge_head(m_ptr, l_ptr, acc_ptr, i_bh, NUM_SPLITS, S_PAD: tl.constexpr, D: tl.constexpr):
    """One head's output [D] from its splits' partials (rows i_bh * NUM_SPLITS + split), joined by log-sum-exp."""
    o_s = tl.arange(0, S_PAD)
    m_s = o_s < NUM_SPLITS
    o_d = tl.arange(0, D)
    p_part = i_bh * NUM_SPLITS + o_s
    # [S_PAD] written by other programs: read from L2, past this SM's cache
    b_m = tl.load(m_ptr + p_part, mask=m_s, other=float("-inf"), cache_modifier=".cg")
    b_l = tl.load(l_ptr + p_part, mask=m_s, other=0.0, cache_modifier=".cg")
    # [S_PAD, D]
    b_acc = tl.load(acc_ptr + p_part[:, None] * D + o_d[None, :], mask=m_s[:, None], other=0.0, cache_modifier=".cg")
    b_w = tl.where(m_s, tl.exp2(b_m - tl.max(b_m, axis=0)), 0.0)
    return tl.sum(b_w[:, None] * b_acc, axis=0) / tl.sum(b_w * b_l, axis=0)


@triton.jit(do_not_specialize=["NUM_SPLITS"])
def _merge_splits_kernel(
    m_ptr,
    l_ptr,
    acc_ptr,
    o_ptr,
    HQ,
    stride_ob,
    stride_oh,
    NUM_SPLITS,
    S_PAD: tl.constexpr,
    D: tl.constexpr,
):
    i_bh = tl.program_id(0)
    i_b, i_h = i_bh // HQ, i_bh % HQ
    b_o = merge_head(m_ptr, l_ptr, acc_ptr, i_bh, NUM_SPLITS, S_PAD, D)
    tl.store(o_ptr + i_b * stride_ob + i_h * stride_oh + tl.arange(0, D), b_o.to(o_ptr.dtype.element_ty))


def split_partials(rows: int, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empty fp32 partials of `rows` = B * Hq * num_splits split softmaxes: max [rows], sum [rows], acc [rows, d]."""
    m_part = torch.empty(rows, dtype=torch.float32, device=device)
    return m_part, torch.empty_like(m_part), torch.empty(rows, d, dtype=torch.float32, device=device)


def merge_splits(
    out: torch.Tensor,
    m_part: torch.Tensor,
    l_part: torch.Tensor,
    acc_part: torch.Tensor,
    num_splits: int,
    max_splits: int | None = None,
) -> torch.Tensor:
    """Join each (batch, head)'s split partials by log-sum-exp into out [B, Hq, d] (its dtype); return out.

    `max_splits` (a power of two, at least num_splits) pads the splits read: one compiled merge for every count.
    """
    b, hq, d = out.shape
    _merge_splits_kernel[(b * hq,)](
        m_part,
        l_part,
        acc_part,
        out,
        hq,
        out.stride(0),
        out.stride(1),
        NUM_SPLITS=num_splits,
        S_PAD=max_splits or triton.next_power_of_2(num_splits),
        D=d,
    )
    return out
