"""The budget keys nearest each query head by code distance: encode, manhattan and select fused, no sort.

The same set as `select(mark_forced(manhattan(encode(q), ...)))` followed by `drop_excluded`, in two
kernels and one pass over the key codes:
1. scan: per chunk of tokens and GQA group, the group's query codes (its Hadamard transform
   bucketized in the program, or codes given), the distances (int16 rows padded to 16 tokens;
   forced tokens -1, excluded ones and the padding EXCLUDED_16) and, per query head, a coarse
   histogram: bin (d + 1) >> SHIFT, few bins, so that counting costs little beside the distance.
   The group's last program to finish (an atomic count) runs adamas.kernels.histogram's threshold
   pass on its rows: the bin t holding the k-th smallest distance, and where each chunk's picks go;
2. split: each chunk writes its tokens below bin t as picks, and its tokens in bin t as
   candidates (token << SHIFT | the distance's low bits) in token order. The row's last program to
   finish then completes the row: the candidates' fine histogram gives the exact k-th distance;
   those below it and then the earliest ties are taken; slots past the valid tokens get -1.
Deterministic: picks below bin t, then candidates below the k-th distance, then the earliest
ties, each group in token order. On Hopper both kernels launch with programmatic dependent
launch: each one's launch overlaps the tail of the kernel before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from adamas.kernels.bits import popcount, sylvester, thermometer, words
from adamas.kernels.forced import forced_tokens, forced_valid_tokens
from adamas.kernels.histogram import distance_bin, threshold_row
from adamas.kernels.runtime import interpreted, pdl, zeroed
from adamas.kernels.split_k import LOG2E, rescale
from adamas.reference import valid_counts


@dataclass(frozen=True)
class NearestLaunch:
    """How `nearest` cuts its work into programs; the defaults are the GPU's, tests shrink them to cover loops."""

    block_l: int = 256  # tokens per step of the scan
    scan_programs: int = 1024  # scan programs to aim for: long chunks only when there are enough
    max_chunks: int = 64  # chunks per row at most: what the threshold pass reads at once
    # bins of the scan's histogram: more cost the scan a little, fewer leave more candidates to the finish
    coarse_bins: int = 64
    scan_warps: int = 4
    split_block: int = 2048  # tokens per step of the split kernel
    finish_block: int = 1024  # candidates per step of the finish


EXCLUDED_16 = tl.constexpr(32767)  # an excluded token's int16 distance: past every bin, so it sorts last
THRESHOLD_TILE = 8  # chunk histograms the threshold pass loads at once


@triton.jit
def _query_words(
    q_ptr,
    t_ptr,
    t0,
    t1,
    t2,
    i_b,
    i_hkv,
    stride_qb,
    stride_qh,
    inv_sqrt_d,
    o_w,
    GROUP: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    NW: tl.constexpr,
    NP: tl.constexpr,
    PER_HEAD: tl.constexpr,
    PRECISION: tl.constexpr,
    HW_POPC: tl.constexpr,
):
    """The group's query codes as [GP, NP, 2] int32 words (row g: head i_hkv * GROUP + g; o_w's layout).

    As adamas.kernels.hadamard_encode: x times Sylvester signs (exact products, fp32 sums on tensor cores,
    GP >= 16 rows of which GROUP are real), bucketized under the KV head's three edges, 16 codes a word.
    """
    o_g = tl.arange(0, GP)
    o_d = tl.arange(0, D)
    o_16 = tl.arange(0, 16)
    p_q = q_ptr + i_b * stride_qb + (i_hkv * GROUP + o_g)[:, None] * stride_qh + o_d[None, :]
    b_x = tl.load(p_q, mask=(o_g < GROUP)[:, None], other=0.0).to(tl.float32)  # [GP, D]
    if PER_HEAD:  # the KV head's row of the table
        t0 = tl.load(t_ptr + i_hkv * 3)
        t1 = tl.load(t_ptr + i_hkv * 3 + 1)
        t2 = tl.load(t_ptr + i_hkv * 3 + 2)
    b_words = tl.zeros([GP, NP, 2], dtype=tl.int32)
    for w in tl.static_range(NW):
        # [D, 16] the Sylvester columns of word w's 16 dims
        b_h = sylvester(o_d[:, None] & (w * 16 + o_16)[None, :], D.bit_length() - 1, HW_POPC)
        b_y = tl.dot(b_x, b_h, input_precision=PRECISION) * inv_sqrt_d  # [GP, 16]
        b_c = (b_y > t0).to(tl.int32) + (b_y > t1).to(tl.int32) + (b_y > t2).to(tl.int32)
        b_word = tl.sum(b_c << (2 * o_16)[None, :], 1)  # [GP] dim j at bit 2 * (j % 16)
        b_words = tl.where((o_w == w)[None, :, :], b_word[:, None, None], b_words)
    return b_words


# the lengths and counts a call's context decides are plain arguments, not specializations: one compiled
# kernel serves every context (the app warms it once, at load)
@triton.jit(do_not_specialize=["L", "K", "N_CHUNKS", "N_STEPS", "SINK", "RECENT", "stride_kb", "stride_kh"])
def _scan_kernel(
    q_ptr,
    t_ptr,
    k_ptr,
    valid_ptr,
    counts_ptr,
    len_ptr,
    d_ptr,
    h_ptr,
    base_ptr,
    row_ptr,
    done_ptr,
    t0,
    t1,
    t2,
    inv_sqrt_d,
    L,
    K,
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
    stride_len,
    stride_d,
    GROUP: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    NP: tl.constexpr,
    NW: tl.constexpr,
    N_STEPS,
    BLOCK_L: tl.constexpr,
    NBINS: tl.constexpr,
    SHIFT: tl.constexpr,
    ENCODE: tl.constexpr,
    PER_HEAD: tl.constexpr,
    PRECISION: tl.constexpr,
    HAS_VALID: tl.constexpr,
    HAS_COUNTS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    TILE: tl.constexpr,
    HW_POPC: tl.constexpr,
    PDL: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hkv = i_bh // HKV, i_bh % HKV
    if PDL:  # everything below reads what earlier kernels wrote
        gdc_wait()
        gdc_launch_dependents()
    o_j = tl.arange(0, 2)
    # [NP, 2] pair p holds words p and p + NP: each half of a token is one run, read as one vector
    o_w = tl.arange(0, NP)[:, None] + NP * o_j[None, :]
    m_w = (NP * o_j < NW)[None, :]  # [1, 2] only d = 16 (one word) lacks a second half; whole runs keep vectors
    o_bin = tl.arange(0, NBINS)
    p_k = k_ptr + tl.multiple_of(i_b * stride_kb + i_hkv * stride_kh, NW) + o_w[None, :, :]
    # the row's written tokens: a prefix of n_valid (a fixed-capacity cache), else all L
    n_valid = tl.load(len_ptr + i_b * stride_len).to(tl.int32) if HAS_LENGTHS else L
    n_read = tl.minimum(n_valid, L)
    start = i_c * N_STEPS * BLOCK_L
    o_l = start + tl.arange(0, BLOCK_L)
    # [BLOCK_L, NP, 2] key words (rows of NW words), the next step's loaded while this one is scored
    b_next = tl.load(p_k + o_l[:, None, None] * NW, mask=(o_l < n_read)[:, None, None] & m_w[None, :, :], other=0)
    # the group's query planes, made once (per head, [NP, 2] thermometer words and [NP] packed c > 2
    # words), and one histogram per head in the histogram's own layout: a [GROUP, NBINS] tile would
    # cost a layout conversion (shared memory, barriers) every step
    if ENCODE:
        b_words = _query_words(
            q_ptr, t_ptr, t0, t1, t2, i_b, i_hkv, stride_qb, stride_qh, inv_sqrt_d, o_w,
            GROUP, GP, D, NW, NP, PER_HEAD, PRECISION, HW_POPC,
        )  # fmt: skip
    b_q01s = ()
    b_q2s = ()
    b_hists = ()
    for g in tl.static_range(GROUP):
        if ENCODE:
            b_q = tl.sum(tl.where((tl.arange(0, GP) == g)[:, None, None], b_words, 0), 0)  # [NP, 2]
        else:
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
        m_next = o_l + BLOCK_L < tl.minimum(n_read, start + N_STEPS * BLOCK_L)  # within the row and the chunk
        b_next = tl.load(
            p_k + (o_l + BLOCK_L)[:, None, None] * NW, mask=m_next[:, None, None] & m_w[None, :, :], other=0
        )
        b_k01, b_k2 = thermometer(b_k.to(tl.uint32, bitcast=True))
        # the c > 2 planes use every other bit: a pair's two share one word, one popcount
        b_k2 = tl.sum(b_k2 << o_j.to(tl.uint32)[None, None, :], 2)  # [BLOCK_L, NP]
        # [BLOCK_L] padding, and the tokens always taken: given per token, or the first and last ones
        m_valid = tl.load(valid_ptr + i_b * stride_vb + o_l, mask=m_l, other=1) != 0 if HAS_VALID else o_l < n_valid
        m_excluded = ~m_valid
        if HAS_COUNTS:
            b_upto = tl.load(counts_ptr + i_b * stride_cb + o_l, mask=m_l, other=0) - before
            m_forced = forced_valid_tokens(~m_excluded, b_upto, total, SINK, RECENT)
        else:
            m_forced = forced_tokens(o_l, n_valid, SINK, RECENT)
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
    # the group's last program to finish finds its rows' thresholds: every thread's stores are issued
    # before the count says this chunk is done, and the count's acquire makes the others' visible
    tl.debug_barrier()
    if tl.atomic_add(done_ptr + i_bh, 1, sem="acq_rel") == N_CHUNKS - 1:
        for g in tl.static_range(GROUP):
            threshold_row(h_ptr, base_ptr, row_ptr, i_bh * GROUP + g, K, N_CHUNKS, NBINS, TILE)
        tl.store(done_ptr + i_bh, 0)  # ready for the next call


@triton.jit
def _finish_row(row_ptr, c_ptr, o_ptr, i_r, L, K, NBINS: tl.constexpr, SHIFT: tl.constexpr, FINE_BINS: tl.constexpr,
                BLOCK: tl.constexpr):  # fmt: skip
    """Row i_r's candidates (bin t's tokens, written by every split program: read from L2) complete the row."""
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
        b_fine = tl.load(p_c + o_n, mask=m_n, other=0, cache_modifier=".cg") & ((1 << SHIFT) - 1)
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
        b_c = tl.load(p_c + o_n, mask=m_n, other=0, cache_modifier=".cg")  # [BLOCK]
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


@triton.jit
def _attend_row(q_ptr, k_ptr, v_ptr, x_ptr, o_ptr, i_r, K, HQ, scale_log2, stride_qb, stride_qh, stride_kb, stride_kh,
                stride_kl, stride_vb, stride_vh, stride_vl, stride_xb, stride_xh, GROUP: tl.constexpr,
                D: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """Row i_r's attention over its K selected rows (written by every split program: read from L2), stored to x."""
    i_b, i_h = i_r // HQ, i_r % HQ
    i_hkv = i_h // GROUP
    o_d = tl.arange(0, D)
    b_q = tl.load(q_ptr + i_b * stride_qb + i_h * stride_qh + o_d).to(tl.float32) * scale_log2  # [D]
    p_k = k_ptr + i_b * stride_kb + i_hkv * stride_kh
    p_v = v_ptr + i_b * stride_vb + i_hkv * stride_vh
    b_m = tl.full([1], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([1], dtype=tl.float32)
    b_acc = tl.zeros([D], dtype=tl.float32)
    for off in range(0, K, BLOCK_K):
        o_k = off + tl.arange(0, BLOCK_K)
        b_rows = tl.load(o_ptr + i_r * K + o_k, mask=o_k < K, other=-1, cache_modifier=".cg")
        m_k = b_rows >= 0  # -1 marks a slot with no token
        b_k = tl.load(p_k + b_rows[:, None] * stride_kl + o_d[None, :], mask=m_k[:, None], other=0.0).to(tl.float32)
        b_v = tl.load(p_v + b_rows[:, None] * stride_vl + o_d[None, :], mask=m_k[:, None], other=0.0).to(tl.float32)
        b_s = tl.where(m_k, tl.sum(b_k * b_q[None, :], axis=1), float("-inf"))  # [BLOCK_K] in log2 units
        b_m_new, b_m_safe, b_alpha = rescale(b_m, tl.max(b_s, axis=0))
        b_p = tl.exp2(b_s - b_m_safe)
        b_l = b_l * b_alpha + tl.sum(b_p, axis=0)
        b_acc = b_acc * b_alpha + tl.sum(b_p[:, None] * b_v, axis=0)
        b_m = b_m_new
    tl.store(x_ptr + i_b * stride_xb + i_h * stride_xh + o_d, (b_acc / b_l).to(x_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["L", "K", "N_CHUNKS", "N_STEPS"])
def _split_kernel(
    d_ptr,
    base_ptr,
    row_ptr,
    o_ptr,
    c_ptr,
    done_ptr,
    L,
    K,
    N_CHUNKS,
    stride_d,
    N_STEPS,
    NBINS: tl.constexpr,
    SHIFT: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    FINE_BINS: tl.constexpr,
    FINISH_BLOCK: tl.constexpr,
    PDL: tl.constexpr,
    q_ptr=None,
    k_ptr=None,
    v_ptr=None,
    x_ptr=None,
    HQ=1,
    scale_log2=1.0,
    stride_qb=0,
    stride_qh=0,
    stride_kb=0,
    stride_kh=0,
    stride_kl=0,
    stride_vb=0,
    stride_vh=0,
    stride_vl=0,
    stride_xb=0,
    stride_xh=0,
    GROUP: tl.constexpr = 1,
    D: tl.constexpr = 16,
    BLOCK_K: tl.constexpr = 32,
    ATTEND: tl.constexpr = False,
):
    i_c, i_r = tl.program_id(0), tl.program_id(1)
    if PDL:  # the scan's distances, thresholds and bases
        gdc_wait()
        gdc_launch_dependents()
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
    # the row's last program to finish completes it, once every chunk's candidates are written
    tl.debug_barrier()
    if tl.atomic_add(done_ptr + i_r, 1, sem="acq_rel") == N_CHUNKS - 1:
        _finish_row(row_ptr, c_ptr, o_ptr, i_r, L, K, NBINS, SHIFT, FINE_BINS, FINISH_BLOCK)
        tl.store(done_ptr + i_r, 0)  # ready for the next call
        if ATTEND:  # the step in two kernels: the row's attention too, once its own finish stores are in
            tl.debug_barrier()
            _attend_row(q_ptr, k_ptr, v_ptr, x_ptr, o_ptr, i_r, K, HQ, scale_log2, stride_qb, stride_qh, stride_kb,
                        stride_kh, stride_kl, stride_vb, stride_vh, stride_vl, stride_xb, stride_xh, GROUP, D,
                        BLOCK_K)  # fmt: skip


class Scan(NamedTuple):
    """The scan's outputs: int16 distances [B, Hq, L], coarse histograms [B * Hq, n_chunks, NBINS], each row's
    threshold (rows int32 [B * Hq, 4]: t, ties to take, picks below t, tokens in bin t) and each chunk's starts
    (bases int32 [B * Hq, n_chunks, 2]), and their layout."""

    dist: torch.Tensor
    hist: torch.Tensor
    rows: torch.Tensor
    bases: torch.Tensor
    chunk: int
    shift: int


def _chunking(length: int, groups: int, nw: int, launch: NearestLaunch) -> tuple[int, int]:
    """(chunk, block) for `groups` = B * Hkv GQA groups of nw-word keys: ~scan_programs programs of whole steps."""
    block = min(launch.block_l * 8 // max(nw, 8), max(16, triton.next_power_of_2(length)))  # d > 128: as many words
    n_chunks = min(launch.max_chunks, triton.cdiv(launch.scan_programs, groups))
    return max(block, triton.next_power_of_2(triton.cdiv(length, n_chunks))), block


def _shift(nbytes: int, length: int, launch: NearestLaunch) -> int:
    """How far the scan shifts a distance to bin it: the smallest shift that leaves bins NBINS - 2 and - 1 free."""
    max_distance = 3 * 4 * nbytes
    shift = 0
    while (max_distance + 1) >> shift > launch.coarse_bins - 3:
        shift += 1
    if (length - 1) << shift >= 2**31:
        raise ValueError(f"{length} tokens do not fit the candidates' int32 (token << {shift})")
    return shift


def _scan(
    query: torch.Tensor,
    thresholds: tuple[float, float, float] | torch.Tensor | None,
    k_codes: torch.Tensor,
    budget: int,
    sink: int,
    recent: int,
    valid: torch.Tensor | None,
    lengths: torch.Tensor | None,
    launch: NearestLaunch,
) -> Scan:
    """Pass 1: query (codes [B, Hq, d // 4] uint8, or with `thresholds` floats [B, Hq, d] encoded in the scan)
    against k_codes [B, Hkv, L, d // 4]: distances, histograms and each row's threshold for `budget`."""
    encode = thresholds is not None
    b, hq = query.shape[:2]
    _, hkv, length, nbytes = k_codes.shape
    k_words = words(k_codes)
    nw = k_words.shape[-1]
    if k_words.stride(2) != nw or k_words.stride(1) % nw or k_words.stride(0) % nw:  # rows of whole tokens
        k_words = k_words.contiguous()
    q_in = query if encode else words(query)
    shift = _shift(nbytes, length, launch)
    chunk, block = _chunking(length, b * hkv, nw, launch)
    n_chunks = triton.cdiv(length, chunk)
    counts = None
    if valid is not None and (sink or recent):
        # sink and recent count valid tokens: the kernel takes reference.forced_mask's count and does its
        # per-row arithmetic itself
        counts = valid_counts(valid)
    valid_u8 = None if valid is None else valid.contiguous().view(torch.uint8)
    device = k_codes.device
    # rows padded to 16 tokens: whole 32-byte vectors for the split kernel whatever L is
    dist = torch.empty(b, hq, triton.cdiv(length, 16) * 16, dtype=torch.int16, device=device)[..., :length]
    hist = torch.empty(b * hq, n_chunks, launch.coarse_bins, dtype=torch.int32, device=device)
    bases = torch.empty(b * hq, n_chunks, 2, dtype=torch.int32, device=device)  # (below, candidate) starts
    rows = torch.empty(b * hq, 4, dtype=torch.int32, device=device)  # (t, need, below, in bin t)
    table = thresholds.to(device=device, dtype=torch.float32).contiguous() if encode and isinstance(
        thresholds, torch.Tensor) else None  # fmt: skip
    edges = (0.0, 0.0, 0.0) if table is not None or not encode else tuple(float(t) for t in thresholds)
    group = hq // hkv
    _scan_kernel[(n_chunks, b * hkv)](
        q_in,
        table,
        k_words,
        valid_u8,
        counts,
        lengths,
        dist,
        hist,
        bases,
        rows,
        zeroed("nearest-scan-done", b * hkv, device),
        *edges,
        1.0 / math.sqrt(4 * nbytes),
        length,
        min(budget, length),
        hkv,
        n_chunks,
        sink,
        recent,
        q_in.stride(0),
        q_in.stride(1),
        k_words.stride(0),
        k_words.stride(1),
        0 if valid_u8 is None else valid_u8.stride(0),
        0 if counts is None else counts.stride(0),
        0 if lengths is None or lengths.numel() == 1 else lengths.stride(0),
        dist.stride(1),
        GROUP=group,
        GP=max(16, triton.next_power_of_2(group)),
        D=4 * nbytes,
        NP=triton.cdiv(nw, 2),
        NW=nw,
        BLOCK_L=block,
        N_STEPS=chunk // block,
        NBINS=launch.coarse_bins,
        SHIFT=shift,
        ENCODE=encode,
        PER_HEAD=table is not None,
        # fp16 and bf16 values are exact in tf32, so the dot stays exact there; fp32 needs ieee
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
        HAS_VALID=valid_u8 is not None,
        HAS_COUNTS=counts is not None,
        HAS_LENGTHS=lengths is not None,
        TILE=THRESHOLD_TILE,
        HW_POPC=not interpreted(_scan_kernel),
        PDL=pdl(_scan_kernel, device),
        num_warps=launch.scan_warps,
        launch_pdl=pdl(_scan_kernel, device),
    )
    return Scan(dist, hist, rows, bases, chunk, shift)


def scan_distances(
    q_codes: torch.Tensor,
    k_codes: torch.Tensor,
    sink: int = 0,
    recent: int = 0,
    valid: torch.Tensor | None = None,
    launch: NearestLaunch = NearestLaunch(),
    budget: int = 1,
) -> Scan:
    """Pass 1 alone: distances of q_codes [B, Hq, d // 4] to k_codes [B, Hkv, L, d // 4], their histograms and
    each row's threshold for `budget`."""
    return _scan(q_codes, None, k_codes, budget, sink, recent, valid, None, launch)


def _select(
    query: torch.Tensor,
    thresholds: tuple[float, float, float] | torch.Tensor | None,
    k_codes: torch.Tensor,
    budget: int,
    sink: int,
    recent: int,
    valid: torch.Tensor | None,
    lengths: torch.Tensor | None,
    launch: NearestLaunch,
    attend: tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The scan, then the split kernel (whose last program a row finishes it): int64 [B, Hq, min(budget, L)].

    With `attend` = (q, k, v, scale), that program also attends over the row: (output [B, Hq, d], indices).
    """
    b, hq = query.shape[:2]
    length = k_codes.shape[2]
    k = min(budget, length)
    s = _scan(query, thresholds, k_codes, budget, sink, recent, valid, lengths, launch)
    n_chunks, nbins = s.hist.shape[1:]
    cand = torch.empty(b * hq, length, dtype=torch.int32, device=k_codes.device)  # token << shift | low bits
    out = torch.empty(b, hq, k, dtype=torch.int64, device=k_codes.device)
    block = min(launch.split_block, s.chunk)
    enabled = pdl(_split_kernel, k_codes.device)
    extra = {}
    if attend is not None:
        q, keys, values, scale = attend
        x = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        extra = dict(
            q_ptr=q, k_ptr=keys, v_ptr=values, x_ptr=x, HQ=hq, scale_log2=scale * LOG2E, stride_qb=q.stride(0),
            stride_qh=q.stride(1), stride_kb=keys.stride(0), stride_kh=keys.stride(1), stride_kl=keys.stride(2),
            stride_vb=values.stride(0), stride_vh=values.stride(1), stride_vl=values.stride(2), stride_xb=x.stride(0),
            stride_xh=x.stride(1), GROUP=hq // keys.shape[1], D=q.shape[-1], ATTEND=True,
        )  # fmt: skip
    _split_kernel[(n_chunks, b * hq)](
        s.dist,
        s.bases,
        s.rows,
        out,
        cand,
        zeroed("nearest-split-done", b * hq, k_codes.device),
        length,
        k,
        n_chunks,
        s.dist.stride(1),
        NBINS=nbins,
        SHIFT=s.shift,
        BLOCK=block,
        N_STEPS=s.chunk // block,
        VEC=8,  # 8 int16: 16-byte vectors
        FINE_BINS=2 << s.shift,  # the low bits' 2**shift values, then one bin for lanes past the candidates
        FINISH_BLOCK=launch.finish_block,
        PDL=enabled,
        launch_pdl=enabled,
        **extra,
    )
    return out if attend is None else (extra["x_ptr"], out)


def nearest(
    q_codes: torch.Tensor,
    k_codes: torch.Tensor,
    budget: int,
    sink: int = 0,
    recent: int = 0,
    valid: torch.Tensor | None = None,
    launch: NearestLaunch = NearestLaunch(),
    *,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """The min(budget, L) keys nearest each query head by L1 code distance: int64 [B, Hq, K].

    q_codes [B, Hq, d // 4] uint8, k_codes [B, Hkv, L, d // 4] uint8 (query head h reads KV
    head h // (Hq // Hkv)); the first `sink` and last `recent` tokens are always taken;
    `valid` ([B, L] bool) counts those among valid tokens only and never takes an invalid one:
    its slots are -1 when fewer than K tokens are valid. `lengths` (int [B], or [1] for every
    row, on the device) says the same of a row whose valid tokens are its first lengths[b], with
    no mask to read and nothing to count: a fixed-capacity cache's written slots. The same set as
    adamas.reference's mark_forced, select (ties to the earliest tokens) and drop_excluded; the
    order within a row is unspecified. Last dims must be contiguous; inputs are trusted (see adamas.ops).
    """
    return _select(q_codes, None, k_codes, budget, sink, recent, valid, lengths, launch)


def nearest_attention(
    q: torch.Tensor,
    thresholds: tuple[float, float, float] | torch.Tensor,
    k_codes: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    budget: int,
    scale: float,
    sink: int = 0,
    recent: int = 0,
    valid: torch.Tensor | None = None,
    launch: NearestLaunch = NearestLaunch(),
    *,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole decode step in two kernels: `nearest_query`, whose split kernel's last program a row also attends
    over the row's selection (k, v [B, Hkv, L, d]): (output [B, Hq, d] in q's dtype, indices int64 [B, Hq, K])."""
    return _select(q, thresholds, k_codes, budget, sink, recent, valid, lengths, launch, (q, k, v, scale))


def nearest_query(
    q: torch.Tensor,
    thresholds: tuple[float, float, float] | torch.Tensor,
    k_codes: torch.Tensor,
    budget: int,
    sink: int = 0,
    recent: int = 0,
    valid: torch.Tensor | None = None,
    launch: NearestLaunch = NearestLaunch(),
    *,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """`nearest` of the query itself, q [B, Hq, d] float, encoded inside the scan: no kernel of its own.

    `thresholds`: three floats, or fp32 [Hkv, 3], KV head j's edges for its query heads (how a
    cache layer's keys were encoded); the codes are adamas.kernels.encode's.
    """
    return _select(q, thresholds, k_codes, budget, sink, recent, valid, lengths, launch)
