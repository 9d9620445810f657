"""The README's chart: attention-step speedup over SDPA dense vs context, from attention_<device>.json.

Writes a dependency-free SVG (no plotly export engine needed):
`python -m benchmarks.plot_speedup benchmarks/results/attention_h100.json assets/attention_speedup.svg`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 50, 60  # plot margins, px
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def series(records: list[dict], budget: int) -> dict[str, list[tuple[int, float]]]:
    """(context, speedup) points per 'shape, batch N' at one budget."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r["budget"] == budget and "speedup" in r:
            lines.setdefault(f"{r['shape']}, batch {r['batch']}", []).append((r["L"], r["speedup"]))
    return {name: sorted(points) for name, points in sorted(lines.items())}


def svg(lines: dict[str, list[tuple[int, float]]], title: str) -> str:
    """A log2-x line chart with a dashed line at 1x (dense SDPA)."""
    contexts = sorted({c for points in lines.values() for c, _ in points})
    top = math.ceil(max(s for points in lines.values() for _, s in points))
    x0, x1 = math.log2(contexts[0]), math.log2(contexts[-1])
    span_x, span_y = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(c: float) -> float:
        return LEFT + (math.log2(c) - x0) / (x1 - x0) * span_x

    def y(s: float) -> float:
        return TOP + (1 - s / top) * span_y

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="15">{title}</text>',
    ]
    for s in range(top + 1):
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(s):.1f}" y2="{y(s):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y(s) + 4:.1f}" text-anchor="end">{s}x</text>')
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="#555" stroke-dasharray="5,4"/>'
    )
    for c in contexts:
        label = f"{c // 1024}K"
        out.append(f'<text x="{x(c):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{LEFT + span_x / 2}" y="{HEIGHT - 18}" text-anchor="middle">context (tokens)</text>')
    out.append(
        f'<text x="18" y="{TOP + span_y / 2}" transform="rotate(-90 18 {TOP + span_y / 2})" '
        'text-anchor="middle">speedup over SDPA dense</text>'
    )
    for i, (name, points) in enumerate(lines.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{x(c):.1f},{y(s):.1f}" for c, s in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{x(c):.1f}" cy="{y(s):.1f}" r="3" fill="{color}"/>' for c, s in points]
        ly = TOP + 10 + 20 * i
        out.append(f'<line x1="{WIDTH - RIGHT + 15}" x2="{WIDTH - RIGHT + 35}" y1="{ly}" y2="{ly}" stroke="{color}" '
                   'stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{WIDTH - RIGHT + 40}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="attention_<device>.json from bench_attention")
    parser.add_argument("out", type=Path, help="the SVG to write")
    parser.add_argument("--budget", type=int, default=128)
    args = parser.parse_args(argv)
    payload = json.loads(args.results.read_text())
    lines = series(payload["records"], args.budget)
    if not lines:
        raise SystemExit(f"no records at budget {args.budget} in {args.results}")
    env = payload["environment"]
    title = f"Adamas decode attention step, budget {args.budget} ({env['device']}, {env['date'][:10]})"
    args.out.write_text(svg(lines, title))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
