"""Fused Walsh–Hadamard transform + bucketize + 2-bit pack, one program per block of rows.

The same kernel encodes a chunk of prefill keys ([B, Hkv, L, d]) and one decode token
([B, H, d]): both are seen as rows of length d. With PACK off it stores the transformed
values instead, which is `hadamard` on the GPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from adamas.kernels.bits import sylvester


@triton.jit
def _hadamard_encode_kernel(
    x_ptr,
    o_ptr,
    N,
    stride_xn,
    stride_on,
    t0,
    t1,
    t2,
    t_ptr,
    ROWS_PER_HEAD,
    HEADS,
    inv_sqrt_d,
    PER_HEAD: tl.constexpr,
    D: tl.constexpr,
    LOG2_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PACK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_n = tl.program_id(0)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < N
    o_d = tl.arange(0, D)
    # [BLOCK_N, D]
    b_x = tl.load(x_ptr + o_n[:, None] * stride_xn + o_d[None, :], mask=m_n[:, None], other=0.0).to(tl.float32)
    if PER_HEAD:  # [BLOCK_N, 1] the thresholds of each row's head
        p_t = t_ptr + ((o_n // ROWS_PER_HEAD) % HEADS) * 3
        b_t0 = tl.load(p_t, mask=m_n, other=0.0)[:, None]
        b_t1 = tl.load(p_t + 1, mask=m_n, other=0.0)[:, None]
        b_t2 = tl.load(p_t + 2, mask=m_n, other=0.0)[:, None]
    else:
        b_t0, b_t1, b_t2 = t0, t1, t2
    for j0 in tl.static_range(0, D, BLOCK_D):
        o_j = j0 + tl.arange(0, BLOCK_D)
        # [D, BLOCK_D] Sylvester entries: H[i, j] = (-1) ** popcount(i & j)
        b_h = sylvester(o_d[:, None] & o_j[None, :], LOG2_D)
        # [BLOCK_N, BLOCK_D]; the ±1 products are exact, sums in fp32
        b_y = tl.dot(b_x, b_h, input_precision=PRECISION) * inv_sqrt_d
        if PACK:
            b_c = (b_y > b_t0).to(tl.int32) + (b_y > b_t1).to(tl.int32) + (b_y > b_t2).to(tl.int32)
            # [BLOCK_N, BLOCK_D // 4, 4] -> one byte per 4 dims, dim j at bit 2 * (j % 4)
            b_c = tl.reshape(b_c, [BLOCK_N, BLOCK_D // 4, 4])
            b_shift = 2 * tl.arange(0, 4)
            b_byte = tl.sum(b_c << b_shift[None, None, :], axis=2)
            o_b = j0 // 4 + tl.arange(0, BLOCK_D // 4)
            p_o = o_ptr + o_n[:, None] * stride_on + o_b[None, :]
            tl.store(p_o, b_byte.to(tl.uint8), mask=m_n[:, None])
        else:
            p_o = o_ptr + o_n[:, None] * stride_on + o_j[None, :]
            tl.store(p_o, b_y.to(o_ptr.dtype.element_ty), mask=m_n[:, None])


def _launch(
    x: torch.Tensor, out: torch.Tensor, thresholds: tuple[float, float, float] | torch.Tensor, pack: bool
) -> torch.Tensor:
    d = x.shape[-1]
    rows = x.reshape(-1, d)  # [N, d]; a view whenever the rows are evenly strided
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out_rows = out.view(-1, out.shape[-1])
    n = rows.shape[0]
    block_n = 16 if d >= 256 else 32
    # fp16 and bf16 values are exact in tf32, so the dot stays exact there; fp32 needs ieee
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    grid = (triton.cdiv(n, block_n),)
    table, scalars, rows_per_head, heads = None, thresholds, 1, 1
    if isinstance(thresholds, torch.Tensor):  # [H, 3] for dim 1 of x: [B, H, d] (one row a head) or [B, H, L, d]
        table = thresholds.to(device=x.device, dtype=torch.float32).contiguous()
        scalars, rows_per_head, heads = (0.0, 0.0, 0.0), (x.shape[2] if x.ndim == 4 else 1), table.shape[0]
    _hadamard_encode_kernel[grid](
        rows,
        out_rows,
        n,
        rows.stride(0),
        out_rows.stride(0),
        *scalars,
        table,
        rows_per_head,
        heads,
        1.0 / math.sqrt(d),
        PER_HEAD=table is not None,
        D=d,
        LOG2_D=d.bit_length() - 1,
        BLOCK_N=block_n,
        BLOCK_D=min(d, 64),
        PACK=pack,
        PRECISION=precision,
    )
    return out


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Walsh–Hadamard transform over the last dim: x [..., d] -> [..., d], x's dtype.

    d is a power of two in 16..256; fp32, fp16 or bf16. Inputs are trusted (see adamas.ops).
    """
    return _launch(x, torch.empty_like(x, memory_format=torch.contiguous_format), (0.0, 0.0, 0.0), pack=False)


def encode(x: torch.Tensor, thresholds: tuple[float, float, float] | torch.Tensor) -> torch.Tensor:
    """2-bit codes of hadamard(x): x [..., d] float -> uint8 [..., d // 4].

    Dim j's code (its bucket 0..3 under the three increasing thresholds, as
    torch.bucketize(right=False)) sits in byte j // 4 at bit offset 2 * (j % 4).
    thresholds: three floats for every row, or fp32 [H, 3] per head of x [B, H, d] / [B, H, L, d].
    """
    out = torch.empty(*x.shape[:-1], x.shape[-1] // 4, dtype=torch.uint8, device=x.device)
    return _launch(x, out, thresholds, pack=True)
