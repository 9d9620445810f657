"""Where in the context each (layer, head) looked: selection counts over token positions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from adamas.config import check_int
from visualize.checks import as_array, check_layers
from visualize.style import DENSE_FILL, color_cap, titled

COLORSCALE = "Viridis"
SEPARATOR_COLOR = "rgba(255, 255, 255, 0.9)"
PLOT_PX, MIN_ROW_PX, MAX_ROW_PX, LABEL_PX = 900, 2, 14, 11
X_TICKS = 5  # position labels such as "12,000" stay apart in a half-width panel


def bin_positions(length: int, bins: int) -> np.ndarray:
    """First position of each of min(bins, length) near-equal bins over [0, length)."""
    columns = min(bins, length)
    return (np.arange(columns) * length) // columns  # [columns]


def position_ticks(starts: np.ndarray, length: int, ticks: int) -> tuple[list[float], list[str]]:
    """Round token positions, at most `ticks` + 1 of them, placed on the binned axis, where column i spans [i-½, i+½].

    The step is the smallest of 1, 2 or 5 times a power of ten that leaves no more labels than that.
    """
    magnitude = 10 ** np.floor(np.log10(max(length / ticks, 1)))
    step = min(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= length / ticks)
    positions = np.arange(0, length, step).astype(int)
    column = np.searchsorted(starts, positions, side="right") - 1
    ends = np.append(starts[1:], length)
    where = column - 0.5 + (positions - starts[column]) / (ends[column] - starts[column])
    return where.tolist(), [f"{p:,}" for p in positions]


def selection_density_map(
    density: np.ndarray, dense_layers: Sequence[int] = (), bins: int = 256, title: str | None = None
) -> go.Figure:
    """Heatmap of selection counts: one row per (layer, head), token positions summed into ≤ `bins` columns."""
    counts = as_array("density", density, 3)  # [layers, Hq, L]
    if (counts < 0).any():
        raise ValueError(f"density must be ≥ 0, got a minimum of {counts.min()}")
    bins = check_int("bins", bins, 1)
    layers, heads, length = counts.shape
    dense = check_layers(dense_layers, layers)
    starts = bin_positions(length, bins)
    ends = np.append(starts[1:], length)
    binned = np.add.reduceat(counts.reshape(layers * heads, length), starts, axis=1)  # [layers·Hq, columns]
    columns = [f"{a}" if b - a == 1 else f"{a}–{b - 1}" for a, b in zip(starts, ends, strict=True)]
    rows = [f"L{layer}·H{head}" for layer in range(layers) for head in range(heads)]
    cap = color_cap(binned)
    fig = go.Figure(
        go.Heatmap(
            z=binned,
            x=columns,
            y=rows,
            colorscale=COLORSCALE,
            zmin=0,
            zmax=cap,
            hovertemplate="%{y}<br>positions %{x}<br>selected %{z:,.0f} times<extra></extra>",
            colorbar={
                "title": {"text": "times<br>selected", "side": "top"},
                "ticklabelposition": "outside bottom",  # a label at the top would run into the title
                "thickness": 12,
            },
        )
    )
    for layer in range(1, layers):
        fig.add_hline(y=layer * heads - 0.5, line={"color": SEPARATOR_COLOR, "width": 1})
    for layer in dense:
        fig.add_hrect(
            y0=layer * heads - 0.5,
            y1=(layer + 1) * heads - 0.5,
            fillcolor=DENSE_FILL,
            line_width=0,
            annotation_text=f"L{layer} dense: full attention, nothing selected",
            annotation_position="inside left",
            annotation_font={"size": 10},
        )
    row_px = min(MAX_ROW_PX, max(MIN_ROW_PX, PLOT_PX / len(rows)))
    labelled = rows if row_px >= LABEL_PX else rows[::heads]  # a label a layer when a row is too thin
    tickvals, ticktext = position_ticks(starts, length, X_TICKS)
    heading = title or "Selection density per layer and head"
    note = (
        f"layer{'s' * (len(dense) > 1)} {', '.join(map(str, dense))} dense (full attention)"
        if dense
        else "no dense layers"
    )
    size = f"{length:,} positions"
    if len(columns) < length:
        size += f" in {len(columns)} bins of ≈{length / len(columns):.1f}"
    fig.update_layout(
        height=round(len(rows) * row_px) + 150,
        margin={"l": 70, "r": 20, "b": 50},
        xaxis={
            "title": "token position",
            "type": "category",
            "tickvals": tickvals,
            "ticktext": ticktext,
            "tickangle": 0,
        },
        yaxis={"autorange": "reversed", "tickvals": labelled, "tickfont": {"size": 10}},
        template="plotly_white",
    )
    return titled(fig, heading, f"{size}; {note}", f"colour capped at {cap:,.0f} (p99)")
