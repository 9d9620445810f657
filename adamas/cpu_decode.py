"""The CPU decode step of an Adamas layer in one compiled call (numba): encode, score, select, attend.

One call per sparse layer and step does what adamas.reference spells out stage by stage:
- writes the codes of the step's new keys (`encode_at`), so the cache layer runs no encode of its own;
- Hadamard-transforms and bucketizes each query head (a fast Walsh–Hadamard transform, d log d adds);
- scores every cached token by the L1 distance of its 2-bit code to the query's, read straight from the
  packed codes: for codes a, b in 0..3 with thermometer bits t(c) = (c >= 1, c >= 2, c >= 3),
  |a - b| = popcount(t(a) XOR t(b)), and a packed word yields its keys' thermometer bits in a few
  bit operations, shared by the GQA group's query heads;
- selects by counting: a distance is an integer in 0..3d, so one histogram per query head gives the
  exact threshold and one pass collects the tokens below it and, in token order, those at it (the
  reference's stable ranking: forced tokens first, then by distance, ties to the earliest token);
- attends exactly over the selected rows, reading them in place from the cache's K and V buffers.

numba compiles on first use and caches the machine code on disk, so only the first run on a machine
pays (seconds); `warm()` does it up front, at model load. Without numba, `available()` is False and
the CPU backend runs its numpy stages (adamas.cpu).

Shapes: B batch, Hq query heads, Hkv key/value heads, G = Hq // Hkv, L cached tokens, d head_dim,
K = min(budget, L) selected tokens. Query head h reads KV head h // G.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np
import torch

__all__ = ["LayerBuffers", "available", "decode_step", "encode_rows", "supports", "warm"]

_KV_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
"""K/V dtypes the compiled step reads in place (bf16 as its bits, see _as_numpy_dtype)."""


@functools.cache
def available() -> bool:
    """Whether numba is installed, so that the compiled step can run (looked up once: a step asks every time)."""
    return importlib.util.find_spec("numba") is not None


def supports(k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the compiled step reads these K and V in place: fp32, fp64 or bf16 on the CPU, numba installed."""
    return k.device.type == "cpu" and k.dtype in _KV_DTYPES and v.dtype == k.dtype and available()


@functools.cache
def _kernels():
    """The compiled functions, built (or loaded from numba's disk cache) on first use."""
    from adamas import _cpu_kernels

    return _cpu_kernels


def _rows(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """x [B, H, L, n] as a C-contiguous row matrix [N, n], the row of token 0 of each (batch, head): int64 [B, H],
    and whether the matrix is x's own memory (else a copy: its rows lie on no common stride)."""
    b, h, length, n = x.shape
    s_batch, s_head, s_row, s_col = (0 if size == 1 else s for size, s in zip(x.shape, x.stride(), strict=True))
    in_place = s_col in (0, 1) and s_row in (0, n) and s_batch % n == 0 and s_head % n == 0
    if not in_place:
        x = x.contiguous()
        s_batch, s_head = h * length * n, length * n
    first = np.arange(b)[:, None] * (s_batch // n) + np.arange(h)[None, :] * (s_head // n)  # [B, H]
    matrix = x.as_strided((int(first.max()) + length, n), (n, 1))
    return matrix.detach().numpy(), first.astype(np.int64), in_place


def _as_numpy_dtype(x: torch.Tensor) -> torch.Tensor:
    """bf16 as its bits (uint16: numpy has no bf16; the kernels widen them), other dtypes as they are."""
    return x.view(torch.uint16) if x.dtype == torch.bfloat16 else x


def _words(codes: np.ndarray) -> np.ndarray:
    """Packed code bytes [N, d // 4] as little-endian words: uint64 (32 dims each), uint32 at d = 16."""
    return codes.view(np.uint64 if codes.shape[1] % 8 == 0 else np.uint32)


def _compute_dtype(x: torch.Tensor) -> type:
    return np.float64 if x.dtype == torch.float64 else np.float32


class LayerBuffers:
    """A cache layer's K, V and code buffers [B, Hkv, C, ...] as the compiled step reads them, made once.

    A cache layer keeps one for as long as its buffers stay (a fixed-capacity cache: for good), so a
    step pays for no re-reading of their layout. `thresholds` are the edges the codes are made with:
    three floats, or an fp32 [Hkv, 3] tensor read in place (a cache refits it with copy_).
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, k_codes: torch.Tensor, thresholds) -> None:
        self.keys, self.k_first, _ = _rows(_as_numpy_dtype(k))
        self.values, self.v_first, _ = _rows(_as_numpy_dtype(v))
        codes, self.code_first, self.codes_in_place = _rows(k_codes)
        self.words = _words(codes)
        self.compute = _compute_dtype(k)
        if isinstance(thresholds, torch.Tensor):  # [Hkv, 3] fp32, shared with the tensor
            self.edges = thresholds.detach().to(torch.float32).numpy()
        else:
            self.edges = np.broadcast_to(np.asarray(thresholds, dtype=self.compute), (k.shape[1], 3)).copy()
        self.shape = tuple(k.shape)

    def step(
        self,
        q: torch.Tensor,
        budget: int,
        sink: int,
        recent: int,
        scale: float,
        valid: torch.Tensor | None = None,
        encode_at: torch.Tensor | None = None,
        length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """decode_step over the first `length` tokens of the buffers (all of them for None)."""
        length = self.shape[2] if length is None else length
        mask = _NO_MASK if valid is None else np.ascontiguousarray(valid.numpy())
        at = _NOWHERE if encode_at is None else self._positions(encode_at)
        return self._run(q, budget, sink, recent, scale, mask, at, length)

    def _run(self, q, budget, sink, recent, scale, mask, at, length) -> tuple[torch.Tensor, torch.Tensor]:
        """The compiled call of `step`, its mask and positions made numpy arrays."""
        b, hq, d = q.shape
        compute = torch.float64 if self.compute is np.float64 else torch.float32
        queries = np.ascontiguousarray((q if q.dtype == compute else q.to(compute)).detach().numpy())  # [B, Hq, d]
        out = np.empty((b, hq, d), dtype=self.compute)
        idx = np.empty((b, hq, min(budget, length)), dtype=np.int64)
        _kernels().decode_step(
            queries, self.keys, self.values, self.words, self.edges, self.k_first, self.v_first, self.code_first,
            length, mask, budget, sink, recent, scale, at, out, idx,
        )  # fmt: skip
        attended = torch.from_numpy(out)
        return (attended if attended.dtype == q.dtype else attended.to(q.dtype)), torch.from_numpy(idx)

    def encode(self, positions: torch.Tensor) -> None:
        """Write the codes of the keys at `positions` (int64 [T]) into the code buffer."""
        scratch = np.empty(self.keys.shape[1], dtype=self.compute)
        at = self._positions(positions)
        _kernels().encode_rows(self.keys, self.words, self.edges, self.k_first, self.code_first, at, scratch)

    def _positions(self, positions: torch.Tensor) -> np.ndarray:
        """Positions whose codes are to be written, once it is sure that they land in the caller's code buffer."""
        if not self.codes_in_place:
            raise ValueError(
                "k_codes' rows lie on no common stride, so codes written for encode_at would land in a copy: "
                "pass codes laid out [B, Hkv, L, d // 4] with contiguous rows"
            )
        return positions.numpy()


_NO_MASK = np.zeros((1, 0), dtype=np.bool_)
_NOWHERE = np.zeros(0, dtype=np.int64)


def decode_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_codes: torch.Tensor,
    thresholds: tuple[float, float, float] | torch.Tensor,
    budget: int,
    sink: int,
    recent: int,
    scale: float,
    valid: torch.Tensor | None = None,
    encode_at: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adamas' decode step in one compiled call: (out [B, Hq, d] in q's dtype, idx int64 [B, Hq, K]).

    q [B, Hq, d]; k, v [B, Hkv, L, d] fp32, fp64 or bf16 (see `supports`); k_codes [B, Hkv, L, d // 4]
    uint8; thresholds three floats or [Hkv, 3], the edges k_codes were made with; valid [B, L] bool
    or None. `encode_at` (int64 [T] token positions, or None) names keys whose codes are written into
    k_codes first. idx lists each head's tokens in increasing order; a slot is -1 where fewer than K
    valid tokens exist. Trusts its inputs, as adamas.cpu does; adamas.ops validates them.
    """
    return LayerBuffers(k, v, k_codes, thresholds).step(q, budget, sink, recent, scale, valid, encode_at)


def encode_rows(k: torch.Tensor, k_codes: torch.Tensor, thresholds, positions: torch.Tensor) -> None:
    """Write the codes of the keys at `positions` (int64 [T]) of k [B, Hkv, L, d] into k_codes, in place."""
    LayerBuffers(k, k, k_codes, thresholds).encode(positions)


def warm(head_dim: int = 64, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> None:
    """Compile (or load from numba's disk cache) the step for `head_dim` and the K/V `dtypes` it reads.

    A tiny step of each, as a cache layer runs it (the public step and its spies see none of them); a
    no-op without numba, and for a head_dim or dtype the step does not take.
    """
    if not available() or head_dim < 16 or head_dim > 256 or head_dim & (head_dim - 1):
        return
    for dtype in (dtype for dtype in dtypes if dtype in _KV_DTYPES):
        gen = torch.Generator().manual_seed(0)
        k = torch.randn(1, 1, 4, head_dim, generator=gen).to(dtype)
        codes = torch.zeros(1, 1, 4, head_dim // 4, dtype=torch.uint8)
        q = torch.randn(1, 1, head_dim, generator=gen).to(dtype)
        buffers = LayerBuffers(k, k, codes, (-1.0, 0.0, 1.0))
        at = torch.tensor([3])
        buffers.encode(at)
        buffers._run(q, 2, 0, 1, 1 / math.sqrt(head_dim), _NO_MASK, at.numpy(), 4)
