"""A dependency-free SVG line chart (log2 x axis) for the README's committed figures.

Plotly's static export needs an engine this project does not install, so the charts the
README shows are drawn here from the committed JSON: `line_chart` takes named series of
(x, y) points and returns the SVG text.
"""

from __future__ import annotations

import math

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 50, 60  # plot margins, px
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f")


def line_chart(
    lines: dict[str, list[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    y_ticks: list[float],
    x_format=lambda x: f"{x:g}",
    y_format=lambda y: f"{y:g}",
    reference: float | None = None,
) -> str:
    """Series over a log2 x axis and a linear y axis spanning y_ticks; points beyond it are clipped to its top."""
    if not lines or not any(lines.values()):
        raise ValueError("line_chart needs at least one point")
    xs = sorted({x for points in lines.values() for x, _ in points})
    x0, x1 = math.log2(xs[0]), math.log2(xs[-1]) if xs[-1] > xs[0] else math.log2(xs[0]) + 1
    y0, y1 = min(y_ticks), max(y_ticks)
    span_x, span_y = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (math.log2(x) - x0) / (x1 - x0) * span_x

    def py(y: float) -> float:
        return TOP + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * span_y

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="15">{title}</text>',
    ]
    for t in y_ticks:
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{y_format(t)}</text>')
    if reference is not None:
        y = py(reference)
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#555" stroke-dasharray="5,4"/>'
        )
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{x_format(x)}</text>')
    out.append(f'<text x="{LEFT + span_x / 2}" y="{HEIGHT - 18}" text-anchor="middle">{x_label}</text>')
    mid = TOP + span_y / 2
    out.append(f'<text x="18" y="{mid}" transform="rotate(-90 18 {mid})" text-anchor="middle">{y_label}</text>')
    for i, (name, points) in enumerate(lines.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in points]
        ly = TOP + 10 + 20 * i
        out.append(
            f'<line x1="{WIDTH - RIGHT + 15}" x2="{WIDTH - RIGHT + 35}" y1="{ly}" y2="{ly}" stroke="{color}" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{WIDTH - RIGHT + 40}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
