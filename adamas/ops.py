"""The public Adamas stages: validate at the boundary, then run Triton or the PyTorch reference.

Every function takes `backend="auto"` (Triton on CUDA tensors, adamas.cpu on CPU tensors),
`"torch"` (the reference), `"cpu"` or `"triton"` (on the CPU only with TRITON_INTERPRET=1).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import torch

from adamas import cpu, cpu_decode, reference, selectors
from adamas.checks import (
    check_codes,
    check_float,
    check_head_dim,
    check_head_thresholds,
    check_heads,
    check_match,
    check_qkv,
    check_same,
    check_scale,
    check_tensor,
    check_valid,
    resolve_backend,
)
from adamas.config import (
    ADAMAS_SELECTORS,
    CALIBRATION_QUANTILES,
    PAPER_THRESHOLDS,
    QUEST_PAGE,
    STREAMING_SINK,
    AdamasConfig,
    check_int,
    check_quantiles,
    check_thresholds,
    max_code_distance,
)

F = TypeVar("F", bound=Callable)


def _on_input_device(fn: F) -> F:
    """Run `fn` with its first argument's CUDA device as the current one.

    Triton launches on the current device, so without this a layer whose tensors sit on
    cuda:1 (a model spread over GPUs) would launch its kernels on cuda:0.
    """

    @functools.wraps(fn)
    def run(x, *args, **kwargs):
        if not isinstance(x, torch.Tensor) or x.device.type != "cuda":
            return fn(x, *args, **kwargs)
        with torch.cuda.device(x.device):
            return fn(x, *args, **kwargs)

    return run


def _impl(backend: str, device: torch.device) -> ModuleType:
    """The module whose stage functions run: adamas.kernels, adamas.cpu or adamas.reference."""
    resolved = resolve_backend(backend, device)
    if resolved == "triton":
        return importlib.import_module("adamas.kernels")
    return cpu if resolved == "cpu" else reference


def _check_floats(x: torch.Tensor, name: str = "x") -> None:
    check_tensor(name, x)
    check_float(name, x)
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least one dim (the head_dim), got a scalar")
    check_head_dim(f"{name}.shape[-1] (the head_dim)", x.shape[-1])


@_on_input_device
def hadamard(x: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Orthonormal Walsh–Hadamard transform over the last dim, H x / sqrt(d): [..., d] -> [..., d].

    d a power of two from 16 to 256; fp32, fp16 or bf16; the output keeps x's dtype.
    """
    _check_floats(x)
    return _impl(backend, x.device).hadamard(x)


@_on_input_device
def encode(
    x: torch.Tensor,
    thresholds: tuple[float, float, float] | str | torch.Tensor = PAPER_THRESHOLDS,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """2-bit codes of hadamard(x): x [..., d] float -> uint8 [..., d // 4].

    Each element's code is its bucket 0..3 under three increasing `thresholds`
    ("paper" = (-10, 0, 10), or a float tensor [H, 3] with one row per head of x
    [B, H, d] or [B, H, L, d], e.g. from `calibrate`), numbered as
    torch.bucketize(right=False) does; dim j's code sits in byte j // 4 at bit 2 * (j % 4).
    """
    _check_floats(x)
    edges = (
        check_head_thresholds(thresholds, x) if isinstance(thresholds, torch.Tensor) else check_thresholds(thresholds)
    )
    return _impl(backend, x.device).encode(x, edges)


def calibrate(k: torch.Tensor, quantiles: tuple[float, float, float] = CALIBRATION_QUANTILES) -> torch.Tensor:
    """Per-KV-head thresholds from keys: the `quantiles` of hadamard(k)'s values, k [B, Hkv, L, d] -> fp32 [Hkv, 3]."""
    check_tensor("k", k, 4)
    check_float("k", k)
    check_head_dim("k.shape[-1] (the head_dim)", k.shape[-1])
    quantiles = check_quantiles(quantiles, "quantiles")
    if k.shape[2] < 1:
        raise ValueError(f"k must hold at least one token, got shape {tuple(k.shape)}")
    return reference.calibrate(k, quantiles)


def unpack(codes: torch.Tensor, d: int) -> torch.Tensor:
    """Integer codes 0..3 from packed bytes: uint8 [..., d // 4] -> uint8 [..., d]."""
    check_tensor("codes", codes)
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8 packed codes, got {codes.dtype}")
    check_int("d", d, 1)
    check_head_dim("d", d)
    if codes.ndim < 1 or codes.shape[-1] * 4 != d:
        raise ValueError(f"codes must have a last dim of d // 4 = {d // 4}, got shape {tuple(codes.shape)}")
    return reference.unpack(codes)


@_on_input_device
def manhattan(q_codes: torch.Tensor, k_codes: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """L1 distance of each query head's code to every key code: int32 [B, Hq, L].

    q_codes [B, Hq, d // 4] uint8, k_codes [B, Hkv, L, d // 4] uint8; query head h
    reads KV head h // (Hq // Hkv).
    """
    check_codes("q_codes", q_codes, 3)
    check_codes("k_codes", k_codes, 4)
    check_same("device", q_codes=q_codes, k_codes=k_codes)
    check_match("k_codes batch", k_codes.shape[0], q_codes.shape[0], "q_codes batch")
    check_match("k_codes.shape[-1]", k_codes.shape[-1], q_codes.shape[-1], "q_codes.shape[-1]")
    check_heads(q_codes.shape[1], k_codes.shape[1])
    impl = _impl(backend, q_codes.device)
    if impl is not reference:
        q_codes, k_codes = _last_dim_contiguous(q_codes), _last_dim_contiguous(k_codes)
    return impl.manhattan(q_codes, k_codes)


@_on_input_device
def select(dist: torch.Tensor, budget: int, *, backend: str = "auto") -> torch.Tensor:
    """Indices of the min(budget, L) smallest distances per row: dist [B, Hq, L] -> int64 [B, Hq, K].

    No index repeats; ties are broken any way; the order within a row is unspecified.
    """
    check_tensor("dist", dist, 3)
    if dist.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"dist must hold real numbers, got {dist.dtype}")
    check_int("budget", budget, 1)
    if dist.shape[-1] < 1:
        raise ValueError(f"dist must score at least one token, got shape {tuple(dist.shape)}")
    return _impl(backend, dist.device).select(dist, budget)


@_on_input_device
def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    scale: float | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Exact softmax attention of q over the selected rows of k and v: [B, Hq, d], q's dtype.

    q [B, Hq, d]; k, v [B, Hkv, L, d]; idx [B, Hq, K] int32/int64 with values in [0, L),
    or -1 for an empty slot that gets no weight (each row needs one real index; checked on
    the CPU, trusted on the GPU, where a check would cost a sync);
    scale defaults to 1 / sqrt(d). Accumulates in fp32.
    """
    check_qkv(q, k, v)
    check_tensor("idx", idx, 3)
    if idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"idx must be int32 or int64, got {idx.dtype}")
    check_same("device", q=q, idx=idx)
    check_match("idx batch", idx.shape[0], q.shape[0], "q batch")
    check_match("idx heads", idx.shape[1], q.shape[1], "q heads")
    if idx.shape[-1] < 1:
        raise ValueError(f"idx must select at least one row, got shape {tuple(idx.shape)}")
    if idx.device.type == "cpu" and (idx.min() < -1 or idx.max() >= k.shape[2] or (idx.max(-1).values < 0).any()):
        raise ValueError(
            f"idx values must lie in [0, L = {k.shape[2]}) or be -1, with a real one in every row; "
            f"got {idx.min()}..{idx.max()}"
        )
    scale = check_scale(scale, q.shape[-1])
    impl = _impl(backend, q.device)
    if impl is not reference:
        q, k, v, idx = (_last_dim_contiguous(t) for t in (q, k, v, idx))
    return impl.sparse_attention(q, k, v, idx, scale)


@_on_input_device
def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    valid: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Exact softmax attention of one decode query over every valid key: [B, Hq, d], q's dtype.

    q [B, Hq, d]; k, v [B, Hkv, L, d]; `valid` ([B, L] bool) leaves out masked tokens, and
    each row needs one valid token (checked on the CPU, trusted on the GPU). Scale defaults
    to 1 / sqrt(d). Accumulates in fp32. On the GPU, a split-K kernel that reads each K/V
    tile once per GQA group: the decode of a masked (fixed-capacity) cache at flash speed.
    """
    check_qkv(q, k, v)
    scale = check_scale(scale, q.shape[-1])
    if valid is not None:
        check_valid(valid, q, k)
        if valid.device.type == "cpu" and not valid.any(-1).all():
            raise ValueError("valid must mark at least one token in every batch row")
    impl = _impl(backend, q.device)
    if impl is not reference:
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    return impl.dense_attention(q, k, v, scale, valid)


@dataclass(frozen=True)
class FusedSelection:
    """When a Triton decode step selects with kernels.nearest (fused) rather than kernels.manhattan + select.

    Both choose the same set. The fused one wins or ties up to budget `max_budget` at every length,
    and at every budget from `min_tokens` keys (batch x context); below that, larger budgets make
    its finish loop over a large tie bin, and the two kernels win or lose by little
    (benchmarks/results/archive/attention_h200_budgets.json).
    """

    max_budget: int = 256
    min_tokens: int = 65536

    def __post_init__(self) -> None:
        check_int("max_budget", self.max_budget, 0)
        check_int("min_tokens", self.min_tokens, 0)


def uses_fused_selection(budget: int, tokens: int, rule: FusedSelection = FusedSelection()) -> bool:
    """Whether a step of `budget` over `tokens` keys (batch x context) takes kernels.nearest under `rule`."""
    return budget <= rule.max_budget or tokens >= rule.min_tokens


@_on_input_device
def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_codes: torch.Tensor,
    config: AdamasConfig,
    layer_idx: int | None = None,
    scale: float | None = None,
    return_indices: bool = False,
    valid: torch.Tensor | None = None,
    thresholds: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
    fused_selection: FusedSelection = FusedSelection(),
    check_inputs: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """One Adamas decode step: encode q, score all keys by code distance, select, attend.

    q [B, Hq, d]; k, v [B, Hkv, L, d]; k_codes [B, Hkv, L, d // 4] uint8 (from `encode(k)`)
    -> [B, Hq, d] in q's dtype. Layers in config.dense_layers (when layer_idx is given)
    run full attention; the first config.sink and last config.recent tokens are always kept.
    config.selector swaps Adamas' choice of tokens for a baseline's (adamas.selectors), or
    for all tokens ("full"); the attention over them is the same.
    With return_indices, also the selected int64 [B, Hq, K] (None on a dense layer): K is
    min(budget, L), or for Quest the tokens of its max(1, budget // 16) pages.
    `valid` ([B, L] bool, False for padding) keeps padded tokens out; their slots in the
    returned indices are -1 when fewer valid tokens than the budget exist.
    `lengths` (int [B], or [1] for every row, on q's device) says instead that row b's valid
    tokens are its first lengths[b]: a fixed-capacity cache's written slots. The Triton step
    then reads no mask and counts nothing (the values stay on the device: no sync).
    `thresholds` (fp32 [Hkv, 3], the ones k_codes were made with) is required when
    config.thresholds is "calibrated" and overrides config.thresholds otherwise.
    On the CPU backend, Adamas' step over fp32, fp64 or bf16 K/V is one compiled call
    (adamas.cpu_decode); it lists each head's tokens in increasing order.
    `fused_selection` says when the Triton backend selects in one fused op (the same tokens).
    `check_inputs=False` trusts the inputs: for tensors a cache layer made and checked as it
    made them, whose checks would be a noticeable share of a sparse layer's step on a CPU.
    """
    if check_inputs:
        _check_decode_inputs(q, k, v, k_codes, config, valid, thresholds, fused_selection, lengths)
        scale = check_scale(scale, q.shape[-1])
    elif scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    impl = _impl(config.backend, q.device)
    dense = config.selector == "full" or (layer_idx is not None and layer_idx in config.dense_layers)
    if lengths is not None and (dense or impl in (reference, cpu) or config.selector not in ADAMAS_SELECTORS):
        valid, lengths = prefix_valid(lengths, q.shape[0], k.shape[2]), None  # the other paths read a mask
    if impl is not reference:
        q, k, v, k_codes = (_last_dim_contiguous(t) for t in (q, k, v, k_codes))
    if dense:
        out = impl.dense_attention(q, k, v, scale, valid)
        return (out, None) if return_indices else out
    if config.selector in ADAMAS_SELECTORS and impl is cpu and cpu_decode.supports(k, v):
        edges = query_thresholds(config, thresholds, q, k) if thresholds is None else thresholds
        out, idx = cpu_decode.decode_step(
            q, k, v, k_codes, edges, config.budget, config.sink, config.recent, scale, valid
        )
        return (out, idx) if return_indices else out
    if config.selector in ADAMAS_SELECTORS:
        idx = _adamas_select(impl, q, k, k_codes, config, valid, thresholds, fused_selection, lengths)
    else:
        idx = _baseline_select(q, k, config, valid)
    out = impl.sparse_attention(q, k, v, idx, scale)
    return (out, idx) if return_indices else out


def prefix_valid(lengths: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """The valid mask [B, L] of rows whose valid tokens are their first lengths[b] (lengths [B] or [1])."""
    return (torch.arange(length, device=lengths.device) < lengths.view(-1, 1)).expand(batch, length)


def _check_decode_inputs(q, k, v, k_codes, config, valid, thresholds, fused_selection, lengths) -> None:
    """decode_attention's checks, but for the scale's."""
    if not isinstance(config, AdamasConfig):
        raise TypeError(f"config must be an AdamasConfig, got {type(config).__name__}")
    if not isinstance(fused_selection, FusedSelection):
        raise TypeError(f"fused_selection must be a FusedSelection, got {type(fused_selection).__name__}")
    check_qkv(q, k, v)
    check_codes("k_codes", k_codes, 4)
    check_same("device", q=q, k_codes=k_codes)
    if tuple(k_codes.shape) != (*k.shape[:3], k.shape[3] // 4):
        raise ValueError(f"k_codes must have shape {(*k.shape[:3], k.shape[3] // 4)}, got {tuple(k_codes.shape)}")
    if valid is not None:
        check_valid(valid, q, k)
    if thresholds is not None:
        check_head_thresholds(thresholds, k)
    if lengths is not None:
        check_tensor("lengths", lengths, 1)
        if lengths.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"lengths must be int32 or int64, got {lengths.dtype}")
        if lengths.numel() not in (1, q.shape[0]):
            raise ValueError(f"lengths must hold 1 or B = {q.shape[0]} values, got shape {tuple(lengths.shape)}")
        check_same("device", q=q, lengths=lengths)
        if valid is not None:
            raise ValueError("pass valid or lengths, not both")


def _adamas_select(impl, q, k, k_codes, config, valid, thresholds, fused_selection, lengths=None) -> torch.Tensor:
    """Adamas' choice: the tokens whose key codes lie nearest the query's, [B, Hq, min(budget, L)]."""
    b, hq, d = q.shape
    tokens = k_codes.shape[0] * k_codes.shape[2]
    fused = impl is not reference and impl is not cpu and uses_fused_selection(config.budget, tokens, fused_selection)
    if fused:  # the query encoded inside the scan: distances, forced and padded tokens, selection in two kernels
        edges = query_thresholds(config, None, q, k) if thresholds is None else thresholds.to(q.device)
        return impl.nearest_query(q, edges, k_codes, config.budget, config.sink, config.recent, valid, lengths=lengths)
    if lengths is not None:
        valid = prefix_valid(lengths, b, k.shape[2])
    if thresholds is None:  # config's three edges for every head
        edges, grouped = query_thresholds(config, thresholds, q, k), q
    else:  # each GQA group's query heads encoded under its KV head's row: no per-step spread of the edges
        edges, grouped = thresholds.to(q.device), q.reshape(b, k.shape[1], hq // k.shape[1], d)  # [B, Hkv, G, d]
    if impl is cpu:  # the query's bit-planes (no packed codes), then one fused selection
        q_planes = cpu.query_planes(grouped, edges).reshape(b, hq, -1)  # [B, Hq, P]
        return cpu.nearest(None, k_codes, config.budget, config.sink, config.recent, valid, q_planes=q_planes)
    q_codes = impl.encode(grouped, edges).reshape(b, hq, -1)  # [B, Hq, d // 4]
    dist = impl.manhattan(q_codes, k_codes)  # [B, Hq, L]
    dist = reference.mark_forced(dist, config.sink, config.recent, valid)
    if impl is reference:
        idx = reference.select(dist, config.budget)  # [B, Hq, min(budget, L)]
    else:  # the histogram needs the distances' range: 0 .. 3d (no host sync to find it)
        idx = impl.select(dist, config.budget, max_distance=max_code_distance(q.shape[-1]))
    return reference.drop_excluded(idx, dist) if valid is not None else idx


def _baseline_select(q, k, config: AdamasConfig, valid) -> torch.Tensor:
    """The tokens a baseline selector (quest, streaming, oracle) picks, [B, Hq, K] with -1 for empty slots."""
    if config.selector == "quest":
        return selectors.quest_select(q, k, config.budget, QUEST_PAGE, valid)
    if config.selector == "streaming":
        return selectors.streaming_select(q, k, config.budget, config.sink or STREAMING_SINK, valid)
    return selectors.oracle_select(q, k, config.budget, config.sink, config.recent, valid)


def query_thresholds(
    config: AdamasConfig, thresholds: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor
) -> tuple[float, float, float] | torch.Tensor:
    """The query's bucket edges: config.thresholds, or the KV heads' `thresholds` [Hkv, 3] spread to [Hq, 3]."""
    if thresholds is None:
        if config.thresholds == "calibrated":
            raise ValueError("config.thresholds is 'calibrated': pass the keys' thresholds (adamas.calibrate(k))")
        return config.thresholds
    check_head_thresholds(thresholds, k)
    return thresholds.to(q.device).repeat_interleave(q.shape[1] // k.shape[1], dim=0)  # [Hq, 3]


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Kernels index rows by stride but read each row as one run of memory."""
    return x if x.stride(-1) == 1 else x.contiguous()
