"""A run as one standalone HTML page: its headline numbers and its figures, readable offline."""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.io as pio

STYLE = (
    "body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }"
    "table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ddd; padding: 4px 10px; "
    "text-align: left; vertical-align: top; } th { background: #f5f5f5; } .figure { margin: 2rem 0; }"
)


def standalone_report(title: str, rows: Sequence[tuple[str, object]], figures: Sequence[go.Figure]) -> str:
    """An HTML document: `title`, a table of (name, value) rows and each figure, plotly.js inlined once.

    Every string is escaped, so user text (a question, an answer) shows as text, never as markup.
    """
    if not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
    for figure in figures:
        if not isinstance(figure, go.Figure):
            raise TypeError(f"figures must be plotly Figures, got {type(figure).__name__}")
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    parts = [
        f"<div class='figure'>{pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0))}</div>"
        for i, fig in enumerate(figures)
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{table}</table>{''.join(parts)}</body></html>\n"
    )


def _cell(value: object) -> str:
    """A table cell: numbers rounded, text escaped with its line breaks kept."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value)).replace("\n", "<br>")
