"""Adamas in plain PyTorch: the readable specification of every stage.

Every stage computes in fp32 (fp64 stays fp64) and trusts its inputs; the public
functions in `adamas.ops` validate them. The Triton kernels in `adamas.kernels` are
tested against these functions.

Shapes: B batch, Hq query heads, Hkv key/value heads, L cached tokens, d head_dim,
K = min(budget, L) selected tokens. Query head h reads KV head h // (Hq // Hkv).
"""

from __future__ import annotations

import functools
import math

import torch

CODES_PER_BYTE = 4
BITS_PER_CODE = 2


@functools.lru_cache(maxsize=16)
def _sylvester(d: int) -> torch.Tensor:
    """The ±1 Hadamard matrix of order d (Sylvester's construction), float64 on the CPU."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    return h


def hadamard_matrix(d: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
    """The orthonormal Walsh–Hadamard matrix H / sqrt(d), symmetric, [d, d]."""
    return (_sylvester(d) / math.sqrt(d)).to(dtype=dtype, device=device)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Walsh–Hadamard transform over the last dim: x [..., d] -> [..., d], x's dtype."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = hadamard_matrix(x.shape[-1], compute, x.device)
    return (x.to(compute) @ h).to(x.dtype)


def bucketize(y: torch.Tensor, thresholds: tuple[float, float, float] | torch.Tensor) -> torch.Tensor:
    """The bucket 0..3 of each element, as torch.bucketize(right=False) numbers them: int64.

    thresholds: three floats, or [H, 3] per head of y [B, H, d] / [B, H, L, d].
    """
    if not isinstance(thresholds, torch.Tensor):
        return torch.bucketize(y, torch.tensor(thresholds, dtype=y.dtype, device=y.device), right=False)
    edges = thresholds.to(device=y.device, dtype=y.dtype).view(1, -1, *([1] * (y.ndim - 2)), 3)
    return (y[..., None] > edges).sum(dim=-1)


def calibrate(k: torch.Tensor, quantiles: tuple[float, float, float], max_samples: int = 1 << 16) -> torch.Tensor:
    """Per-KV-head thresholds: the `quantiles` of hadamard(k)'s values, k [B, Hkv, L, d] -> fp32 [Hkv, 3].

    At most `max_samples` evenly strided values per head are used (torch.quantile's input is bounded).
    """
    y = hadamard(k.float()).transpose(0, 1).reshape(k.shape[1], -1)  # [Hkv, B * L * d]
    step = max(1, -(-y.shape[1] // max_samples))
    q = torch.tensor(quantiles, dtype=torch.float32, device=k.device)
    return torch.quantile(y[:, ::step], q, dim=1).T.contiguous()


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Pack 2-bit codes [..., d] into uint8 [..., d // 4]; dim j sits in byte j // 4 at bit 2 * (j % 4)."""
    c = codes.to(torch.uint8).unflatten(-1, (-1, CODES_PER_BYTE))  # [..., d // 4, 4]
    shifts = torch.arange(0, 8, BITS_PER_CODE, dtype=torch.uint8, device=codes.device)
    return (c << shifts).sum(dim=-1, dtype=torch.uint8)


def unpack(codes: torch.Tensor) -> torch.Tensor:
    """Unpack uint8 codes [..., d // 4] into the integer codes 0..3, uint8 [..., d]."""
    shifts = torch.arange(0, 8, BITS_PER_CODE, dtype=torch.uint8, device=codes.device)
    return ((codes[..., None] >> shifts) & 3).flatten(-2)


def encode(x: torch.Tensor, thresholds: tuple[float, float, float] | torch.Tensor) -> torch.Tensor:
    """Hadamard-transform, bucketize and pack: x [..., d] float -> uint8 codes [..., d // 4].

    thresholds: three floats, or [H, 3] per head of x [B, H, d] / [B, H, L, d].
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    return pack(bucketize(hadamard(x.to(compute)), thresholds))


@functools.lru_cache(maxsize=8)
def byte_distance_table(device: torch.device) -> torch.Tensor:
    """D[a, b] = sum over the four 2-bit codes packed in bytes a and b of |code(a) - code(b)|: int32 [256, 256]."""
    codes = unpack(torch.arange(256, dtype=torch.uint8, device=device)[:, None]).int()  # [256, 4]
    return (codes[:, None, :] - codes[None, :, :]).abs().sum(dim=-1, dtype=torch.int32)


def manhattan(q_codes: torch.Tensor, k_codes: torch.Tensor) -> torch.Tensor:
    """L1 distance between each query head's code and every key code, byte by byte through a table.

    q_codes [B, Hq, d // 4] uint8, k_codes [B, Hkv, L, d // 4] uint8 -> int32 [B, Hq, L].
    """
    b, hq, nb = q_codes.shape
    hkv, length = k_codes.shape[1], k_codes.shape[2]
    table = byte_distance_table(q_codes.device).flatten()
    q = q_codes.view(b, hkv, hq // hkv, 1, nb).long() * 256  # [B, Hkv, G, 1, d // 4]
    pairs = q + k_codes[:, :, None].long()  # [B, Hkv, G, L, d // 4]: row-major index into the table
    return table[pairs].sum(dim=-1, dtype=torch.int32).view(b, hq, length)


EXCLUDED = torch.iinfo(torch.int32).max
"""The distance given to tokens that must never be attended (padding)."""


def valid_counts(valid: torch.Tensor) -> torch.Tensor:
    """Valid tokens at or before each position of valid [B, L] bool, counted over the rows laid end to end: int32.

    One scan over the whole tensor, less each row's start where a row's own count is wanted: on a GPU
    PyTorch scans a whole tensor on every core, but a few long rows (a decode batch's) row by row in
    one thread block.
    """
    return valid.reshape(-1).cumsum(0, dtype=torch.int32).view(valid.shape)


def forced_mask(
    length: int, sink: int, recent: int, valid: torch.Tensor | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """The tokens every selection keeps: the first `sink` and the last `recent`, bool [L] (on `device`).

    With `valid` ([B, L] bool, False for padding or for a static cache's empty slots) sink and
    recent count valid tokens only, invalid ones are never forced, and the mask is [B, L].
    """
    if valid is None:
        pos = torch.arange(length, device=device)
        return (pos < sink) | (pos >= length - recent)
    counts = valid_counts(valid)
    upto = counts - (counts[:, :1] - valid[:, :1].int())  # [B, L]: valid tokens at or before each position
    from_end = upto[:, -1:] - upto + valid.int()  # valid tokens at or after each position
    return valid & ((upto <= sink) | (from_end <= recent))


def mark_forced(dist: torch.Tensor, sink: int, recent: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Distance -1 for the forced tokens (see forced_mask), so that selection keeps them; dist [B, Hq, L].

    With `valid` ([B, L] bool), the invalid tokens get the distance EXCLUDED.
    """
    if sink == 0 and recent == 0 and valid is None:
        return dist
    forced = forced_mask(dist.shape[-1], sink, recent, valid, dist.device)  # [L], or [B, L] with valid
    if valid is None:
        return dist.masked_fill(forced, -1)
    return dist.masked_fill(forced[:, None, :], -1).masked_fill(~valid[:, None, :], EXCLUDED)


def drop_excluded(idx: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Turn selected indices of EXCLUDED tokens into -1 (empty slots)."""
    return idx.masked_fill(dist.gather(-1, idx) == EXCLUDED, -1)


def select(dist: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices of the min(budget, L) smallest distances: dist [B, Hq, L] -> int64 [B, Hq, K], unsorted."""
    k = min(budget, dist.shape[-1])
    return dist.topk(k, dim=-1, largest=False, sorted=False).indices


def sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor, scale: float
) -> torch.Tensor:
    """Exact softmax attention of each query head over its selected rows of k, v.

    q [B, Hq, d], k/v [B, Hkv, L, d], idx [B, Hq, K] int -> [B, Hq, d] in q's dtype.
    An index of -1 marks an empty slot that gets no weight.
    """
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    b, hq, _ = idx.shape
    # query head h reads KV head h // (Hq // Hkv); indexing reads the rows in place (k may be a strided view)
    batch = torch.arange(b, device=idx.device)[:, None, None]
    heads = (torch.arange(hq, device=idx.device) // (hq // k.shape[1]))[None, :, None]
    rows = idx.long().clamp(min=0)
    k_sel = k[batch, heads, rows].to(compute)  # [B, Hq, K, d]
    v_sel = v[batch, heads, rows].to(compute)
    scores = torch.einsum("bhd,bhkd->bhk", q.to(compute), k_sel) * scale
    probs = scores.masked_fill(idx < 0, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhk,bhkd->bhd", probs, v_sel).to(q.dtype)


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Full softmax attention of one query token: q [B, Hq, d], k/v [B, Hkv, L, d] -> [B, Hq, d].

    `valid` ([B, L] bool) leaves out padded tokens.
    """
    all_rows = torch.arange(k.shape[2], device=q.device).expand(q.shape[0], q.shape[1], -1)
    if valid is not None:
        all_rows = all_rows.masked_fill(~valid[:, None, :], -1)
    return sparse_attention(q, k, v, all_rows, scale)
