"""Figures of the evaluation grid: a metric against the budget per selector, and recall per layer.

They take plain records (dicts with selector, budget, length and value), as
`adamas.eval` writes them to results.json; a budget of None is full attention, which has none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from adamas.config import check_int
from visualize.checks import as_vector
from visualize.style import ADAMAS_COLOR, FULL_COLOR

SELECTOR_COLORS = {
    "adamas": ADAMAS_COLOR,
    "adamas-calibrated": "#ff7f0e",
    "quest": "#1f77b4",
    "streaming": "#2ca02c",
    "oracle": "#9467bd",
    "full": FULL_COLOR,
}
OTHER_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")
LENGTH_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def selector_color(selector: str, order: Sequence[str] = ()) -> str:
    """The colour of a selector: fixed for the known ones, else from a spare palette by its place in `order`."""
    if selector in SELECTOR_COLORS:
        return SELECTOR_COLORS[selector]
    spare = [s for s in order if s not in SELECTOR_COLORS]
    return OTHER_COLORS[spare.index(selector) % len(OTHER_COLORS)] if selector in spare else OTHER_COLORS[0]


def _check_points(points: Sequence[Mapping]) -> list[Mapping]:
    """Points as a non-empty list of mappings with selector, budget (int ≥ 1 or None), length and a finite value."""
    if isinstance(points, Mapping) or not isinstance(points, Sequence) or not points:
        raise ValueError("points must be a non-empty sequence of dicts with selector, budget, length and value")
    for p in points:
        missing = {"selector", "budget", "length", "value"} - set(p)
        if missing:
            raise ValueError(f"each point needs selector, budget, length and value; missing {sorted(missing)} in {p}")
        if p["budget"] is not None:
            check_int("budget", p["budget"], 1)
        check_int("length", p["length"], 1)
        as_vector("value", [p["value"]])
    return list(points)


def metric_vs_budget(
    points: Sequence[Mapping], title: str, y_title: str, log_y: bool = False, y_range: Sequence[float] | None = None
) -> go.Figure:
    """One line per selector and length of `value` against budget (log2 axis).

    Colour tells the selector, dash the length; a point with budget None (full attention)
    is drawn as a flat line across the budgets, since it does not depend on one.
    """
    points = _check_points(points)
    budgets = sorted({p["budget"] for p in points if p["budget"] is not None})
    lengths = sorted({p["length"] for p in points})
    selectors = list(dict.fromkeys(p["selector"] for p in points))
    span = budgets or [1]
    fig = go.Figure()
    for selector in selectors:
        for j, length in enumerate(lengths):
            mine = sorted(
                (p for p in points if p["selector"] == selector and p["length"] == length),
                key=lambda p: p["budget"] or 0,
            )
            if not mine:
                continue
            flat = mine[0]["budget"] is None
            x = [span[0], span[-1]] if flat else [p["budget"] for p in mine]
            y = [mine[0]["value"]] * 2 if flat else [p["value"] for p in mine]
            fig.add_trace(
                go.Scatter(
                    x=np.log2(x),
                    y=y,
                    customdata=x,
                    mode="lines" if flat else "lines+markers",
                    name=f"{selector}, {length} tokens" if len(lengths) > 1 else selector,
                    legendgroup=selector,
                    line={"color": selector_color(selector, selectors), "dash": LENGTH_DASHES[j % len(LENGTH_DASHES)]},
                    hovertemplate=f"{selector}, {length} tokens<br>budget %{{customdata}}<br>{y_title} %{{y:.3f}}"
                    "<extra></extra>",
                )
            )
    ticks = {"tickvals": np.log2(span).tolist(), "ticktext": [str(b) for b in span]}
    yaxis = {"title": y_title, "type": "log" if log_y else "linear"}
    if y_range is not None:
        yaxis["range"] = list(y_range)
    fig.update_layout(
        title=title,
        xaxis={"title": "budget (tokens per query head, log scale)", **ticks},
        yaxis=yaxis,
        legend={"orientation": "v"},
        template="plotly_white",
    )
    return fig


def accuracy_vs_budget(points: Sequence[Mapping], task: str) -> go.Figure:
    """A task's accuracy (share of expected answers found) against budget, per selector and length."""
    return metric_vs_budget(points, f"{task}: accuracy vs budget", "accuracy", y_range=(-0.02, 1.02))


def perplexity_vs_budget(points: Sequence[Mapping]) -> go.Figure:
    """Decode-mode perplexity against budget (log y), per selector and length."""
    return metric_vs_budget(points, "Perplexity vs budget (every scored token decoded sparsely)", "perplexity", True)


def selection_recall_vs_budget(points: Sequence[Mapping]) -> go.Figure:
    """Recall of the true top-K attention mass against budget, per selector and length."""
    return metric_vs_budget(
        points, "Recall@budget: kept share of the true top-K attention mass", "recall", False, (0, 1.02)
    )


def selector_recall_by_layer(per_layer: Mapping[str, Sequence[float | None]], title: str = "") -> go.Figure:
    """Recall per layer, one line per selector; None (a dense layer, which selects nothing) leaves a gap."""
    if not isinstance(per_layer, Mapping) or not per_layer:
        raise ValueError("per_layer must map each selector to its recall per layer")
    sizes = {len(v) for v in per_layer.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every selector needs the same, non-zero number of layers, got {sorted(sizes)}")
    selectors = list(per_layer)
    fig = go.Figure()
    for selector, values in per_layer.items():
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        as_vector(f"recall of {selector}", y[~np.isnan(y)], allow_empty=True)
        fig.add_trace(
            go.Scatter(
                x=np.arange(y.size),
                y=y,
                mode="lines+markers",
                name=selector,
                line={"color": selector_color(selector, selectors)},
                hovertemplate=f"{selector}<br>layer %{{x}}<br>recall %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or "Recall per layer (gaps: dense layers)",
        xaxis={"title": "layer"},
        yaxis={"title": "recall", "range": [0, 1.02]},
        template="plotly_white",
    )
    return fig


def evaluation_figures(records: Sequence[Mapping], layer_budget: int) -> dict[str, go.Figure]:
    """An evaluation's figures by name: accuracy per task, perplexity and recall against budget, and recall per layer.

    `records` are results.json's (task, metric, selector, budget, length, value; recall records also
    per_layer). Recall per layer is drawn at the longest length and the budget nearest `layer_budget`
    on a log scale.
    """
    built = {}
    tasks = dict.fromkeys(r["task"] for r in records if r["metric"] == "accuracy")
    for task in tasks:
        built[f"accuracy_{task}"] = accuracy_vs_budget([r for r in records if r["task"] == task], task)
    perplexity = [r for r in records if r["task"] == "perplexity"]
    if perplexity:
        built["perplexity"] = perplexity_vs_budget(perplexity)
    recall = [r for r in records if r["task"] == "recall"]
    if recall:
        built["recall"] = selection_recall_vs_budget(recall)
        length = max(r["length"] for r in recall)
        budget = min((r["budget"] for r in recall), key=lambda b: abs(np.log2(b / layer_budget)))
        per_layer = {r["selector"]: r["per_layer"] for r in recall if r["length"] == length and r["budget"] == budget}
        title = f"Recall per layer at budget {budget}, {length} tokens (gaps: dense layers)"
        built["recall_by_layer"] = selector_recall_by_layer(per_layer, title)
    return built
