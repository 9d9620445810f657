"""Histograms of small integer distances, shared by the two selections that find the k-th smallest without a sort.

A distance v (0 .. 3d between d-dim 2-bit codes, -1 for a forced token, EXCLUDED or more for padding)
falls in bin (max(v, -1) + 1) >> SHIFT, the excluded ones in the last bin. Each row (batch, query head)
is counted in chunks; `threshold_row` sums a row's chunk histograms, finds the bin of its k-th
smallest distance and where each chunk's picks go. histogram_select runs it on exact histograms
(SHIFT 0) in a kernel of its own, scan_select on coarse ones inside its scan.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def distance_bin(b_d, NBINS: tl.constexpr, SHIFT: tl.constexpr):
    """Bin of each distance v: (max(v, -1) + 1) >> SHIFT; NBINS - 1 from ((NBINS - 1) << SHIFT) - 1 on (EXCLUDED)."""
    return tl.where(b_d >= ((NBINS - 1) << SHIFT) - 1, NBINS - 1, (tl.maximum(b_d, -1) + 1) >> SHIFT)


@triton.jit
def threshold_row(h_ptr, base_ptr, row_ptr, i_bh, K, N_CHUNKS, NBINS: tl.constexpr, GROUP: tl.constexpr):
    """Row i_bh's bin t of the K-th smallest distance, then each chunk's starts for its picks below t and its ties.

    h_ptr: int32 [rows, N_CHUNKS, NBINS] chunk histograms; writes base_ptr int32 [rows, N_CHUNKS, 2] (where the
    chunk's picks below t and its ties at t start) and row_ptr int32 [rows, 4] (t, ties to take, picks below t,
    tokens in bin t). The histograms are read from L2 (.cg): the scan's last program to finish calls this on
    histograms other programs wrote.
    """
    o_bin = tl.arange(0, NBINS)
    o_g = tl.arange(0, GROUP)
    p_h = h_ptr + i_bh * N_CHUNKS * NBINS
    # [GROUP, NBINS] tiles of GROUP chunks' histograms at a time: few, wide loads
    b_total = tl.zeros([NBINS], dtype=tl.int32)
    for c in range(0, N_CHUNKS, GROUP):
        m_c = (c + o_g) < N_CHUNKS
        p_tile = p_h + (c + o_g)[:, None] * NBINS + o_bin[None, :]
        b_total += tl.sum(tl.load(p_tile, mask=m_c[:, None], other=0, cache_modifier=".cg"), 0)
    t = tl.min(tl.where(tl.cumsum(b_total, 0) >= K, o_bin, NBINS), 0)
    below = tl.sum(tl.where(o_bin < t, b_total, 0), 0)
    # where each chunk's picks start: indices below t from 0, ties at t from `below`
    n_below = tl.full([], 0, tl.int32)
    n_tied = tl.full([], 0, tl.int32)
    for c in range(0, N_CHUNKS, GROUP):
        m_c = (c + o_g) < N_CHUNKS
        p_tile = p_h + (c + o_g)[:, None] * NBINS + o_bin[None, :]
        b_tile = tl.load(p_tile, mask=m_c[:, None], other=0, cache_modifier=".cg")
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
def threshold_kernel(h_ptr, base_ptr, row_ptr, K, N_CHUNKS, NBINS: tl.constexpr, GROUP: tl.constexpr):
    """threshold_row of every row, one program a row."""
    threshold_row(h_ptr, base_ptr, row_ptr, tl.program_id(0), K, N_CHUNKS, NBINS, GROUP)
