"""Colours and colour scaling shared by the figures, so Adamas and dense layers look the same everywhere."""

from __future__ import annotations

import numpy as np

ADAMAS_COLOR = "#d62728"
FULL_COLOR = "#7f7f7f"
DENSE_FILL = "#e4e4e4"  # opaque grey over dense layers, which select nothing
CAP_QUANTILE = 0.99


def color_cap(counts: np.ndarray) -> float:
    """Where a count colour scale saturates: the 99th percentile of the positive counts (1 if none).

    Attention sinks (the first tokens) are selected at nearly every step by every head; scaled to
    their count, the rest of the document would look blank.
    """
    positive = counts[counts > 0]
    return max(float(np.quantile(positive, CAP_QUANTILE)), 1.0) if positive.size else 1.0
