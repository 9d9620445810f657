"""The budget keys nearest each query head by code distance: manhattan and select fused, no sort.

The same set as `select(mark_forced(manhattan(...)))` followed by `drop_excluded`, in four
kernels and one pass over the key codes:
1. scan: per chunk of tokens and GQA group, the distances (int16 rows padded to 16 tokens;
   forced tokens -1, excluded ones and the padding EXCLUDED_16) and, per query head, a coarse
   histogram: bin (d + 1) >> SHIFT, few bins, so that counting costs little beside the distance;
2. threshold (adamas.kernels.histogram's, on the coarse histograms): the bin t holding the
   k-th smallest distance, and where each chunk's picks go;
3. split: each chunk writes its tokens below bin t as picks, and its tokens in bin t as
   candidates (token << SHIFT | the distance's low bits) in token order;
4. finish: per row, the candidates' fine histogram gives the exact k-th distance; those below
   it and then the earliest ties complete the row; slots past the valid tokens get -1.
Deterministic: picks below bin t, then candidates below the k-th distance, then the earliest
ties, each group in token order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from adamas.kernels.bits import popcount, thermometer, words
from adamas.kernels.forced import forced_tokens, forced_valid_tokens
from adamas.kernels.histogram import distance_bin, threshold_kernel
from adamas.kernels.runtime import interpreted
from adamas.reference import valid_counts


@dataclass(frozen=True)
class NearestLaunch:
    """How `nearest` cuts its work into programs; the defaults are the GPU's, tests shrink them to cover loops."""

    block_l: int = 256  # tokens per step of the scan
    scan_programs: int = 1024  # scan programs to aim for: long chunks only when there are enough
    max_chunks: int = 64  # chunks per row at most: what the threshold kernel reads at once
    # bins of the scan's histogram: more cost the scan a little, fewer leave more candidates to the finish
    coarse_bins: int = 64
    scan_warps: int = 4
    split_block: int = 2048  # tokens per step of the split kernel
    finish_block: int = 1024  # candidates per step of the finish kernel


EXCLUDED_16 = tl.constexpr(32767)  # an excluded token's int16 distance: past every bin, so it sorts last


@triton.jit
def _scan_kernel(
    q_ptr,
    k_ptr,
    valid_ptr,
    counts_ptr,
    d_ptr,
    h_ptr,
    L,
    HKV,
    N_CHUNKS,
    SINK,
    RECENT,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_vb,
    stride_cb,
    stride_d,
    GROUP: tl.constexpr,
    NP: tl.constexpr,
    NW: tl.constexpr,
    BLOCK_L: tl.constexpr,
    N_STEPS: tl.constexpr,
    NBINS: tl.constexpr,
    SHIFT: tl.constexpr,
    HAS_VALID: tl.constexpr,
    HAS_COUNTS: tl.constexpr,
    HW_POPC: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hkv = i_bh // HKV, i_bh % HKV
    o_j = tl.arange(0, 2)
    # [NP, 2] pair p holds words p and p + NP: each half of a token is one run, read as one vector
    o_w = tl.arange(0, NP)[:, None] + NP * o_j[None, :]
    m_w = (NP * o_j < NW)[None, :]  # [1, 2] only d = 16 (one word) lacks a second half; whole runs keep vectors
    o_bin = tl.arange(0, NBINS)
    p_k = k_ptr + tl.multiple_of(i_b * stride_kb + i_hkv * stride_kh, NW) + o_w[None, :, :]
    start = i_c * N_STEPS * BLOCK_L
    o_l = start + tl.arange(0, BLOCK_L)
    # [BLOCK_L, NP, 2] key words (rows of NW words), the next step's loaded while this one is scored
    b_next = tl.load(p_k + o_l[:, None, None] * NW, mask=(o_l < L)[:, None, None] & m_w[None, :, :], other=0)
    # the group's query planes, made once (per head, [NP, 2] thermometer words and [NP] packed c > 2
    # words), and one histogram per head in the histogram's own layout: a [GROUP, NBINS] tile would
    # cost a layout conversion (shared memory, barriers) every step
    b_q01s = ()
    b_q2s = ()
    b_hists = ()
    for g in tl.static_range(GROUP):
        b_q = tl.load(q_ptr + i_b * stride_qb + (i_hkv * GROUP + g) * stride_qh + o_w, mask=m_w, other=0)
        b_q01, b_q2 = thermometer(b_q.to(tl.uint32, bitcast=True))
        b_q01s += (b_q01,)
        b_q2s += (tl.sum(b_q2 << o_j.to(tl.uint32)[None, :], 1),)
        b_hists += (tl.zeros([NBINS], dtype=tl.int32),)
    if HAS_COUNTS:  # counts run over the rows laid end to end: this row's start and its valid tokens
        before = tl.load(counts_ptr + i_b * stride_cb) - (tl.load(valid_ptr + i_b * stride_vb) != 0).to(tl.int32)
        total = tl.load(counts_ptr + i_b * stride_cb + L - 1) - before
    for i in range(N_STEPS):
        o_l = start + i * BLOCK_L + tl.arange(0, BLOCK_L)
        m_l = o_l < L
        b_k = b_next
        m_next = (o_l + BLOCK_L < L) & (i + 1 < N_STEPS)
        b_next = tl.load(
            p_k + (o_l + BLOCK_L)[:, None, None] * NW, mask=m_next[:, None, None] & m_w[None, :, :], other=0
        )
        b_k01, b_k2 = thermometer(b_k.to(tl.uint32, bitcast=True))
        # the c > 2 planes use every other bit: a pair's two share one word, one popcount
        b_k2 = tl.sum(b_k2 << o_j.to(tl.uint32)[None, None, :], 2)  # [BLOCK_L, NP]
        # [BLOCK_L] padding, and the tokens always taken: given per token, or the first and last ones
        m_excluded = (tl.load(valid_ptr + i_b * stride_vb + o_l, mask=m_l, other=1) == 0) if HAS_VALID else o_l < 0
        if HAS_COUNTS:
            b_upto = tl.load(counts_ptr + i_b * stride_cb + o_l, mask=m_l, other=0) - before
            m_forced = forced_valid_tokens(~m_excluded, b_upto, total, SINK, RECENT)
        else:
            m_forced = forced_tokens(o_l, L, SINK, RECENT)
        b_updated = ()
        for g in tl.static_range(GROUP):
            # a token's three XOR words per pair (two thermometer halves, one c > 2 word) through a
            # carry-save adder: popcount(a) + popcount(b) + popcount(c) = popcount(sum) + 2 popcount(carry),
            # two popcounts instead of three, for two more bitwise ops
            b_a, b_b = tl.split(b_q01s[g][None, :, :] ^ b_k01)
            b_c = b_q2s[g][None, :] ^ b_k2
            b_sum = b_a ^ b_b ^ b_c
            b_carry = (b_a & b_b) | (b_c & (b_a ^ b_b))
            b_diff = tl.sum(popcount(b_sum, HW_POPC) + 2 * popcount(b_carry, HW_POPC), 1)
            b_d = tl.where(m_excluded, EXCLUDED_16, tl.where(m_forced, -1, b_diff))  # [BLOCK_L]
            # the row's padding past L is written too, as excluded: the split kernel reads whole vectors
            b_pad = tl.where(m_l, b_d, EXCLUDED_16).to(tl.int16)
            tl.store(d_ptr + (i_bh * GROUP + g) * stride_d + o_l, b_pad, mask=o_l < stride_d)
            # lanes past L go to bin NBINS - 2, which no distance reaches, and are dropped below
            b_count = tl.histogram(tl.where(m_l, distance_bin(b_d, NBINS, SHIFT), NBINS - 2), NBINS)
            b_updated += (b_hists[g] + b_count,)
        b_hists = b_updated
    for g in tl.static_range(GROUP):
        b_hist = tl.where(o_bin == NBINS - 2, 0, b_hists[g])
        tl.store(h_ptr + ((i_bh * GROUP + g) * N_CHUNKS + i_c) * NBINS + o_bin, b_hist)


@triton.jit
def _split_kernel(
    d_ptr,
    base_ptr,
    row_ptr,
    o_ptr,
    c_ptr,
    L,
    K,
    N_CHUNKS,
    stride_d,
    NBINS: tl.constexpr,
    SHIFT: tl.constexpr,
    BLOCK: tl.constexpr,
    N_STEPS: tl.constexpr,
    VEC: tl.constexpr,
):
    i_c, i_r = tl.program_id(0), tl.program_id(1)
    t = tl.load(row_ptr + i_r * 4)
    n_below = tl.load(base_ptr + (i_r * N_CHUNKS + i_c) * 2)
    n_cand = tl.load(base_ptr + (i_r * N_CHUNKS + i_c) * 2 + 1)
    # bin t holds the distances lo .. hi - 1 (as distance_bin counts them); excluded ties (t = NBINS - 1)
    # need no order, they become -1, so that bin has no candidates
    lo = (t << SHIFT) - 1
    hi = tl.where(t < NBINS - 1, lo + (1 << SHIFT), lo)
    # [BLOCK // VEC, VEC] row r holds tokens r * VEC .. + VEC - 1: one thread's vector, so the ranks
    # are a scan within threads plus a short one across them, and the scattered stores keep the layout
    o_v = VEC * tl.arange(0, BLOCK // VEC)[:, None] + tl.arange(0, VEC)[None, :]
    for i in range(N_STEPS):
        o_l = (i_c * N_STEPS + i) * BLOCK + o_v
        # rows are padded to whole vectors, and the scan wrote the padding as excluded
        b_d = tl.load(d_ptr + i_r * stride_d + o_l, mask=o_l < stride_d, other=EXCLUDED_16).to(tl.int32)
        m_below = b_d < lo
        m_cand = (b_d >= lo) & (b_d < hi)
        # picks counted in the low 16 bits, candidates in the high ones
        b_hit = m_below.to(tl.int32) + (m_cand.to(tl.int32) << 16)
        b_row = tl.sum(b_hit, 1)  # [BLOCK // VEC]
        b_rank = tl.cumsum(b_hit, 1) + (tl.cumsum(b_row, 0) - b_row)[:, None]  # inclusive, in token order
        tl.store(o_ptr + i_r * K + n_below + (b_rank & 0xFFFF) - 1, o_l.to(tl.int64), mask=m_below)
        tl.store(c_ptr + i_r * L + n_cand + (b_rank >> 16) - 1, (o_l << SHIFT) | (b_d - lo), mask=m_cand)
        b_total = tl.sum(b_row, 0)
        n_below += b_total & 0xFFFF
        n_cand += b_total >> 16


@triton.jit
def _finish_kernel(
    row_ptr, c_ptr, o_ptr, L, K, NBINS: tl.constexpr, SHIFT: tl.constexpr, FINE_BINS: tl.constexpr, BLOCK: tl.constexpr
):
    i_r = tl.program_id(0)
    t = tl.load(row_ptr + i_r * 4)
    need = tl.load(row_ptr + i_r * 4 + 1)
    below = tl.load(row_ptr + i_r * 4 + 2)
    n_cand = tl.where(t < NBINS - 1, tl.load(row_ptr + i_r * 4 + 3), 0)
    o_f = tl.arange(0, FINE_BINS)
    p_c = c_ptr + i_r * L
    p_o = o_ptr + i_r * K
    b_hist = tl.zeros([FINE_BINS], dtype=tl.int32)
    for start in range(0, n_cand, BLOCK):
        o_n = start + tl.arange(0, BLOCK)
        m_n = o_n < n_cand
        b_fine = tl.load(p_c + o_n, mask=m_n, other=0) & ((1 << SHIFT) - 1)
        b_hist += tl.histogram(tl.where(m_n, b_fine, 1 << SHIFT), FINE_BINS)
    # the k-th distance's low bits, and how many candidates lie below it
    t_fine = tl.min(tl.where(tl.cumsum(b_hist, 0) >= need, o_f, FINE_BINS), 0)
    below_fine = tl.sum(tl.where(o_f < t_fine, b_hist, 0), 0)
    # the candidates below t_fine, then the earliest ties while the row needs them, in token order
    n_lt = tl.full([], 0, tl.int32)
    n_eq = tl.full([], 0, tl.int32)
    for start in range(0, n_cand, BLOCK):
        o_n = start + tl.arange(0, BLOCK)
        m_n = o_n < n_cand
        b_c = tl.load(p_c + o_n, mask=m_n, other=0)  # [BLOCK]
        m_lt = m_n & ((b_c & ((1 << SHIFT) - 1)) < t_fine)
        m_eq = m_n & ((b_c & ((1 << SHIFT) - 1)) == t_fine)
        b_rank = tl.cumsum(m_lt.to(tl.int32) + (m_eq.to(tl.int32) << 16), 0)
        b_tie = n_eq + (b_rank >> 16) - 1
        b_pos = tl.where(m_lt, below + n_lt + (b_rank & 0xFFFF) - 1, below + below_fine + b_tie)
        m_take = m_lt | (m_eq & (b_tie < need - below_fine))
        tl.store(p_o + b_pos, (b_c >> SHIFT).to(tl.int64), mask=m_take)
        n_lt += tl.sum(m_lt.to(tl.int32), 0)
        n_eq += tl.sum(m_eq.to(tl.int32), 0)
    # slots past the row's valid tokens: fewer of them than K
    for first in range(below + tl.minimum(need, n_cand), K, BLOCK):
        o_k = first + tl.arange(0, BLOCK)
        tl.store(p_o + o_k, tl.full([BLOCK], -1, tl.int64), mask=o_k < K)


class Scan(NamedTuple):
    """The scan's outputs: int16 distances [B, Hq, L], coarse histograms [B * Hq, n_chunks, NBINS] and their layout."""

    dist: torch.Tensor
    hist: torch.Tensor
    chunk: int
    shift: int


def _chunking(length: int, groups: int, nw: int, launch: NearestLaunch) -> tuple[int, int]:
    """(chunk, block) for `groups` = B * Hkv GQA groups of nw-word keys: ~scan_programs programs of whole steps."""
    block = min(launch.block_l * 8 // max(nw, 8), max(16, triton.next_power_of_2(length)))  # d > 128: as many words
    n_chunks = min(launch.max_chunks, triton.cdiv(launch.scan_programs, groups))
    return max(block, triton.next_power_of_2(triton.cdiv(length, n_chunks))), block


def scan_distances(
    q_codes: torch.Tensor,
    k_codes: torch.Tensor,
    sink: int = 0,
    recent: int = 0,
    valid: torch.Tensor | None = None,
    launch: NearestLaunch = NearestLaunch(),
) -> Scan:
    """Pass 1 alone: distances of q_codes [B, Hq, d // 4] to k_codes [B, Hkv, L, d // 4] and their histograms."""
    b, hq, nbytes = q_codes.shape
    _, hkv, length, _ = k_codes.shape
    q_words, k_words = words(q_codes), words(k_codes)
    nw = q_words.shape[-1]
    if k_words.stride(2) != nw or k_words.stride(1) % nw or k_words.stride(0) % nw:  # rows of whole tokens
        k_words = k_words.contiguous()
    max_distance = 3 * 4 * nbytes
    shift = 0
    # bins NBINS - 2 (lanes past L) and NBINS - 1 (excluded) stay free
    while (max_distance + 1) >> shift > launch.coarse_bins - 3:
        shift += 1
    if (length - 1) << shift >= 2**31:
        raise ValueError(f"{length} tokens do not fit the candidates' int32 (token << {shift})")
    chunk, block = _chunking(length, b * hkv, nw, launch)
    n_chunks = triton.cdiv(length, chunk)
    counts = None
    if valid is not None and (sink or recent):
        # sink and recent count valid tokens: the kernel takes reference.forced_mask's count and does its
        # per-row arithmetic itself
        counts = valid_counts(valid)
    valid_u8 = None if valid is None else valid.contiguous().view(torch.uint8)
    # rows padded to 16 tokens: whole 32-byte vectors for the split kernel whatever L is
    dist = torch.empty(b, hq, triton.cdiv(length, 16) * 16, dtype=torch.int16, device=q_codes.device)[..., :length]
    hist = torch.empty(b * hq, n_chunks, launch.coarse_bins, dtype=torch.int32, device=q_codes.device)
    group = hq // hkv
    _scan_kernel[(n_chunks, b * hkv)](
        q_words,
        k_words,
        valid_u8,
        counts,
        dist,
        hist,
        length,
        hkv,
        n_chunks,
        sink,
        recent,
        q_words.stride(0),
        q_words.stride(1),
        k_words.stride(0),
        k_words.stride(1),
        0 if valid_u8 is None else valid_u8.stride(0),
        0 if counts is None else counts.stride(0),
        dist.stride(1),
        GROUP=group,
        NP=triton.cdiv(nw, 2),
        NW=nw,
        BLOCK_L=block,
        N_STEPS=chunk // block,
        NBINS=launch.coarse_bins,
        SHIFT=shift,
        HAS_VALID=valid_u8 is not None,
        HAS_COUNTS=counts is not None,
        HW_POPC=not interpreted(_scan_kernel),
        num_warps=launch.scan_warps,
    )
    return Scan(dist, hist, chunk, shift)


def nearest(
    q_codes: torch.Tensor,
    k_codes: torch.Tensor,
    budget: int,
    sink: int = 0,
    recent: int = 0,
    valid: torch.Tensor | None = None,
    launch: NearestLaunch = NearestLaunch(),
) -> torch.Tensor:
    """The min(budget, L) keys nearest each query head by L1 code distance: int64 [B, Hq, K].

    q_codes [B, Hq, d // 4] uint8, k_codes [B, Hkv, L, d // 4] uint8 (query head h reads KV
    head h // (Hq // Hkv)); the first `sink` and last `recent` tokens are always taken;
    `valid` ([B, L] bool) counts those among valid tokens only and never takes an invalid one:
    its slots are -1 when fewer than K tokens are valid. The same set as adamas.reference's
    mark_forced, select (ties to the earliest tokens) and drop_excluded; the order within a
    row is unspecified. Last dims must be contiguous; inputs are trusted (see adamas.ops).
    """
    b, hq, _ = q_codes.shape
    length = k_codes.shape[2]
    k = min(budget, length)
    s = scan_distances(q_codes, k_codes, sink, recent, valid, launch)
    _, n_chunks, nbins = s.hist.shape
    bases = torch.empty(b * hq, n_chunks, 2, dtype=torch.int32, device=q_codes.device)  # (below, candidate) starts
    rows = torch.empty(b * hq, 4, dtype=torch.int32, device=q_codes.device)  # (t, need, below, in bin t)
    cand = torch.empty(b * hq, length, dtype=torch.int32, device=q_codes.device)  # token << shift | low bits
    out = torch.empty(b, hq, k, dtype=torch.int64, device=q_codes.device)
    group = triton.next_power_of_2(n_chunks)
    threshold_kernel[(b * hq,)](s.hist, bases, rows, k, n_chunks, NBINS=nbins, GROUP=group)
    block = min(launch.split_block, s.chunk)
    _split_kernel[(n_chunks, b * hq)](
        s.dist,
        bases,
        rows,
        out,
        cand,
        length,
        k,
        n_chunks,
        s.dist.stride(1),
        NBINS=nbins,
        SHIFT=s.shift,
        BLOCK=block,
        N_STEPS=s.chunk // block,
        VEC=8,  # 8 int16: 16-byte vectors
    )
    # the low bits' 2**shift values, then one bin for lanes past the candidates
    fine_bins = 2 << s.shift
    _finish_kernel[(b * hq,)](rows, cand, out, length, k, nbins, s.shift, fine_bins, launch.finish_block)
    return out
