"""The one source of Adamas defaults: a frozen, validated configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PAPER_THRESHOLDS: tuple[float, float, float] = (-10.0, 0.0, 10.0)
"""Bucket edges of the authors' code, tuned on Llama-2 at head_dim 128."""

BACKENDS = ("auto", "torch", "triton")


def check_int(name: str, value: object, minimum: int) -> int:
    """Return `value` if it is an int >= `minimum`, else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_thresholds(thresholds: object) -> tuple[float, float, float]:
    """Return `thresholds` as three finite, strictly increasing floats.

    `"paper"` stands for the authors' (-10, 0, 10).
    """
    if thresholds == "paper":
        return PAPER_THRESHOLDS
    if isinstance(thresholds, str):
        raise ValueError(f"thresholds must be 'paper' or three increasing floats, got {thresholds!r}")
    try:
        values = tuple(float(t) for t in thresholds)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"thresholds must be three floats, got {thresholds!r}") from None
    if len(values) != 3:
        raise ValueError(f"thresholds must hold exactly 3 values (4 buckets), got {len(values)}: {values}")
    if not all(math.isfinite(t) for t in values):
        raise ValueError(f"thresholds must be finite, got {values}")
    if not values[0] < values[1] < values[2]:
        raise ValueError(f"thresholds must be strictly increasing, got {values}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class AdamasConfig:
    """How one Adamas decode step selects the tokens it attends to.

    budget: tokens attended per query head (sink and recent tokens included).
    thresholds: bucket edges for the 2-bit codes, or "paper" for (-10, 0, 10).
    dense_layers: layer indices that always run full attention.
    sink: the first `sink` tokens are always selected.
    recent: the last `recent` tokens are always selected.
    backend: "auto" (Triton on CUDA, PyTorch elsewhere), "torch" or "triton".
    """

    budget: int = 128
    thresholds: tuple[float, float, float] = field(default=PAPER_THRESHOLDS)
    dense_layers: tuple[int, ...] = (0, 1)
    sink: int = 0
    recent: int = 0
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_int("budget", self.budget, 1)
        object.__setattr__(self, "thresholds", check_thresholds(self.thresholds))
        if isinstance(self.dense_layers, (str, bytes)) or not hasattr(self.dense_layers, "__iter__"):
            raise TypeError(f"dense_layers must be a sequence of ints, got {self.dense_layers!r}")
        layers = tuple(check_int("dense_layers item", i, 0) for i in self.dense_layers)
        object.__setattr__(self, "dense_layers", layers)
        check_int("sink", self.sink, 0)
        check_int("recent", self.recent, 0)
        if self.sink + self.recent > self.budget:
            raise ValueError(f"sink + recent ({self.sink} + {self.recent}) must not exceed budget ({self.budget})")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
