"""Top-k selection of the smallest Manhattan distances.

For now this is `torch.topk`; a histogram select over the small integer distances
(0 .. 3d) is the planned replacement.
"""

from __future__ import annotations

import torch


def select(dist: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices of the min(budget, L) smallest distances: dist [B, Hq, L] -> int64 [B, Hq, K], unsorted."""
    k = min(budget, dist.shape[-1])
    return torch.topk(dist, k, dim=-1, largest=False, sorted=False).indices
