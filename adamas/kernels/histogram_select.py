"""Top-k selection of the smallest distances, without a sort: histograms find the k-th distance.

Manhattan distances of d-dim 2-bit codes are small integers, 0 .. 3d, plus -1 for forced
tokens and EXCLUDED for padding, so each fits one of 3d + 3 bins. Three kernels, each row
(batch, query head) split into chunks of CHUNK tokens so that every SM has work at batch 1:
1. each chunk counts its distances per bin;
2. per row, the summed histogram gives the bin t of the k-th smallest distance and how many
   of t's members to take; the chunks' counts below t and at t, prefix-summed, give each
   chunk where its picks go;
3. each chunk writes its indices below t, then its first ties at t while the row needs them.
Deterministic: the indices below t come in token order, then the earliest ties.
int32 distances take this path; other dtypes (float scores) go to torch.topk.
Pass 2 and the bins are adamas.kernels.histogram's, which the decode step's own selection
(adamas.kernels.scan_select: the distances and a coarse pass 1 in one kernel) runs too.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adamas.kernels.histogram import distance_bin, threshold_kernel

CHUNK = 2048  # tokens per program in passes 1 and 3
GROUP = 8  # chunk histograms threshold_kernel loads at once


@triton.jit
def _chunk_histogram_kernel(
    d_ptr, h_ptr, L, H, N_CHUNKS, stride_db, stride_dh, NBINS: tl.constexpr, CHUNK: tl.constexpr
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_l = i_c * CHUNK + tl.arange(0, CHUNK)
    m_l = o_l < L
    b_d = tl.load(d_ptr + i_b * stride_db + i_h * stride_dh + o_l, mask=m_l, other=2147483647)  # [CHUNK]
    b_hist = tl.histogram(distance_bin(b_d, NBINS, 0), NBINS)  # [NBINS]; lanes past L went to the last bin
    o_bin = tl.arange(0, NBINS)
    b_hist -= tl.where(o_bin == NBINS - 1, CHUNK - tl.sum(m_l.to(tl.int32), 0), 0)
    tl.store(h_ptr + (i_bh * N_CHUNKS + i_c) * NBINS + o_bin, b_hist)


@triton.jit
def _write_kernel(
    d_ptr,
    base_ptr,
    row_ptr,
    o_ptr,
    L,
    H,
    N_CHUNKS,
    stride_db,
    stride_dh,
    stride_ob,
    stride_oh,
    NBINS: tl.constexpr,
    CHUNK: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    t = tl.load(row_ptr + i_bh * 4)
    need = tl.load(row_ptr + i_bh * 4 + 1)
    below = tl.load(row_ptr + i_bh * 4 + 2)
    base_below = tl.load(base_ptr + (i_bh * N_CHUNKS + i_c) * 2)
    base_tied = tl.load(base_ptr + (i_bh * N_CHUNKS + i_c) * 2 + 1)
    o_l = i_c * CHUNK + tl.arange(0, CHUNK)
    m_l = o_l < L
    b_d = tl.load(d_ptr + i_b * stride_db + i_h * stride_dh + o_l, mask=m_l, other=0)  # [CHUNK]
    b_bin = tl.where(m_l, distance_bin(b_d, NBINS, 0), NBINS)
    m_below = b_bin < t
    m_tie = b_bin == t
    rank = base_tied + tl.cumsum(m_tie.to(tl.int32), 0) - 1
    m_tie = m_tie & (rank < need)
    o_out = tl.where(m_below, base_below + tl.cumsum(m_below.to(tl.int32), 0) - 1, below + rank)
    tl.store(o_ptr + i_b * stride_ob + i_h * stride_oh + o_out, o_l.to(tl.int64), mask=m_below | m_tie)


def _histogram_select(dist: torch.Tensor, k: int, max_distance: int) -> torch.Tensor:
    b, h, length = dist.shape
    nbins = triton.next_power_of_2(max_distance + 3)
    chunk = min(CHUNK, triton.next_power_of_2(length))
    n_chunks = triton.cdiv(length, chunk)
    hist = torch.empty(b * h, n_chunks, nbins, dtype=torch.int32, device=dist.device)
    bases = torch.empty(b * h, n_chunks, 2, dtype=torch.int32, device=dist.device)  # (below, tied) starts
    rows = torch.empty(b * h, 4, dtype=torch.int32, device=dist.device)  # (t, ties to take, below, in bin t)
    out = torch.empty(b, h, k, dtype=torch.int64, device=dist.device)  # [B, Hq, K]
    grid = (n_chunks, b * h)
    strides = (dist.stride(0), dist.stride(1))
    _chunk_histogram_kernel[grid](dist, hist, length, h, n_chunks, *strides, NBINS=nbins, CHUNK=chunk)
    group = min(GROUP, triton.next_power_of_2(n_chunks))
    threshold_kernel[(b * h,)](hist, bases, rows, k, n_chunks, NBINS=nbins, GROUP=group, num_warps=8)
    _write_kernel[grid](
        dist, bases, rows, out, length, h, n_chunks, *strides, out.stride(0), out.stride(1), NBINS=nbins, CHUNK=chunk
    )
    return out


def select(dist: torch.Tensor, budget: int, max_distance: int | None = None) -> torch.Tensor:
    """Indices of the min(budget, L) smallest distances: dist [B, Hq, L] -> int64 [B, Hq, K].

    int32 dist: the histogram kernels, deterministic (the indices below the k-th distance
    in token order, then the earliest of its ties); `max_distance` bounds the ordinary distances (3·d for
    d-dim codes; anything larger sorts last, as EXCLUDED does) and is read off `dist` (a
    host sync) when not given. Other dtypes: torch.topk, unsorted.
    """
    k = min(budget, dist.shape[-1])
    if dist.dtype != torch.int32:
        return torch.topk(dist, k, dim=-1, largest=False, sorted=False).indices
    if dist.stride(-1) != 1:
        dist = dist.contiguous()
    if max_distance is None:
        ordinary = dist[dist < torch.iinfo(torch.int32).max]
        max_distance = max(int(ordinary.max()), 0) if ordinary.numel() else 0
    return _histogram_select(dist, k, max_distance)
