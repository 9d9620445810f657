"""How much of the true attention mass Adamas kept, layer by layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from adamas.config import check_int
from visualize.checks import as_array, check_layers
from visualize.style import ADAMAS_COLOR, DENSE_FILL, titled

BAND_COLOR = "rgba(214, 39, 40, 0.18)"
MAX_LAYER_TICKS = 16  # layer numbers on the axis, level and apart, in a half-width panel
RECALL_SLACK = 1e-3  # recall is a ratio of two float sums, so a perfect selection may land a hair above 1


def _nanmean(values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean over `axis` ignoring NaN; NaN where a slice has no number (without numpy's warning)."""
    present = ~np.isnan(values)
    count = present.sum(axis=axis)
    total = np.where(present, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def layer_recall(recall: np.ndarray, dense: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer: mean over steps and heads, and min and max over heads of each head's mean over steps."""
    recall = recall.copy()  # [steps, layers, Hq]
    recall[:, list(dense)] = np.nan
    per_head = _nanmean(recall, axis=0)  # [layers, Hq]
    low = np.where(np.isnan(per_head), np.inf, per_head).min(axis=1)
    high = np.where(np.isnan(per_head), -np.inf, per_head).max(axis=1)
    empty = ~np.isfinite(low)
    return _nanmean(recall, axis=(0, 2)), np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def recall_by_layer(recall: np.ndarray, dense_layers: Sequence[int] = (), budget: int | None = None) -> go.Figure:
    """Mean recall per layer (over steps and heads) with the min–max band over heads; dense layers marked."""
    values = as_array("recall", recall, 3, allow_nan=True)  # [steps, layers, Hq], NaN where dense
    if ((values < 0) | (values > 1 + RECALL_SLACK)).any():
        raise ValueError(f"recall must lie in [0, 1] or be NaN, got {np.nanmin(values)}..{np.nanmax(values)}")
    dense = check_layers(dense_layers, values.shape[1])
    budget = None if budget is None else check_int("budget", budget, 1)
    mean, low, high = layer_recall(values, dense)  # [layers] each
    layers = np.arange(values.shape[1])
    fig = go.Figure()
    band = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "connectgaps": False}
    fig.add_trace(go.Scatter(x=layers, y=high, showlegend=False, **band))
    fig.add_trace(go.Scatter(x=layers, y=low, fill="tonexty", fillcolor=BAND_COLOR, name="min–max over heads", **band))
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=mean,
            customdata=np.stack([low, high], axis=-1),
            mode="lines+markers",
            name="mean over steps and heads",
            line={"color": ADAMAS_COLOR},
            cliponaxis=False,
            hovertemplate="layer %{x}<br>mean %{y:.3f}<br>heads %{customdata[0]:.3f}–%{customdata[1]:.3f}"
            "<extra></extra>",
        )
    )
    for first, last in runs(dense):  # one band and label a run: neighbouring layers' labels would overlap
        fig.add_vrect(x0=first - 0.5, x1=last + 0.5, fillcolor=DENSE_FILL, line_width=0, layer="below")
        fig.add_annotation(
            x=(first + last) / 2, y=0.5, text="dense", textangle=-90, showarrow=False, font={"color": "#555"}
        )
    sparse = mean[~np.isnan(mean)]
    overall = f"mean over sparse layers {sparse.mean():.3f}" if sparse.size else "no sparse layer recorded"
    kept = "selected attention mass / true top-K mass" + ("" if budget is None else f", budget {budget}")
    notes = [kept, f"{values.shape[0]} steps; {overall}"]
    fig.update_layout(
        xaxis={
            "title": "layer",
            "range": [-0.5, layers[-1] + 0.5],
            "tick0": 0,
            "dtick": -(-layers.size // MAX_LAYER_TICKS),
            "tickangle": 0,
        },
        yaxis={"title": "recall", "range": [0, 1]},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
        template="plotly_white",
    )
    return titled(fig, "Recall per layer", *notes, legend_above=True)


def runs(layers: tuple[int, ...]) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive layers in the sorted `layers`: (0, 1, 5) -> [(0, 1), (5, 5)]."""
    found: list[tuple[int, int]] = []
    for layer in layers:
        if found and found[-1][1] == layer - 1:
            found[-1] = (found[-1][0], layer)
        else:
            found.append((layer, layer))
    return found
