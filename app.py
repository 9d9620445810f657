"""Adamas Studio — core explorer: Adamas token selection on synthetic attention (no language model yet).

Run `python app.py [--host 127.0.0.1] [--port 7860] [--share]`.
"""

from __future__ import annotations

import argparse
import math
import re

import gradio as gr
import plotly.graph_objects as go

from adamas.synthetic import recall_curve, selection_report, synthetic_decode_problem
from visualize import estimated_vs_true_scatter, recall_vs_budget

MIN_LENGTH, MAX_LENGTH = 256, 16384
MIN_BUDGET, MAX_BUDGET = 16, 4096
MAX_PLANTED = 64
DEFAULTS = {"length": 2048, "budget": 128, "planted": 8, "thresholds": "paper", "seed": 0}

NOTE = (
    "Explores the core Adamas method on synthetic attention: one decode step with 8 query heads, 2 KV heads "
    "and head_dim 128, Gaussian keys with outlier channels and a few planted tokens aligned with the query. "
    "Keys and query are Hadamard-transformed, bucketized into 2-bit codes and compared by Manhattan distance; "
    "the `budget` closest tokens get exact attention.\n\n"
    "*The language-model document-QA app is still to come. On the CPU the PyTorch reference runs.*"
)


def parse_thresholds(text: str) -> str | tuple[float, ...]:
    """'paper' (or blank) stays 'paper'; otherwise the numbers in `text`, separated by commas or spaces."""
    if not isinstance(text, str):
        raise TypeError(f"thresholds must be text, got {type(text).__name__}")
    text = text.strip()
    if text.lower() in ("", "paper"):
        return "paper"
    parts = [p for p in re.split(r"[,\s;]+", text.strip("()[]")) if p]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"thresholds must be 'paper' or three numbers like '-10, 0, 10', got {text!r}") from None


def sweep_budgets(length: int) -> list[int]:
    """Powers of two from MIN_BUDGET up to min(MAX_BUDGET, length)."""
    budgets, budget = [], MIN_BUDGET
    while budget <= min(MAX_BUDGET, length):
        budgets.append(budget)
        budget *= 2
    return budgets


def _whole(name: str, value: object, low: int, high: int) -> int:
    """A UI number as an int in [low, high], else ValueError/TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value}")
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {int(value)}")
    return int(value)


def _summary(report: dict, thresholds: str | tuple[float, ...]) -> str:
    """A markdown table of one selection report."""
    edges = "paper (-10, 0, 10)" if thresholds == "paper" else ", ".join(f"{t:g}" for t in thresholds)
    return (
        f"### L = {report['length']}, budget = {report['budget']}, thresholds {edges}\n\n"
        "| measure | value |\n|---|---|\n"
        f"| recall@{report['budget']} (mean over query heads) | {report['recall']:.3f} |\n"
        f"| attention output relative error vs dense | {report['output_error']:.2e} |\n"
        f"| planted tokens selected (head 0) | {report['planted_selected']} / {report['planted']} |\n"
    )


def explore(
    length: float, budget: float, planted: float, thresholds: str, seed: float
) -> tuple[go.Figure, go.Figure, str]:
    """Build a synthetic problem, score Adamas selection on it and return both figures and a summary."""
    length = _whole("context length", length, MIN_LENGTH, MAX_LENGTH)
    budget = _whole("budget", budget, MIN_BUDGET, MAX_BUDGET)
    if budget > length:
        raise ValueError(f"budget ({budget}) must not exceed the context length ({length})")
    planted = _whole("planted tokens", planted, 0, MAX_PLANTED)
    seed = _whole("seed", seed, 0, 2**31 - 1)
    edges = parse_thresholds(thresholds)
    problem = synthetic_decode_problem(length, planted, seed=seed)
    report = selection_report(problem, budget, edges)
    budgets = sweep_budgets(length)
    scatter = estimated_vs_true_scatter(
        report["estimated"], report["true"], report["selected"], budget, title="Query head 0"
    )
    curve = recall_vs_budget(budgets, recall_curve(problem, budgets, edges), current=budget)
    return scatter, curve, _summary(report, edges)


def run(
    length: float, budget: float, planted: float, thresholds: str, seed: float
) -> tuple[go.Figure | None, go.Figure | None, str]:
    """The Run handler: explore(), or a warning and a readable message when the input is bad."""
    try:
        return explore(length, budget, planted, thresholds, seed)
    except (ValueError, TypeError) as err:
        gr.Warning(str(err))
        return None, None, f"**Could not run:** {err}"


def build_app() -> gr.Blocks:
    """The Blocks layout with its events wired, not launched."""
    with gr.Blocks(title="Adamas Studio — core explorer") as demo:
        gr.Markdown("# Adamas Studio — core explorer")
        gr.Markdown(NOTE)
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                length = gr.Slider(MIN_LENGTH, MAX_LENGTH, DEFAULTS["length"], step=256, label="Context length L")
                budget = gr.Slider(MIN_BUDGET, MAX_BUDGET, DEFAULTS["budget"], step=16, label="Budget (tokens)")
                planted = gr.Slider(0, MAX_PLANTED, DEFAULTS["planted"], step=1, label="Planted relevant tokens")
                thresholds = gr.Textbox(
                    DEFAULTS["thresholds"], label="Thresholds", info="'paper' or three increasing numbers: -10, 0, 10"
                )
                seed = gr.Number(DEFAULTS["seed"], label="Seed", precision=0, minimum=0)
                button = gr.Button("Run", variant="primary")
            with gr.Column(scale=3):
                summary = gr.Markdown()
                scatter = gr.Plot(label="True vs estimated score")
                curve = gr.Plot(label="Recall vs budget")

        inputs = [length, budget, planted, thresholds, seed]
        outputs = [scatter, curve, summary]
        button.click(run, inputs, outputs)
        demo.load(run, inputs, outputs)
    return demo


def main(argv: list[str] | None = None) -> None:
    """Parse --host, --port and --share, then serve the app."""
    parser = argparse.ArgumentParser(description="Adamas Studio — core explorer")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--share", action="store_true", help="create a public Gradio share link")
    args = parser.parse_args(argv)
    demo = build_app()
    demo.queue()
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
