"""L1 distance between 2-bit query and key codes, read straight from the packed bytes.

One program takes a block of BLOCK_L tokens of one KV head and scores them for every
query head of that head's GQA group, so each key byte is read from memory once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _manhattan_kernel(
    q_ptr,
    k_ptr,
    o_ptr,
    L,
    HKV,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_ob,
    stride_oh,
    GROUP: tl.constexpr,
    G_PAD: tl.constexpr,
    NB: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    i_l, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hkv = i_bh // HKV, i_bh % HKV
    o_g = tl.arange(0, G_PAD)
    m_g = o_g < GROUP
    o_h = i_hkv * GROUP + o_g
    o_nb = tl.arange(0, NB)
    o_l = i_l * BLOCK_L + tl.arange(0, BLOCK_L)
    m_l = o_l < L
    # [G_PAD, NB] the group's query bytes
    p_q = q_ptr + i_b * stride_qb + o_h[:, None] * stride_qh + o_nb[None, :]
    b_q = tl.load(p_q, mask=m_g[:, None], other=0).to(tl.int32)
    # [BLOCK_L, NB] this block's key bytes, read once for the whole group
    p_k = k_ptr + i_b * stride_kb + i_hkv * stride_kh + o_l[:, None] * stride_kl + o_nb[None, :]
    b_k = tl.load(p_k, mask=m_l[:, None], other=0).to(tl.int32)
    # [G_PAD, BLOCK_L]
    b_dist = tl.zeros([G_PAD, BLOCK_L], dtype=tl.int32)
    for shift in tl.static_range(0, 8, 2):
        b_cq = (b_q >> shift) & 3
        b_ck = (b_k >> shift) & 3
        b_dist += tl.sum(tl.abs(b_cq[:, None, :] - b_ck[None, :, :]), axis=2)
    p_o = o_ptr + i_b * stride_ob + o_h[:, None] * stride_oh + o_l[None, :]
    tl.store(p_o, b_dist, mask=m_g[:, None] & m_l[None, :])


def manhattan(q_codes: torch.Tensor, k_codes: torch.Tensor) -> torch.Tensor:
    """L1 distances of 2-bit codes: q_codes [B, Hq, d // 4], k_codes [B, Hkv, L, d // 4] uint8 -> int32 [B, Hq, L].

    Query head h reads KV head h // (Hq // Hkv). The last dims must be contiguous;
    inputs are trusted (see adamas.ops).
    """
    b, hq, nb = q_codes.shape
    _, hkv, length, _ = k_codes.shape
    group = hq // hkv
    out = torch.empty(b, hq, length, dtype=torch.int32, device=q_codes.device)
    block_l = 64
    grid = (triton.cdiv(length, block_l), b * hkv)
    _manhattan_kernel[grid](
        q_codes,
        k_codes,
        out,
        length,
        hkv,
        q_codes.stride(0),
        q_codes.stride(1),
        k_codes.stride(0),
        k_codes.stride(1),
        k_codes.stride(2),
        out.stride(0),
        out.stride(1),
        GROUP=group,
        G_PAD=triton.next_power_of_2(group),
        NB=nb,
        BLOCK_L=block_l,
    )
    return out
