"""How Adamas code scores rank tokens compared with true attention scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from adamas.config import check_int
from visualize.checks import as_vector
from visualize.style import ADAMAS_COLOR, titled

SELECTED_COLOR = ADAMAS_COLOR
OTHER_COLOR = "#b0b0b0"


def top_recall(true: np.ndarray, selected: np.ndarray, budget: int) -> float:
    """Share of the top-min(budget, n) tokens by true score that appear in `selected`."""
    k = min(budget, true.size)
    best = np.argpartition(-true, k - 1)[:k]
    return float(np.isin(best, selected).sum() / k)


def estimated_vs_true_scatter(
    estimated: Sequence[float] | np.ndarray,
    true: Sequence[float] | np.ndarray,
    selected: Sequence[int] | np.ndarray,
    budget: int,
    title: str | None = None,
) -> go.Figure:
    """Scatter of true (y) against estimated (x) score per token; selected ones highlighted, -1 padding dropped."""
    est = as_vector("estimated", estimated)
    tru = as_vector("true", true)
    if est.size != tru.size:
        raise ValueError(f"estimated and true must have equal lengths, got {est.size} and {tru.size}")
    budget = check_int("budget", budget, 1)
    sel = np.asarray(selected)  # [K] int, -1 marks an empty slot (HeadTrace pads with it)
    if sel.ndim != 1 or not np.issubdtype(sel.dtype, np.integer):
        raise ValueError(f"selected must be a non-empty 1-D sequence of ints, got shape {sel.shape} {sel.dtype}")
    sel = sel[sel != -1]
    if sel.size == 0:
        raise ValueError("selected must hold at least one token index besides -1 padding")
    if sel.min() < 0 or sel.max() >= est.size or np.unique(sel).size != sel.size:
        raise ValueError(f"selected must hold distinct token indices in [0, {est.size}), got {sel.min()}..{sel.max()}")

    mask = np.zeros(est.size, dtype=bool)
    mask[sel] = True
    tokens = np.arange(est.size)
    recall = top_recall(tru, sel, budget)
    hover = "token %{customdata}<br>estimated %{x:.0f}<br>true %{y:.2f}<extra></extra>"
    fig = go.Figure()
    for name, keep, color in (("not selected", ~mask, OTHER_COLOR), ("selected", mask, SELECTED_COLOR)):
        fig.add_trace(
            go.Scatter(
                x=est[keep],
                y=tru[keep],
                customdata=tokens[keep],
                mode="markers",
                name=f"{name} ({int(keep.sum())})",
                marker={"color": color, "size": 5, "opacity": 0.6},
                hovertemplate=hover,
            )
        )
    cut = float(est[sel].min())
    # the label goes left of the line: the cut sits near the right edge, where the best-scored tokens are
    label = {"annotation_text": f"budget {budget} cut", "annotation_position": "top left"}
    fig.add_vline(x=cut, line_dash="dash", line_color="black", **label)
    fig.update_layout(
        xaxis_title="estimated score (−Manhattan distance of codes)",
        yaxis_title="true score (q·k / √d)",
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return titled(fig, title or "True vs estimated score per token", f"recall@{budget} = {recall:.3f}")
