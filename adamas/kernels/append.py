"""A cache layer's append in one kernel: the new K and V rows written at their slots, and the new keys' codes.

A fixed-capacity cache writes each token's K and V at slots held in a device tensor. Done
with PyTorch, that is one index_copy_ for K, one for V, and on an Adamas layer an encode
kernel plus a third copy for the codes: four launches a layer a step. Here one program per
(batch, head, block of tokens) copies the rows and, where `codes` is given, encodes the keys
as adamas.kernels.hadamard_encode does (Sylvester signs on tensor cores, fp32 sums) and
writes their bytes: one launch, on Hopper overlapping the tail of the kernel before it.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from adamas.kernels.bits import sylvester
from adamas.kernels.runtime import interpreted, pdl

BLOCK_T = 16  # tokens per program: tl.dot's fewest rows


@triton.jit(do_not_specialize=["T"])
def _append_kernel(
    k_ptr,
    v_ptr,
    c_ptr,
    kn_ptr,
    vn_ptr,
    pos_ptr,
    t_ptr,
    t0,
    t1,
    t2,
    inv_sqrt_d,
    T,
    H,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_cb,
    stride_ch,
    stride_cl,
    stride_knb,
    stride_knh,
    stride_knt,
    stride_vnb,
    stride_vnh,
    stride_vnt,
    D: tl.constexpr,
    DV: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ENCODE: tl.constexpr,
    PER_HEAD: tl.constexpr,
    PRECISION: tl.constexpr,
    HW_POPC: tl.constexpr,
    PDL: tl.constexpr,
):
    i_bh, i_t = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    if PDL:  # the new rows come from the kernels before
        gdc_wait()
        gdc_launch_dependents()
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    m_t = o_t < T
    b_pos = tl.load(pos_ptr + o_t, mask=m_t, other=0)  # [BLOCK_T] the slots
    o_d = tl.arange(0, D)
    o_dv = tl.arange(0, DV)
    # [BLOCK_T, D] and [BLOCK_T, DV]
    b_k = tl.load(kn_ptr + i_b * stride_knb + i_h * stride_knh + o_t[:, None] * stride_knt + o_d[None, :],
                  mask=m_t[:, None], other=0.0)  # fmt: skip
    b_v = tl.load(vn_ptr + i_b * stride_vnb + i_h * stride_vnh + o_t[:, None] * stride_vnt + o_dv[None, :],
                  mask=m_t[:, None], other=0.0)  # fmt: skip
    p_k = k_ptr + i_b * stride_kb + i_h * stride_kh + b_pos[:, None] * stride_kl + o_d[None, :]
    tl.store(p_k, b_k.to(k_ptr.dtype.element_ty), mask=m_t[:, None])
    p_v = v_ptr + i_b * stride_vb + i_h * stride_vh + b_pos[:, None] * stride_vl + o_dv[None, :]
    tl.store(p_v, b_v.to(v_ptr.dtype.element_ty), mask=m_t[:, None])
    if ENCODE:
        if PER_HEAD:  # this KV head's edges
            t0 = tl.load(t_ptr + i_h * 3)
            t1 = tl.load(t_ptr + i_h * 3 + 1)
            t2 = tl.load(t_ptr + i_h * 3 + 2)
        b_x = b_k.to(tl.float32)
        p_c = c_ptr + i_b * stride_cb + i_h * stride_ch + b_pos[:, None] * stride_cl
        for j0 in tl.static_range(0, D, BLOCK_D):
            o_j = j0 + tl.arange(0, BLOCK_D)
            b_h = sylvester(o_d[:, None] & o_j[None, :], D.bit_length() - 1, HW_POPC)  # [D, BLOCK_D]
            b_y = tl.dot(b_x, b_h, input_precision=PRECISION) * inv_sqrt_d  # [BLOCK_T, BLOCK_D]
            b_c = (b_y > t0).to(tl.int32) + (b_y > t1).to(tl.int32) + (b_y > t2).to(tl.int32)
            # one byte per 4 dims, dim j at bit 2 * (j % 4)
            b_c = tl.reshape(b_c, [BLOCK_T, BLOCK_D // 4, 4])
            b_byte = tl.sum(b_c << (2 * tl.arange(0, 4))[None, None, :], axis=2)
            o_byte = j0 // 4 + tl.arange(0, BLOCK_D // 4)
            tl.store(p_c + o_byte[None, :], b_byte.to(tl.uint8), mask=m_t[:, None])


def append(
    keys: torch.Tensor,
    values: torch.Tensor,
    new_keys: torch.Tensor,
    new_values: torch.Tensor,
    positions: torch.Tensor,
    codes: torch.Tensor | None = None,
    thresholds: tuple[float, float, float] | torch.Tensor | None = None,
) -> None:
    """Write new_keys/new_values [B, H, T, d] into keys/values [B, H, C, d] at slots `positions` (int64 [T]).

    With `codes` ([B, H, C, d // 4] uint8), also the new keys' 2-bit codes under `thresholds`
    (three floats, or fp32 [H, 3] per head), as adamas.kernels.encode makes them. Last dims must
    be contiguous and slots distinct and inside the buffers; inputs are trusted (a cache's own).
    """
    b, h, t, d = new_keys.shape
    dv = new_values.shape[-1]
    encode = codes is not None
    table = thresholds if encode and isinstance(thresholds, torch.Tensor) else None
    if table is not None:
        table = table.to(device=keys.device, dtype=torch.float32).contiguous()
    edges = (0.0, 0.0, 0.0) if table is not None or not encode else tuple(float(e) for e in thresholds)
    enabled = pdl(_append_kernel, keys.device)
    _append_kernel[(b * h, triton.cdiv(t, BLOCK_T))](
        keys,
        values,
        codes,
        new_keys,
        new_values,
        positions,
        table,
        *edges,
        1.0 / math.sqrt(d),
        t,
        h,
        *keys.stride()[:3],
        *values.stride()[:3],
        *(codes.stride()[:3] if encode else (0, 0, 0)),
        *new_keys.stride()[:3],
        *new_values.stride()[:3],
        D=d,
        DV=dv,
        BLOCK_T=BLOCK_T,
        BLOCK_D=min(d, 64),
        ENCODE=encode,
        PER_HEAD=table is not None,
        # fp16 and bf16 values are exact in tf32, so the dot stays exact there; fp32 needs ieee
        PRECISION="ieee" if new_keys.dtype == torch.float32 else "tf32",
        HW_POPC=not interpreted(_append_kernel),
        PDL=enabled,
        launch_pdl=enabled,
    )
