"""L1 distance between 2-bit query and key codes, computed on the packed words.

One program takes a block of BLOCK_L tokens of one KV head and scores them for every
query head of that head's GQA group, so each key word is read from memory once. A code
c in 0..3 has the thermometer bits (c > 0, c > 1, c > 2), and |a - b| is the number of
those bits in which a and b differ: XOR and popcount score 16 dims per 32-bit word.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adamas.kernels.bits import popcount, thermometer, words
from adamas.kernels.runtime import interpreted

BLOCK_L = 128  # tokens per program


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
    NW: tl.constexpr,
    BLOCK_L: tl.constexpr,
    HW_POPC: tl.constexpr,
):
    i_l, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hkv = i_bh // HKV, i_bh % HKV
    o_g = tl.arange(0, G_PAD)
    m_g = o_g < GROUP
    o_h = i_hkv * GROUP + o_g
    o_w = tl.arange(0, NW)
    o_l = i_l * BLOCK_L + tl.arange(0, BLOCK_L)
    m_l = o_l < L
    # [G_PAD, NW] the group's query codes, 16 per 32-bit word
    p_q = q_ptr + i_b * stride_qb + o_h[:, None] * stride_qh + o_w[None, :]
    b_q01, b_q2 = thermometer(tl.load(p_q, mask=m_g[:, None], other=0).to(tl.uint32, bitcast=True))
    # [BLOCK_L, NW] this block's key codes, read once for the whole group
    p_k = k_ptr + i_b * stride_kb + i_hkv * stride_kh + o_l[:, None] * stride_kl + o_w[None, :]
    b_k01, b_k2 = thermometer(tl.load(p_k, mask=m_l[:, None], other=0).to(tl.uint32, bitcast=True))
    # |a - b| = number of thermometer bits that differ; [G_PAD, BLOCK_L, NW] -> [G_PAD, BLOCK_L]
    b_diff = popcount(b_q01[:, None, :] ^ b_k01[None, :, :], HW_POPC)
    b_diff += popcount(b_q2[:, None, :] ^ b_k2[None, :, :], HW_POPC)
    b_dist = tl.sum(b_diff, axis=2)
    p_o = o_ptr + i_b * stride_ob + o_h[:, None] * stride_oh + o_l[None, :]
    tl.store(p_o, b_dist, mask=m_g[:, None] & m_l[None, :])


def manhattan(q_codes: torch.Tensor, k_codes: torch.Tensor) -> torch.Tensor:
    """L1 distances of 2-bit codes: q_codes [B, Hq, d // 4], k_codes [B, Hkv, L, d // 4] uint8 -> int32 [B, Hq, L].

    Query head h reads KV head h // (Hq // Hkv). The last dims must be contiguous;
    inputs are trusted (see adamas.ops).
    """
    b, hq, _ = q_codes.shape
    _, hkv, length, _ = k_codes.shape
    q_words, k_words = words(q_codes), words(k_codes)
    group = hq // hkv
    out = torch.empty(b, hq, length, dtype=torch.int32, device=q_codes.device)
    grid = (triton.cdiv(length, BLOCK_L), b * hkv)
    _manhattan_kernel[grid](
        q_words,
        k_words,
        out,
        length,
        hkv,
        q_words.stride(0),
        q_words.stride(1),
        k_words.stride(0),
        k_words.stride(1),
        k_words.stride(2),
        out.stride(0),
        out.stride(1),
        GROUP=group,
        G_PAD=triton.next_power_of_2(group),
        NW=q_words.shape[-1],
        BLOCK_L=BLOCK_L,
        HW_POPC=not interpreted(_manhattan_kernel),
    )
    return out
