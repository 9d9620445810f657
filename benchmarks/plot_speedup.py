"""The README's chart: attention-step speedup over SDPA dense vs context, from attention_<device>.json.

Writes a dependency-free SVG (no plotly export engine needed):
`python -m benchmarks.plot_speedup benchmarks/results/attention_h200.json assets/attention_speedup.svg`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from adamas.config import AdamasConfig
from benchmarks.svg_chart import line_chart


def series(records: list[dict], budget: int) -> dict[str, list[tuple[int, float]]]:
    """(context, speedup) points per 'shape, batch N' at one budget."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r["budget"] == budget and "speedup" in r:
            lines.setdefault(f"{r['shape']}, batch {r['batch']}", []).append((r["L"], r["speedup"]))
    return {name: sorted(points) for name, points in sorted(lines.items())}


def svg(lines: dict[str, list[tuple[int, float]]], title: str) -> str:
    """Speedup vs context on a log2 axis, a dashed line at 1x (dense SDPA)."""
    top = math.ceil(max(s for points in lines.values() for _, s in points))
    return line_chart(
        lines, title, "context (tokens)", "speedup over SDPA dense", list(range(top + 1)),
        x_format=lambda c: f"{int(c) // 1024}K", y_format=lambda s: f"{s:g}x", reference=1.0,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="attention_<device>.json from bench_attention")
    parser.add_argument("out", type=Path, help="the SVG to write")
    parser.add_argument("--budget", type=int, default=AdamasConfig().budget, help="the budget whose records to draw")
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
