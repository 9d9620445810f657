"""Exact softmax attention of one decode query over an index list of K/V rows, split-K.

Each query head's K selected rows are cut into splits; one program per (batch, head,
split) gathers its rows block by block with an online softmax in fp32 and writes a
partial (max, sum, accumulator); the splits are merged by log-sum-exp (adamas.kernels.split_k),
by the head's last split to finish when few programs run (one launch less), else by
split_k's merge kernel. On Hopper it launches with programmatic dependent launch, its launch
overlapping the tail of the selection before it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from adamas.kernels.runtime import pdl, zeroed
from adamas.kernels.split_k import LOG2E, merge_head, merge_splits, rescale, split_partials

MAX_SPLITS = 16
# programs (batch x head x split) up to which the last split merges: a launch saved where few run;
# with many, the counters and the barrier cost more than the merge kernel
FUSED_MERGE_PROGRAMS = 256


# the budget's counts are plain arguments: one compiled kernel serves every budget and context
@triton.jit(do_not_specialize=["K", "CHUNK", "NUM_SPLITS"])
def _sparse_attention_partial_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    idx_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    count_ptr,
    o_ptr,
    K,
    HQ,
    scale_log2,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_ib,
    stride_ih,
    stride_ob,
    stride_oh,
    CHUNK,
    NUM_SPLITS,
    S_PAD: tl.constexpr,
    FUSED_MERGE: tl.constexpr,
    GROUP: tl.constexpr,
    D: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
):
    i_bh, i_s = tl.program_id(0), tl.program_id(1)
    if PDL:  # the selection kernel's indices
        gdc_wait()
        gdc_launch_dependents()
    i_b, i_h = i_bh // HQ, i_bh % HQ
    i_hkv = i_h // GROUP
    o_d = tl.arange(0, D)
    # [D]
    b_q = tl.load(q_ptr + i_b * stride_qb + i_h * stride_qh + o_d).to(tl.float32) * scale_log2
    p_k = k_ptr + i_b * stride_kb + i_hkv * stride_kh
    p_v = v_ptr + i_b * stride_vb + i_hkv * stride_vh
    p_idx = idx_ptr + i_b * stride_ib + i_h * stride_ih
    start = i_s * CHUNK
    end = tl.minimum(start + CHUNK, K)
    b_m = tl.full([1], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([1], dtype=tl.float32)
    b_acc = tl.zeros([D], dtype=tl.float32)
    for off in range(start, end, BLOCK_K):
        o_k = off + tl.arange(0, BLOCK_K)
        m_k = o_k < end
        b_rows = tl.load(p_idx + o_k, mask=m_k, other=-1)
        m_k = b_rows >= 0  # -1 marks a slot with no token (padding)
        # [BLOCK_K, D] the gathered rows
        b_k = tl.load(p_k + b_rows[:, None] * stride_kl + o_d[None, :], mask=m_k[:, None], other=0.0).to(tl.float32)
        b_v = tl.load(p_v + b_rows[:, None] * stride_vl + o_d[None, :], mask=m_k[:, None], other=0.0).to(tl.float32)
        # [BLOCK_K] scores in log2 units
        b_s = tl.sum(b_k * b_q[None, :], axis=1)
        b_s = tl.where(m_k, b_s, float("-inf"))
        b_m_new, b_m_safe, b_alpha = rescale(b_m, tl.max(b_s, axis=0))
        b_p = tl.exp2(b_s - b_m_safe)
        b_l = b_l * b_alpha + tl.sum(b_p, axis=0)
        b_acc = b_acc * b_alpha + tl.sum(b_p[:, None] * b_v, axis=0)
        b_m = b_m_new
    p_o = o_ptr + i_b * stride_ob + i_h * stride_oh + o_d
    if NUM_SPLITS == 1:
        tl.store(p_o, (b_acc / b_l).to(o_ptr.dtype.element_ty))
    else:
        o_part = i_bh * NUM_SPLITS + i_s
        o_one = tl.arange(0, 1)
        tl.store(m_ptr + o_part + o_one, b_m)
        tl.store(l_ptr + o_part + o_one, b_l)
        tl.store(acc_ptr + o_part * D + o_d, b_acc)
        if FUSED_MERGE:
            # every thread's stores are issued before the count says this split is done
            tl.debug_barrier()
            if tl.atomic_add(count_ptr + i_bh, 1, sem="acq_rel") == NUM_SPLITS - 1:
                tl.store(p_o, merge_head(m_ptr, l_ptr, acc_ptr, i_bh, NUM_SPLITS, S_PAD, D).to(o_ptr.dtype.element_ty))
                tl.store(count_ptr + i_bh, 0)


def _splits(k: int, block_k: int) -> tuple[int, int]:
    """Cut K rows into at most MAX_SPLITS non-empty chunks of whole blocks: (num_splits, chunk)."""
    blocks = triton.cdiv(k, block_k)
    chunk = triton.cdiv(blocks, min(blocks, MAX_SPLITS)) * block_k
    return triton.cdiv(k, chunk), chunk


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    scale: float,
    fused_merge_programs: int = FUSED_MERGE_PROGRAMS,
) -> torch.Tensor:
    """Softmax attention over selected rows: q [B, Hq, d], k/v [B, Hkv, L, d], idx [B, Hq, K] -> [B, Hq, d].

    Accumulates in fp32, returns q's dtype. Last dims must be contiguous; indices must
    lie in [0, L), or be -1 for an empty slot (each row needs one real index); inputs are
    trusted (see adamas.ops). Up to `fused_merge_programs` programs, the last split merges.
    """
    b, hq, d = q.shape
    n_sel = idx.shape[-1]
    block_k = 32
    num_splits, chunk = _splits(n_sel, block_k)
    m_part, l_part, acc_part = split_partials(b * hq * num_splits, d, q.device)
    out = torch.empty(b, hq, d, dtype=q.dtype, device=q.device)
    # each head's count of finished splits, where its last split merges
    counts = zeroed("sparse-attention-count", b * hq, q.device) if b * hq * num_splits <= fused_merge_programs else None
    enabled = pdl(_sparse_attention_partial_kernel, q.device)
    _sparse_attention_partial_kernel[(b * hq, num_splits)](
        q_ptr=q,
        k_ptr=k,
        v_ptr=v,
        idx_ptr=idx,
        m_ptr=m_part,
        l_ptr=l_part,
        acc_ptr=acc_part,
        count_ptr=counts,
        o_ptr=out,
        K=n_sel,
        HQ=hq,
        scale_log2=scale * LOG2E,
        stride_qb=q.stride(0),
        stride_qh=q.stride(1),
        stride_kb=k.stride(0),
        stride_kh=k.stride(1),
        stride_kl=k.stride(2),
        stride_vb=v.stride(0),
        stride_vh=v.stride(1),
        stride_vl=v.stride(2),
        stride_ib=idx.stride(0),
        stride_ih=idx.stride(1),
        stride_ob=out.stride(0),
        stride_oh=out.stride(1),
        CHUNK=chunk,
        NUM_SPLITS=num_splits,
        S_PAD=MAX_SPLITS,
        FUSED_MERGE=counts is not None,
        GROUP=hq // k.shape[1],
        D=d,
        BLOCK_K=block_k,
        PDL=enabled,
        launch_pdl=enabled,
    )
    if num_splits > 1 and counts is None:
        merge_splits(out, m_part, l_part, acc_part, num_splits, MAX_SPLITS)
    return out
