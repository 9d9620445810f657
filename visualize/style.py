"""Colours, colour scaling and titles shared by the figures, so that every panel looks and fits alike."""

from __future__ import annotations

import textwrap

import numpy as np
import plotly.graph_objects as go

ADAMAS_COLOR = "#d62728"
FULL_COLOR = "#7f7f7f"
DENSE_FILL = "#e4e4e4"  # opaque grey over dense layers, which select nothing
CAP_QUANTILE = 0.99

HALF_TITLE_CHARS, HALF_NOTE_CHARS = 46, 72
"""Characters of a title line (17 px type) and of a note line under it (12 px) that fit a figure sharing a row
with another on a 1280 px page, about 560 px wide, with room for the panel number the app puts in front."""
FULL_TITLE_CHARS, FULL_NOTE_CHARS = 110, 160
"""The same for a figure given the page's whole width."""
TITLE_LINE_PX = 22
"""Plotly spaces a title's lines by 1.3 times its 17 px type, its small-type lines too."""
TITLE_PAD_PX, TITLE_GAP_PX, LEGEND_ROW_PX = 24, 12, 28
"""Above the title's first line (plotly anchors a title by that line alone), below its last, and a legend's row."""


def color_cap(counts: np.ndarray) -> float:
    """Where a count colour scale saturates: the 99th percentile of the positive counts (1 if none).

    Attention sinks (the first tokens) are selected at nearly every step by every head; scaled to
    their count, the rest of the document would look blank.
    """
    positive = counts[counts > 0]
    return max(float(np.quantile(positive, CAP_QUANTILE)), 1.0) if positive.size else 1.0


def titled(
    fig: go.Figure, heading: str, *notes: str, full_width: bool = False, legend_above: bool = False
) -> go.Figure:
    """`fig` with a title that fits its panel: `heading` wrapped to lines that fit, each note under it in small
    type, and a top margin that holds them all (and a legend row above the plot when there is one).

    Plotly neither wraps nor shrinks a title: one longer than its figure is cut off at the edge.
    """
    title_chars, note_chars = (FULL_TITLE_CHARS, FULL_NOTE_CHARS) if full_width else (HALF_TITLE_CHARS, HALF_NOTE_CHARS)
    heads = textwrap.wrap(heading, title_chars) or [""]
    lines = [line for note in notes for line in textwrap.wrap(note, note_chars)]
    text = "<br>".join(heads) + "".join(f"<br><sup>{line}</sup>" for line in lines)
    top = TITLE_PAD_PX + TITLE_LINE_PX * (len(heads) + len(lines)) + TITLE_GAP_PX
    title = {"x": 0, "xref": "paper", "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": TITLE_PAD_PX}}
    return fig.update_layout(
        title={"text": text, **title},
        margin_t=top + (LEGEND_ROW_PX if legend_above else 0),
    )
