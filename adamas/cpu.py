"""The CPU backend's stages in numpy, each mirroring its twin in adamas.reference.

A decode step over fp32, fp64 or bf16 K/V runs as one compiled call instead (adamas.cpu_decode);
these stages serve the other dtypes, a machine without numba, and every stage called on its own.

The reference scores keys through a 256 x 256 byte-distance table, indexing it once per
code byte of every (query head, token) pair; here the distance is counted on bit-planes
instead. For a 2-bit code c, the thermometer bits t1 = (c >= 1), t2 = (c >= 2) and
t3 = (c >= 3) give |a - b| = popcount(t(a) XOR t(b)), so a word of packed codes (32 dims
in a uint64) is rewritten as two words of thermometer bits, one holding t1 and t3, the
other t2, and the t2 words of two neighbours are merged into one: 3 words, so 3 hardware
popcounts (numpy's bitwise_count), per 64 dims. Selection is numpy's introselect
(argpartition), attention over the selected rows is one gather and SDPA.

Shapes: B batch, Hq query heads, Hkv key/value heads, L cached tokens, d head_dim,
K = min(budget, L) selected tokens. Query head h reads KV head h // (Hq // Hkv).
Like the reference, these functions trust their inputs; `adamas.ops` validates them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from adamas.config import max_code_distance
from adamas.reference import CODES_PER_BYTE, forced_mask, hadamard, hadamard_matrix

__all__ = [
    "bit_planes",
    "dense_attention",
    "encode",
    "hadamard",
    "manhattan",
    "nearest",
    "query_planes",
    "select",
    "sparse_attention",
]

_PACK = np.uint32((1 << 24) | (1 << 18) | (1 << 12) | (1 << 6))
"""Packs four code bytes of a uint32 into its top byte (see encode)."""
_EVEN_BITS = 0x5555555555555555
"""The low bit of every 2-bit code in a word (dim j's code sits at bit 2 * (j % 32))."""


@functools.lru_cache(maxsize=8)
def _hadamard_matrix(d: int, dtype: torch.dtype) -> torch.Tensor:
    """reference.hadamard_matrix on the CPU, built once per (d, dtype)."""
    return hadamard_matrix(d, dtype)


def _thermometer(x: torch.Tensor, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bits t1, t2, t3 = (y > edge) of y = hadamard(x) under the three edges: bool [..., d] each."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = (x.detach().to(compute) @ _hadamard_matrix(x.shape[-1], compute)).numpy()  # [..., d]
    if isinstance(thresholds, torch.Tensor):  # [H, 3] -> three [1, H, 1 (, 1)] edges
        edges = thresholds.to(compute).numpy().T.reshape(3, 1, -1, *([1] * (y.ndim - 2)))
    else:
        edges = np.asarray(thresholds, dtype=y.dtype)
    return np.greater(y, edges[0]), np.greater(y, edges[1]), np.greater(y, edges[2])


def _pack(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray) -> np.ndarray:
    """Packed codes t1 + t2 + t3 from the thermometer bits: bool [..., d] -> uint8 [..., d // 4]."""
    codes = t1.view(np.uint8) + t2.view(np.uint8)  # [..., d]
    codes += t3.view(np.uint8)
    # each 4 codes b0..b3, read as one little-endian uint32 (b_i at bit 8i), times _PACK: b_i lands
    # at bit 24 + 2i, every other product below bit 24 (with no carry into it) or past bit 31
    words = codes.view(np.uint32)  # [..., d // 4]
    np.multiply(words, _PACK, out=words)
    return np.right_shift(words, np.uint32(24)).astype(np.uint8)


def encode(x: torch.Tensor, thresholds: tuple[float, float, float] | torch.Tensor) -> torch.Tensor:
    """Hadamard-transform, bucketize and pack: x [..., d] float -> uint8 codes [..., d // 4].

    thresholds: three floats, or [H, 3] per head of x [B, H, d] / [B, H, L, d]. Buckets are
    numbered as torch.bucketize(right=False) does: the count of edges below the value.
    """
    return torch.from_numpy(_pack(*_thermometer(x, thresholds)))


def _bits_to_planes(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray) -> np.ndarray:
    """bit_planes' words straight from the thermometer bits: bool [..., d] -> int64 (int32 at d = 16) [..., P]."""
    lead, d = t1.shape[:-1], t1.shape[-1]
    dims = 32 if d % 32 == 0 else 16  # dims per word
    t2_words = t2.reshape(*lead, -1, dims)  # [..., W, dims]
    if t2_words.shape[-2] % 2:  # the last t2 word has no partner for the odd bits
        t2_words = np.concatenate((t2_words, np.zeros_like(t2_words[..., :1, :])), -2)
    # t1 | t3 << 1 on each dim's two bits; t2 words in pairs, the second one's dims on the odd bits
    t2_pairs = t2_words.reshape(*lead, -1, 2, dims).swapaxes(-1, -2).reshape(*lead, -1)
    bits = np.concatenate((np.stack((t1, t3), -1).reshape(*lead, 2 * d), t2_pairs), -1)
    return np.packbits(bits, axis=-1, bitorder="little").view(np.int64 if dims == 32 else np.int32)


def query_planes(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The bit-planes of encode(x)'s codes without the codes (what nearest reads of a query): [B, H, (T,) P]."""
    return torch.from_numpy(_bits_to_planes(*_thermometer(x, thresholds)))


def _planes(codes: np.ndarray) -> np.ndarray:
    """Thermometer bit-planes of packed codes, plane-major: uint8 [B, H, N, d // 4] -> uint32/uint64 [B, H, P, N].

    Per word w of codes (32 dims; 16 in one uint32 at d = 16): t1 | t3 << 1 (t1 on the even
    bits, t3 on the odd ones); then the t2 words (even bits only) merged two by two, the second
    shifted onto the odd bits: P = W + ceil(W / 2) planes for W = d // 32 words.
    """
    word = np.uint64 if codes.shape[-1] % 8 == 0 else np.uint32
    one, even = word(1), word(_EVEN_BITS if word is np.uint64 else _EVEN_BITS & 0xFFFFFFFF)
    lo = np.ascontiguousarray(codes).view(word).swapaxes(-1, -2).copy()  # [B, H, W, N], a copy: worked in place
    w = lo.shape[2]
    planes = np.empty((*lo.shape[:2], w + (w + 1) // 2, lo.shape[3]), dtype=word)  # [B, H, P, N]
    hi = np.right_shift(lo, one)
    np.bitwise_and(hi, even, out=hi)
    np.bitwise_and(lo, even, out=lo)
    t1_t3 = planes[:, :, :w]
    np.bitwise_and(lo, hi, out=t1_t3)
    np.left_shift(t1_t3, one, out=t1_t3)
    np.bitwise_or(t1_t3, lo, out=t1_t3)
    np.bitwise_or(t1_t3, hi, out=t1_t3)
    t2 = planes[:, :, w:]
    if w == 1:
        t2[:] = hi
    else:
        np.left_shift(hi[:, :, 1::2], one, out=t2)
        np.bitwise_or(t2, hi[:, :, 0::2], out=t2)
    return planes


def bit_planes(codes: torch.Tensor) -> torch.Tensor:
    """The bit-planes manhattan counts on, plane-major: uint8 codes [B, H, N, d // 4] -> [B, H, P, N].

    int64 words (int32 at d = 16), the bits of the unsigned words numpy counts.
    """
    planes = _planes(codes.numpy())  # [B, H, P, N]
    return torch.from_numpy(planes.view(np.int64 if planes.dtype == np.uint64 else np.int32))


def _distances(
    q_codes: torch.Tensor | None,
    k_codes: torch.Tensor,
    k_planes: torch.Tensor | None = None,
    q_planes: torch.Tensor | None = None,
) -> np.ndarray:
    """L1 code distances as numpy uint8 (d <= 64) or uint16 [B, Hkv, G, L] (G = Hq // Hkv query heads per KV head)."""
    b, hq = (q_codes if q_planes is None else q_planes).shape[:2]
    _, hkv, length, bytes_per_code = k_codes.shape
    keys = (bit_planes(k_codes) if k_planes is None else k_planes).numpy()  # [B, Hkv, P, L]
    word = np.uint64 if keys.dtype == np.int64 else np.uint32
    keys = keys.view(word)
    queries = _planes(q_codes.numpy()[:, :, None]) if q_planes is None else q_planes.numpy().view(word)
    queries = queries.reshape(b, hkv, hq // hkv, -1, 1)  # [B, Hkv, G, P, 1]
    shape = (b, hkv, hq // hkv, length)
    # counts add up in the narrowest type that holds every distance: no pass over the distances only to widen them
    narrow = max_code_distance(CODES_PER_BYTE * bytes_per_code) <= np.iinfo(np.uint8).max
    dist = np.empty(shape, dtype=np.uint8 if narrow else np.uint16)
    flips, counts = np.empty(shape, dtype=keys.dtype), np.empty(shape, dtype=np.uint8)
    for p in range(keys.shape[2]):  # one plane at a time: every pass reads contiguous memory
        np.bitwise_xor(keys[:, :, None, p], queries[:, :, :, p], out=flips)
        np.bitwise_count(flips, out=dist if p == 0 else counts)
        if p:
            np.add(dist, counts, out=dist)
    return dist


def manhattan(q_codes: torch.Tensor, k_codes: torch.Tensor) -> torch.Tensor:
    """L1 distance between each query head's code and every key code, by popcounts of bit-planes.

    q_codes [B, Hq, d // 4] uint8, k_codes [B, Hkv, L, d // 4] uint8 -> int32 [B, Hq, L].
    """
    b, hq, _ = q_codes.shape
    return torch.from_numpy(_distances(q_codes, k_codes).astype(np.int32).reshape(b, hq, -1))


_FORCED, _EXCLUDED = -(1 << 16), 1 << 16
"""Added to the distance (0 .. 3d) of a forced token, to rank it first, and of an invalid one, to rank it last."""


def _ranked(dist: np.ndarray, sink: int, recent: int, valid: np.ndarray | None) -> np.ndarray:
    """int32 keys [B, Hkv, G, L] that order the tokens as reference.mark_forced's distances do, in one pass.

    The forced tokens (reference.forced_mask) rank before all others, invalid ones after all
    others (at _EXCLUDED or more); the rest keep their distance.
    """
    length = dist.shape[-1]
    if valid is None:
        dist = dist.astype(np.int32)
        dist[..., forced_mask(length, sink, recent).numpy()] = -1
        return dist
    shift = np.where(valid, np.int32(0), np.int32(_EXCLUDED))  # [B, L]
    shift[forced_mask(length, sink, recent, torch.from_numpy(valid)).numpy()] = _FORCED
    return np.add(dist, shift[:, None, None], dtype=np.int32)


def _smallest(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest values of each row of dist [..., L], unsorted: int64 [..., k]."""
    if k >= dist.shape[-1]:
        return np.broadcast_to(np.arange(dist.shape[-1]), dist.shape).copy()
    return np.argpartition(dist, k - 1, axis=-1)[..., :k]


def select(dist: torch.Tensor, budget: int, max_distance: int | None = None) -> torch.Tensor:
    """Indices of the min(budget, L) smallest distances: dist [B, Hq, L] -> int64 [B, Hq, K], unsorted.

    `max_distance` is accepted for the Triton twin's signature and not needed here.
    """
    rows = dist.to(torch.int32) if dist.dtype != torch.int32 and not dist.dtype.is_floating_point else dist
    return torch.from_numpy(_smallest(rows.numpy(), min(budget, dist.shape[-1])))


def nearest(
    q_codes: torch.Tensor | None,
    k_codes: torch.Tensor,
    budget: int,
    sink: int = 0,
    recent: int = 0,
    valid: torch.Tensor | None = None,
    k_planes: torch.Tensor | None = None,
    q_planes: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decode step's selection: manhattan, mark_forced, select and drop_excluded in one call.

    q_codes [B, Hq, d // 4] uint8, k_codes [B, Hkv, L, d // 4] uint8, valid [B, L] bool or None,
    k_planes bit_planes(k_codes) and q_planes [B, Hq, P] (query_planes; then q_codes may be None)
    or None -> int64 [B, Hq, min(budget, L)]; a slot is -1 where fewer than K valid tokens exist.
    """
    b, hq = (q_codes if q_planes is None else q_planes).shape[:2]
    k = min(budget, k_codes.shape[2])
    ok = None if valid is None else valid.numpy()  # [B, L]
    if ok is not None and k_codes.shape[2] > 1 and not ok[:, -1].any():  # a fixed cache's unwritten tail
        seen = np.flatnonzero(ok.any(0))
        end = max(int(seen[-1]) + 1 if len(seen) else 0, k)  # tokens past the last valid one are never scored
        k_codes, ok = k_codes[:, :, :end], ok[:, :end]
        k_planes = None if k_planes is None else k_planes[..., :end]
    if ok is not None and ok.all():  # every token valid (a fixed cache's written prefix): rank as unmasked
        ok = None
    rank = _ranked(_distances(q_codes, k_codes, k_planes, q_planes), sink, recent, ok)  # int32 [B, Hkv, G, L]
    idx = _smallest(rank, k)  # [B, Hkv, G, K]
    if ok is not None and int(ok.sum(-1).min()) < k:  # a row with fewer valid tokens than K: empty slots
        idx[np.take_along_axis(rank, idx, axis=-1) >= _EXCLUDED] = -1
    return torch.from_numpy(idx.reshape(b, hq, -1))


def _row_matrix(x: torch.Tensor) -> tuple[torch.Tensor, int, int] | None:
    """x [B, Hkv, L, d] read in place as one matrix of its rows [N, d], with the row step per batch and per head.

    None when its rows lie on no common stride (a contiguous tensor, or a slice of a larger
    cache buffer, always do).
    """
    b, hkv, length, d = x.shape
    s_batch, s_head, s_row, s_col = (0 if n == 1 else s for n, s in zip(x.shape, x.stride(), strict=True))
    s_row, s_col = (s_row or d), (s_col or 1)  # a dim of size 1 has no stride to keep
    if s_col != 1 or s_row < d or s_batch % s_row or s_head % s_row:
        return None
    per_batch, per_head = s_batch // s_row, s_head // s_row
    return x.as_strided(((b - 1) * per_batch + (hkv - 1) * per_head + length, d), (s_row, 1)), per_batch, per_head


@functools.lru_cache(maxsize=16)
def _first_rows(b: int, hq: int, group: int, per_batch: int, per_head: int) -> np.ndarray:
    """The row of token 0 of each (batch, query head)'s KV head in a row matrix: int64 [B, Hq, 1]."""
    return (np.arange(b)[:, None] * per_batch + (np.arange(hq) // group) * per_head)[:, :, None]


def _gather(xs: tuple[torch.Tensor, ...], idx: np.ndarray, group: int) -> list[torch.Tensor]:
    """x[b, h // group, idx[b, h, i]] for each x [B, Hkv, L, d] of xs and idx [B, Hq, K] in [0, L): [B, Hq, K, d].

    Tensors whose rows lie alike (K and V buffers of one cache) share one row index.
    """
    gathered, row_index = [], {}
    for x in xs:
        found = _row_matrix(x)
        if found is None:  # index element-wise
            batch, heads = np.arange(idx.shape[0])[:, None, None], (np.arange(idx.shape[1]) // group)[None, :, None]
            gathered.append(x[torch.from_numpy(batch), torch.from_numpy(heads), torch.from_numpy(idx)])
            continue
        matrix, per_batch, per_head = found
        rows = row_index.get((per_batch, per_head))
        if rows is None:
            first = _first_rows(idx.shape[0], idx.shape[1], group, per_batch, per_head)  # [B, Hq, 1]
            rows = row_index[per_batch, per_head] = torch.from_numpy((idx + first).reshape(-1))
        gathered.append(matrix.index_select(0, rows).view(*idx.shape, x.shape[-1]))
    return gathered


def sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor, scale: float
) -> torch.Tensor:
    """Exact softmax attention of each query head over its selected rows of k, v, by SDPA.

    q [B, Hq, d], k/v [B, Hkv, L, d], idx [B, Hq, K] int -> [B, Hq, d] in q's dtype; an index
    of -1 marks an empty slot that gets no weight.
    """
    group = idx.shape[1] // k.shape[1]
    picks = idx.numpy().astype(np.int64, copy=False)  # [B, Hq, K]
    empty = picks < 0 if picks.min() < 0 else None
    rows = picks if empty is None else np.maximum(picks, 0)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    k_sel, v_sel = (x.to(compute) for x in _gather((k, v), rows, group))  # [B, Hq, K, d]
    mask = None if empty is None else torch.from_numpy(~empty[:, :, None, :])  # [B, Hq, 1, K]
    out = F.scaled_dot_product_attention(q.unsqueeze(2).to(compute), k_sel, v_sel, attn_mask=mask, scale=scale)
    return out.select(2, 0).to(q.dtype)


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Full softmax attention of one query token by SDPA, each GQA group's heads the queries of its KV head.

    q [B, Hq, d], k/v [B, Hkv, L, d], valid [B, L] bool or None -> [B, Hq, d] in q's dtype.
    """
    b, hq, d = q.shape
    hkv = k.shape[1]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    grouped = q.reshape(b, hkv, hq // hkv, d).to(compute)  # [B, Hkv, G, d]
    mask = None if valid is None else valid[:, None, None, :]  # [B, 1, 1, L]
    out = F.scaled_dot_product_attention(grouped, k.to(compute), v.to(compute), attn_mask=mask, scale=scale)
    return out.reshape(b, hq, -1).to(q.dtype)
