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
The decode step itself runs adamas.kernels.scan_select, which computes the distances and a
coarse pass 1 in one kernel and shares pass 2 (and `_bin`) with this module.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 2048  # tokens per program in passes 1 and 3
GROUP = 8  # chunk histograms the threshold kernel loads at once


@triton.jit
def _bin(b_d, NBINS: tl.constexpr, SHIFT: tl.constexpr):
    """Bin of each distance v: (max(v, -1) + 1) >> SHIFT; NBINS - 1 from ((NBINS - 1) << SHIFT) - 1 on (EXCLUDED)."""
    return tl.where(b_d >= ((NBINS - 1) << SHIFT) - 1, NBINS - 1, (tl.maximum(b_d, -1) + 1) >> SHIFT)


@triton.jit
def _chunk_histogram_kernel(
    d_ptr, h_ptr, L, H, N_CHUNKS, stride_db, stride_dh, NBINS: tl.constexpr, CHUNK: tl.constexpr
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_l = i_c * CHUNK + tl.arange(0, CHUNK)
    m_l = o_l < L
    b_d = tl.load(d_ptr + i_b * stride_db + i_h * stride_dh + o_l, mask=m_l, other=2147483647)  # [CHUNK]
    b_hist = tl.histogram(_bin(b_d, NBINS, 0), NBINS)  # [NBINS]; lanes past L went to the last bin
    o_bin = tl.arange(0, NBINS)
    b_hist -= tl.where(o_bin == NBINS - 1, CHUNK - tl.sum(m_l.to(tl.int32), 0), 0)
    tl.store(h_ptr + (i_bh * N_CHUNKS + i_c) * NBINS + o_bin, b_hist)


@triton.jit
def _threshold_kernel(h_ptr, base_ptr, row_ptr, K, N_CHUNKS, NBINS: tl.constexpr, GROUP: tl.constexpr):
    i_bh = tl.program_id(0)
    o_bin = tl.arange(0, NBINS)
    o_g = tl.arange(0, GROUP)
    p_h = h_ptr + i_bh * N_CHUNKS * NBINS
    # [GROUP, NBINS] tiles of GROUP chunks' histograms at a time: few, wide loads
    b_total = tl.zeros([NBINS], dtype=tl.int32)
    for c in range(0, N_CHUNKS, GROUP):
        m_c = (c + o_g) < N_CHUNKS
        b_tile = tl.load(p_h + (c + o_g)[:, None] * NBINS + o_bin[None, :], mask=m_c[:, None], other=0)
        b_total += tl.sum(b_tile, 0)
    t = tl.min(tl.where(tl.cumsum(b_total, 0) >= K, o_bin, NBINS), 0)
    below = tl.sum(tl.where(o_bin < t, b_total, 0), 0)
    # where each chunk's picks start: indices below t from 0, ties at t from `below`
    n_below = tl.full([], 0, tl.int32)
    n_tied = tl.full([], 0, tl.int32)
    for c in range(0, N_CHUNKS, GROUP):
        m_c = (c + o_g) < N_CHUNKS
        b_tile = tl.load(p_h + (c + o_g)[:, None] * NBINS + o_bin[None, :], mask=m_c[:, None], other=0)
        b_below = tl.sum(tl.where(o_bin[None, :] < t, b_tile, 0), 1)  # [GROUP]
        b_tied = tl.sum(tl.where(o_bin[None, :] == t, b_tile, 0), 1)
        p_base = base_ptr + (i_bh * N_CHUNKS + c + o_g) * 2
        tl.store(p_base, n_below + tl.cumsum(b_below, 0) - b_below, mask=m_c)
        tl.store(p_base + 1, n_tied + tl.cumsum(b_tied, 0) - b_tied, mask=m_c)
        n_below += tl.sum(b_below, 0)
        n_tied += tl.sum(b_tied, 0)
    tl.store(row_ptr + i_bh * 4, t)
    tl.store(row_ptr + i_bh * 4 + 1, K - below)  # ties to take
    tl.store(row_ptr + i_bh * 4 + 2, below)
    tl.store(row_ptr + i_bh * 4 + 3, n_tied)


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
    b_bin = tl.where(
        m_l, _bin(tl.load(d_ptr + i_b * stride_db + i_h * stride_dh + o_l, mask=m_l, other=0), NBINS, 0), NBINS
    )
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
    _threshold_kernel[(b * h,)](hist, bases, rows, k, n_chunks, NBINS=nbins, GROUP=group, num_warps=8)
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
