"""Synthetic decode problems: one query step over Gaussian keys with planted relevant tokens.

No language model is involved. Keys get a few large outlier channels, as real LLM keys
do (the reason the Hadamard transform helps), and are scaled so that their Hadamard
transform falls around the paper's thresholds (-10, 0, 10). For every KV head a few
planted keys point along its query group's direction, so they earn high true attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adamas import AdamasConfig, decode_attention, encode, manhattan, select
from adamas.checks import FLOAT_DTYPES, check_head_dim, check_heads
from adamas.config import check_int
from adamas.reference import dense_attention

KEY_STD = 9.0
"""Per-element RMS of keys and queries: their Hadamard transforms cross ±10 about a quarter of the time."""
OUTLIER_CHANNELS = 4
OUTLIER_GAIN = 6.0
"""Outlier channels have this many times the spread of the others, plus a bias of the same size."""
QUERY_SPREAD = 0.5
"""How far each query head strays from its group's shared direction (relative RMS)."""
PLANTED_ALIGNMENT = 0.8
"""Cosine between a planted key and its group's query direction."""


@dataclass(frozen=True, eq=False)
class SyntheticProblem:
    """One decode step: q [1, Hq, d], k and v [1, Hkv, L, d], and the planted token positions."""

    q: torch.Tensor  # [1, Hq, d]
    k: torch.Tensor  # [1, Hkv, L, d]
    v: torch.Tensor  # [1, Hkv, L, d]
    planted: tuple[int, ...]

    @property
    def length(self) -> int:
        """The number of cached tokens L."""
        return self.k.shape[2]


def _key_like(shape: tuple[int, ...], std: torch.Tensor, bias: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian vectors with the outlier channel profile, rescaled to an element RMS of KEY_STD."""
    x = torch.randn(shape, generator=gen) * std + bias
    return x * (KEY_STD / x.pow(2).mean(dim=-1, keepdim=True).sqrt())


def synthetic_decode_problem(
    length: int,
    n_relevant: int,
    head_dim: int = 128,
    q_heads: int = 8,
    kv_heads: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SyntheticProblem:
    """A seeded decode problem whose `n_relevant` planted tokens (same positions in every KV head) stand out."""
    check_int("length", length, 1)
    check_int("n_relevant", n_relevant, 0)
    if n_relevant > length:
        raise ValueError(f"n_relevant must not exceed length ({length}), got {n_relevant}")
    check_int("head_dim", head_dim, 1)
    check_head_dim("head_dim", head_dim)
    check_int("q_heads", q_heads, 1)
    check_int("kv_heads", kv_heads, 1)
    check_heads(q_heads, kv_heads)
    check_int("seed", seed, 0)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")

    gen = torch.Generator().manual_seed(seed)
    outliers = torch.randperm(head_dim, generator=gen)[:OUTLIER_CHANNELS]
    std = torch.ones(head_dim)
    std[outliers] = OUTLIER_GAIN
    bias = torch.zeros(head_dim)
    bias[outliers] = OUTLIER_GAIN * torch.randn(len(outliers), generator=gen).sign()

    k = _key_like((1, kv_heads, length, head_dim), std, bias, gen)
    direction = _key_like((1, kv_heads, 1, head_dim), std, bias, gen)  # one shared direction per query group
    group = q_heads // kv_heads
    stray = torch.randn(1, kv_heads, group, head_dim, generator=gen) * KEY_STD
    q = (direction + QUERY_SPREAD * stray).flatten(1, 2)  # [1, Hq, d]
    q = q * (KEY_STD / q.pow(2).mean(dim=-1, keepdim=True).sqrt())

    planted = torch.randperm(length, generator=gen)[:n_relevant].sort().values
    noise = k[:, :, planted]  # [1, Hkv, n_relevant, d], already key-like
    k[:, :, planted] = PLANTED_ALIGNMENT * direction + math.sqrt(1 - PLANTED_ALIGNMENT**2) * noise
    v = torch.randn(1, kv_heads, length, head_dim, generator=gen)
    return SyntheticProblem(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), planted=tuple(planted.tolist()))


def _scores(
    problem: SyntheticProblem, thresholds: tuple[float, float, float] | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Code distances int32 [1, Hq, L] and true scores q·k/sqrt(d) fp32 [1, Hq, L]."""
    q, k = problem.q, problem.k
    dist = manhattan(encode(q, thresholds), encode(k, thresholds))
    group = q.shape[1] // k.shape[1]
    keys = k.float().repeat_interleave(group, dim=1)  # [1, Hq, L, d]
    true = torch.einsum("bhd,bhld->bhl", q.float(), keys) / math.sqrt(q.shape[-1])
    return dist, true


def _recall(dist: torch.Tensor, true: torch.Tensor, budget: int) -> tuple[float, torch.Tensor]:
    """Mean over heads of the share of the true top-budget tokens that code selection keeps, and that selection."""
    chosen = select(dist, budget)  # [1, Hq, K]
    best = true.topk(chosen.shape[-1], dim=-1).indices  # [1, Hq, K]
    hits = (chosen[..., :, None] == best[..., None, :]).any(dim=-1).sum(dim=-1)  # [1, Hq]
    return (hits.float() / chosen.shape[-1]).mean().item(), chosen


def recall_curve(
    problem: SyntheticProblem, budgets: list[int], thresholds: tuple[float, float, float] | str = "paper"
) -> list[float]:
    """Recall@budget (averaged over heads) for each of `budgets`, scoring the keys once."""
    if len(budgets) == 0:
        raise ValueError("budgets must not be empty")
    configs = [AdamasConfig(budget=b, thresholds=thresholds, dense_layers=()) for b in budgets]
    dist, true = _scores(problem, configs[0].thresholds)
    return [_recall(dist, true, c.budget)[0] for c in configs]


def selection_report(
    problem: SyntheticProblem, budget: int, thresholds: tuple[float, float, float] | str = "paper"
) -> dict:
    """How well Adamas selection at `budget` matches true attention, as plain lists and numbers.

    Keys: "estimated" (negated code distance) and "true" (q·k/sqrt(d)) over all L tokens,
    "selected" (sorted indices) and "planted_selected" — all for query head 0; "recall"
    (mean over heads), "output_error" (relative L2 error of decode_attention vs dense
    attention), "planted", "budget" (tokens actually selected) and "length".
    """
    if not isinstance(problem, SyntheticProblem):
        raise TypeError(f"problem must be a SyntheticProblem, got {type(problem).__name__}")
    config = AdamasConfig(budget=budget, thresholds=thresholds, dense_layers=())
    dist, true = _scores(problem, config.thresholds)
    recall, chosen = _recall(dist, true, config.budget)
    q, k, v = problem.q, problem.k, problem.v
    sparse = decode_attention(q, k, v, encode(k, config.thresholds), config).float()
    dense = dense_attention(q, k, v, 1.0 / math.sqrt(q.shape[-1])).float()
    error = ((sparse - dense).norm() / dense.norm().clamp_min(1e-12)).item()
    selected = sorted(chosen[0, 0].tolist())
    return {
        "estimated": (-dist[0, 0].float()).tolist(),
        "true": true[0, 0].tolist(),
        "selected": selected,
        "recall": recall,
        "output_error": error,
        "planted_selected": len(set(selected) & set(problem.planted)),
        "planted": len(problem.planted),
        "budget": len(selected),
        "length": problem.length,
    }
