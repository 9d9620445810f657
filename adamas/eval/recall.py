"""Recall@budget per layer: the share of the true top-K attention mass that the selection kept.

A `RecallMeter` activates an `adamas.tracing.Tracer` (no per-head scores kept) while decode
steps run; after each step, `record` adds the step's recall [layers, Hq] (K = the tokens
the step selected, NaN on dense layers and under the "full" selector) to running sums.
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel

from adamas.tracing import ACTIVE_TRACER, Tracer


class RecallMeter:
    """Mean recall per layer over the decode steps run inside `with meter:` (batch row 0, all heads)."""

    def __init__(self, model: PreTrainedModel, max_len: int) -> None:
        layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
        self.tracer = Tracer(layers, heads, max_len, pairs=())
        self.total = torch.zeros(layers, dtype=torch.float64)  # sum over steps and heads, per layer
        self.count = torch.zeros(layers, dtype=torch.int64)  # recorded (step, head) pairs, per layer

    def __enter__(self) -> RecallMeter:
        self._token = ACTIVE_TRACER.set(self.tracer)
        return self

    def __exit__(self, *exc: object) -> None:
        ACTIVE_TRACER.reset(self._token)

    def record(self) -> None:
        """Close the current decode step and add its recall."""
        recall = self.tracer.finish_step().recall.double()  # [layers, Hq]
        seen = ~recall.isnan()
        self.total += recall.nan_to_num(0.0).sum(-1)
        self.count += seen.sum(-1)

    def per_layer(self) -> list[float | None]:
        """Mean recall of each layer, None where no step selected (dense layers, "full")."""
        return [float(t / c) if c else None for t, c in zip(self.total, self.count, strict=True)]

    def mean(self) -> float:
        """Mean over the layers that selected (NaN when none did)."""
        values = [r for r in self.per_layer() if r is not None]
        return sum(values) / len(values) if values else math.nan
