"""The document as a page of tokens, each shaded by how often Adamas selected it."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from adamas.config import check_int
from visualize.checks import as_vector
from visualize.style import color_cap, titled

COLORSCALE = [[0.0, "#ffffff"], [0.15, "#fde0c5"], [0.5, "#f59e5b"], [1.0, "#b2400b"]]
HIGHLIGHT_COLOR = "#1f5fbf"
LABEL_PX = 10
"""Type size of the token labels."""
PLOT_PX = 1040
"""The narrowest the page draws the cells (measured): its whole width on a 1280 px window, less axis and colour bar."""
GAP_PX = 4
"""Room kept between neighbouring labels, the cells' 1 px gap included, so that they read as separate words
(plotly does not clip heatmap text: a label wider than its cell runs into its neighbours')."""
CHAR_EM = 0.6
"""A lower-case letter's width in ems in a sans-serif font; CHAR_EMS holds the characters far from it."""
CHAR_EMS = {
    **dict.fromkeys("ijl.,:;'!|", 0.3),
    **dict.fromkeys('frt()[]{}-"', 0.4),
    **dict.fromkeys("mwMW@%", 0.95),
    **dict.fromkeys("…⏎⇥␍␣", 1.0),
}
ROW_PX, BOTTOM_PX, COLORBAR_PX = 22, 20, 300
MIN_ROWS = 8
"""Rows of height the page keeps even for a short text: room for the colour bar, its title and the axis title."""
WHITESPACE = {"\n": "⏎", "\t": "⇥", "\r": "␍"}


def _visible(token: str) -> str:
    """The token with newlines, tabs and carriage returns drawn as symbols."""
    for char, symbol in WHITESPACE.items():
        token = token.replace(char, symbol)
    return token


def _label(token: str, room_px: float) -> str:
    """What a cell shows: the visible token without its spaces (␣ if only spaces), cut with … to `room_px`."""
    shown = _visible(token).strip(" ") or ("␣" if token else "")
    if label_px(shown) > room_px:
        while shown and label_px(shown + "…") > room_px:
            shown = shown[:-1]
        shown = shown + "…" if shown else ""
    return html.escape(shown, quote=False)


def label_px(text: str) -> float:
    """About how wide `text` is drawn at LABEL_PX, in pixels."""
    return LABEL_PX * sum(CHAR_EMS.get(c, 0.7 if c.isupper() else CHAR_EM) for c in text)


def _check_highlight(highlight: object, n: int) -> tuple[int, int]:
    """`highlight` as (start, end) with 0 ≤ start < end ≤ n, else ValueError."""
    ok = isinstance(highlight, (tuple, list)) and len(highlight) == 2
    ok = ok and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in highlight)
    if not ok or not 0 <= highlight[0] < highlight[1] <= n:
        raise ValueError(f"highlight must be a token range (start, end) with 0 ≤ start < end ≤ {n}, got {highlight!r}")
    return int(highlight[0]), int(highlight[1])


def highlight_boxes(start: int, end: int, width: int) -> list[tuple[float, float, float, float]]:
    """One (x0, x1, y0, y1) box per row that the token range [start, end) covers, in cell coordinates."""
    boxes = []
    for row in range(start // width, (end - 1) // width + 1):
        first = max(start, row * width) - row * width
        last = min(end, (row + 1) * width) - 1 - row * width
        boxes.append((first - 0.5, last + 0.5, row - 0.5, row + 0.5))
    return boxes


def densest_span(counts: Sequence[float] | np.ndarray, width: int) -> tuple[int, int]:
    """The [start, end) window of `width` tokens with the largest summed count (the first such)."""
    values = as_vector("counts", counts)
    width = min(check_int("width", width, 1), values.size)
    sums = np.convolve(values, np.ones(width), mode="valid")  # [n - width + 1]
    start = int(np.argmax(sums))
    return start, start + width


def selected_token_heatmap(
    tokens: Sequence[str],
    counts: Sequence[float] | np.ndarray,
    highlight: tuple[int, int] | None = None,
    width: int = 32,
    title: str | None = None,
) -> go.Figure:
    """The tokens laid out as a page, `width` a row, each cell shaded by how often it was selected."""
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokens must be a sequence of strings, one per token")
    values = as_vector("counts", counts)  # [n]
    if len(tokens) != values.size:
        raise ValueError(f"tokens and counts must have equal lengths, got {len(tokens)} and {values.size}")
    if (values < 0).any():
        raise ValueError(f"counts must be ≥ 0, got a minimum of {values.min()}")
    width = check_int("width", width, 1)
    n, rows = values.size, -(-values.size // width)
    shown = max(rows, MIN_ROWS)  # rows of height; those past the text stay blank

    def page(items: list, fill: object) -> list[list]:
        padded = items + [fill] * (rows * width - n)
        return [padded[r * width : (r + 1) * width] for r in range(rows)]

    hover = [f"token {i}: {html.escape(_visible(t).replace(' ', '␣'), quote=False)}" for i, t in enumerate(tokens)]
    room = PLOT_PX / width - GAP_PX
    cap = color_cap(values)
    fig = go.Figure(
        go.Heatmap(
            z=page(values.tolist(), None),  # [rows, width]; None leaves the last row's tail blank
            text=page([_label(t, room) for t in tokens], ""),
            customdata=page(hover, ""),
            texttemplate="%{text}",
            textfont={"size": LABEL_PX},
            hovertemplate="%{customdata}<br>selected %{z:.0f} times<extra></extra>",
            hoverongaps=False,
            colorscale=COLORSCALE,
            zmin=0,
            zmax=cap,
            xgap=1,
            ygap=1,
            colorbar={
                "title": {"text": "times<br>selected", "side": "top"},
                "ticklabelposition": "outside bottom",  # the top label stays below the title
                "thickness": 12,
                "len": min(COLORBAR_PX, shown * ROW_PX),  # pixels, at the top: on a long page a full-height bar
                # would stretch out of view, and on a short one a longer bar would be cut off at the bottom
                "lenmode": "pixels",
                "y": 1,
                "yanchor": "top",
            },
        )
    )
    heading = title or "How often Adamas selected each token"
    subtitle = f"{values.sum():,.0f} selections over {n:,} tokens; colour capped at {cap:,.0f} (p99)"
    if highlight is not None:
        start, end = _check_highlight(highlight, n)
        for x0, x1, y0, y1 in highlight_boxes(start, end, width):
            fig.add_shape(
                type="rect", x0=x0, x1=x1, y0=y0, y1=y1, line={"color": HIGHLIGHT_COLOR, "width": 3}, layer="above"
            )
        subtitle += f"; outlined: tokens {start}–{end - 1}"
    step = 1 if rows <= 30 else 5
    titled(fig, heading, subtitle, full_width=True)
    fig.update_layout(
        height=shown * ROW_PX + fig.layout.margin.t + BOTTOM_PX,
        margin={"l": 60, "r": 20, "b": BOTTOM_PX},
        xaxis={"visible": False, "range": [-0.5, width - 0.5]},
        yaxis={
            "range": [shown - 0.5, -0.5],  # reversed: the text reads downwards
            "tickvals": list(range(0, rows, step)),
            "ticktext": [f"{r * width}" for r in range(0, rows, step)],
            "title": "first token of row",
        },
        plot_bgcolor="white",
        template="plotly_white",
    )
    return fig
