"""Exact softmax attention of one decode query over every valid cached key: split-K, GQA-grouped.

The dense layers of an Adamas model, and full attention on a fixed-capacity cache, decode
under a mask of the written slots. PyTorch's SDPA takes no flash kernel with a mask, and its
masked path reads a long cache from too few thread blocks to reach the memory's bandwidth
(dense_masked_sdpa_us in benchmarks/results/attention_h200.json). Here the keys are cut into
splits over many programs (flash-decoding): one program per (batch, KV head, split) reads
each K/V tile once for all the query heads of its GQA group, with an online softmax in fp32,
and adamas.kernels.split_k's merge_splits joins them by log-sum-exp.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adamas.kernels.runtime import interpreted
from adamas.kernels.split_k import LOG2E, merge_splits, rescale, split_partials

BLOCK_L = 128  # keys per step of a split at most
TILE_BYTES = 16384  # bytes of one K (or V) tile: a step's K and V, pipelined three deep, fit any recent GPU
MIN_GROUP = 16  # tl.dot needs 16 rows: a group's query heads are padded to that
PROGRAMS = 512  # programs to aim for over (batch, KV head, split): a few per SM
MAX_SPLITS = 64  # splits per row at most: what the merge kernel reads at once


# a context's counts are plain arguments: one compiled kernel serves every context
@triton.jit(do_not_specialize=["L", "stride_valid", "CHUNK", "NUM_SPLITS"])
def _dense_attention_partial_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    valid_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    L,
    HQ,
    HKV,
    scale_log2,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_valid,
    CHUNK,
    NUM_SPLITS,
    GROUP: tl.constexpr,
    G_PAD: tl.constexpr,
    D: tl.constexpr,
    BLOCK_L: tl.constexpr,
    HAS_VALID: tl.constexpr,
    IEEE: tl.constexpr,
):
    i_bh, i_s = tl.program_id(0), tl.program_id(1)
    i_b, i_hkv = i_bh // HKV, i_bh % HKV
    o_g = tl.arange(0, G_PAD)
    m_g = o_g < GROUP
    o_d = tl.arange(0, D)
    o_h = i_hkv * GROUP + o_g  # the group's query heads
    # [G_PAD, D] the group's queries, padding rows zero
    b_q = tl.load(q_ptr + i_b * stride_qb + o_h[:, None] * stride_qh + o_d[None, :], mask=m_g[:, None], other=0.0)
    if IEEE:
        b_q = b_q.to(tl.float32)
    p_k = k_ptr + i_b * stride_kb + i_hkv * stride_kh
    p_v = v_ptr + i_b * stride_vb + i_hkv * stride_vh
    start = i_s * CHUNK
    end = tl.minimum(start + CHUNK, L)
    b_m = tl.full([G_PAD], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([G_PAD], dtype=tl.float32)
    b_acc = tl.zeros([G_PAD, D], dtype=tl.float32)
    for off in range(start, end, BLOCK_L):
        o_l = off + tl.arange(0, BLOCK_L)
        m_l = o_l < end
        if HAS_VALID:  # masked-off rows are never read: unwritten slots cost no bandwidth
            m_l = m_l & (tl.load(valid_ptr + i_b * stride_valid + o_l, mask=m_l, other=0) != 0)
        # [BLOCK_L, D]
        b_k = tl.load(p_k + o_l[:, None] * stride_kl + o_d[None, :], mask=m_l[:, None], other=0.0)
        b_v = tl.load(p_v + o_l[:, None] * stride_vl + o_d[None, :], mask=m_l[:, None], other=0.0)
        # [G_PAD, BLOCK_L] scores in log2 units
        if IEEE:
            b_k, b_v = b_k.to(tl.float32), b_v.to(tl.float32)
            b_s = tl.dot(b_q, tl.trans(b_k), input_precision="ieee")
        else:
            b_s = tl.dot(b_q, tl.trans(b_k))
        b_s = tl.where(m_l[None, :], b_s * scale_log2, float("-inf"))
        b_m_new, b_m_safe, b_alpha = rescale(b_m, tl.max(b_s, axis=1))
        b_p = tl.exp2(b_s - b_m_safe[:, None])
        b_l = b_l * b_alpha + tl.sum(b_p, axis=1)
        # fp32 operands (IEEE) multiply in full precision; fp16/bf16 ones on the tensor cores
        b_pv = tl.dot(b_p.to(b_v.dtype), b_v, input_precision="ieee" if IEEE else None)
        b_acc = b_acc * b_alpha[:, None] + b_pv
        b_m = b_m_new
    # partials laid out as split_k's: row (b * HQ + h) * NUM_SPLITS + split
    o_part = (i_b * HQ + o_h) * NUM_SPLITS + i_s
    tl.store(m_ptr + o_part, b_m, mask=m_g)
    tl.store(l_ptr + o_part, b_l, mask=m_g)
    tl.store(acc_ptr + o_part[:, None] * D + o_d[None, :], b_acc, mask=m_g[:, None])


def _block(d: int, element_size: int) -> int:
    """Keys per step: BLOCK_L at most, fewer for wide rows (a K tile of TILE_BYTES), 16 at least (tl.dot)."""
    return max(MIN_GROUP, min(BLOCK_L, triton.next_power_of_2(TILE_BYTES // (d * element_size))))


def _splits(length: int, groups: int, block: int) -> tuple[int, int]:
    """Cut L keys into whole blocks, about PROGRAMS programs over `groups` = B * Hkv: (num_splits, chunk)."""
    blocks = triton.cdiv(length, block)
    wanted = max(1, min(blocks, MAX_SPLITS, triton.cdiv(PROGRAMS, groups)))
    chunk = triton.cdiv(blocks, wanted) * block
    return triton.cdiv(length, chunk), chunk


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention over every valid key: q [B, Hq, d], k/v [B, Hkv, L, d] -> [B, Hq, d].

    `valid` ([B, L] bool) leaves out masked tokens (each row needs one valid token). Query
    head h reads KV head h // (Hq // Hkv). Accumulates in fp32 (fp32 inputs multiply in
    full precision, fp16/bf16 ones on the tensor cores), returns q's dtype. Last dims must be
    contiguous; inputs are trusted (see adamas.ops).
    """
    b, hq, d = q.shape
    hkv, length = k.shape[1], k.shape[2]
    group = hq // hkv
    block = _block(d, k.element_size())
    num_splits, chunk = _splits(length, b * hkv, block)
    m_part, l_part, acc_part = split_partials(b * hq * num_splits, d, q.device)
    valid_u8 = None if valid is None else valid.contiguous().view(torch.uint8)
    _dense_attention_partial_kernel[(b * hkv, num_splits)](
        q,
        k,
        v,
        valid_u8,
        m_part,
        l_part,
        acc_part,
        length,
        hq,
        hkv,
        scale * LOG2E,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        0 if valid_u8 is None else valid_u8.stride(0),
        chunk,
        num_splits,
        GROUP=group,
        G_PAD=max(MIN_GROUP, triton.next_power_of_2(group)),
        D=d,
        BLOCK_L=block,
        HAS_VALID=valid_u8 is not None,
        # fp32 in full precision; Triton's interpreter has no bf16 matmul, so on the CPU every dtype
        IEEE=q.dtype == torch.float32 or interpreted(_dense_attention_partial_kernel),
    )
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    return merge_splits(out, m_part, l_part, acc_part, num_splits, MAX_SPLITS)
