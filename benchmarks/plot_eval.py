"""The README's evaluation charts from a results.json: recall and perplexity vs budget, per selector.

`python -m benchmarks.plot_eval benchmarks/results/eval_h100/results.json assets/` writes
eval_recall.svg and eval_perplexity.svg at the longest length of the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adamas.config import SELECTORS
from adamas.eval.report import read_payload
from benchmarks.svg_chart import line_chart

PERPLEXITY_TICKS_ABOVE_FULL = (1.0, 1.5, 2.0, 3.0, 4.0)  # multiples of full attention's perplexity on the axis


def by_selector(records: list[dict], task: str, length: int) -> tuple[dict[str, list[tuple[int, float]]], float | None]:
    """(budget, value) per sparse selector, and full attention's value (None when absent)."""
    lines: dict[str, list[tuple[int, float]]] = {}
    full = None
    for r in records:
        if r["task"] != task or r["length"] != length:
            continue
        if r["budget"] is None:
            full = r["value"]
        else:
            lines.setdefault(r["selector"], []).append((r["budget"], r["value"]))
    ordered = {s: sorted(lines[s]) for s in SELECTORS if s in lines}
    return ordered, full


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an evaluation's results.json")
    parser.add_argument("out", type=Path, help="directory for the SVGs")
    args = parser.parse_args(argv)
    payload = read_payload(args.results)
    records = payload["records"]
    length = max((r["length"] for r in records if r["task"] in ("recall", "perplexity")), default=None)
    if length is None:
        raise SystemExit(f"{args.results} holds no recall or perplexity records")
    where = f"{length} tokens"
    args.out.mkdir(parents=True, exist_ok=True)
    recall, _ = by_selector(records, "recall", length)
    if recall:
        chart = line_chart(recall, f"Recall of the top-budget attention mass, {where}", "budget (tokens)",
                           "recall", [0, 0.2, 0.4, 0.6, 0.8, 1.0])  # fmt: skip
        (args.out / "eval_recall.svg").write_text(chart)
    perplexity, full = by_selector(records, "perplexity", length)
    if perplexity and full:
        ticks = [round(full * m, 1) for m in PERPLEXITY_TICKS_ABOVE_FULL]
        title = f"Decode-mode perplexity, {where} (dashed: full attention; clipped at 4x it)"
        chart = line_chart(perplexity, title, "budget (tokens)", "perplexity", ticks, reference=full)
        (args.out / "eval_perplexity.svg").write_text(chart)
    print(f"wrote the charts of {length} tokens to {args.out}")


if __name__ == "__main__":
    main()
