"""Evaluation figures: one line per selector and length, full attention flat, recall per layer with gaps."""

from __future__ import annotations

import numpy as np
import pytest

go = pytest.importorskip("plotly.graph_objects", reason="plotly is not installed (e.g. on the GPU image)")

from visualize import evaluation  # noqa: E402

BUDGETS = [16, 64, 256]


def points(selectors=("adamas", "quest"), lengths=(2048, 4096)) -> list[dict]:
    rows = [
        {"selector": s, "budget": b, "length": n, "value": 0.1 * i + b / 1000}
        for i, s in enumerate(selectors)
        for b in BUDGETS
        for n in lengths
    ]
    return rows + [{"selector": "full", "budget": None, "length": n, "value": 0.9} for n in lengths]


def test_one_line_per_selector_and_length_with_full_flat():
    fig = evaluation.accuracy_vs_budget(points(), "passkey")
    assert isinstance(fig, go.Figure) and len(fig.data) == 3 * 2
    adamas = next(t for t in fig.data if t.name == "adamas, 2048 tokens")
    assert adamas.x.tolist() == np.log2(BUDGETS).tolist() and list(adamas.y) == [0.016, 0.064, 0.256]
    full = [t for t in fig.data if t.name.startswith("full")]
    assert all(list(t.y) == [0.9, 0.9] and list(t.x) == [4.0, 8.0] for t in full), "flat over the budgets"
    assert {t.line.dash for t in fig.data if t.legendgroup == "quest"} == {"solid", "dash"}
    assert adamas.line.color == evaluation.SELECTOR_COLORS["adamas"]
    assert fig.layout.xaxis.ticktext == ("16", "64", "256") and "passkey" in fig.layout.title.text


def test_one_length_names_lines_by_selector_and_perplexity_uses_a_log_axis():
    fig = evaluation.perplexity_vs_budget(points(lengths=(8192,)))
    assert [t.name for t in fig.data] == ["adamas", "quest", "full"]
    assert fig.layout.yaxis.type == "log"
    assert evaluation.selection_recall_vs_budget(points()).layout.yaxis.range == (0, 1.02)


def test_unknown_selectors_get_spare_colours():
    fig = evaluation.metric_vs_budget(points(selectors=("mine", "yours"), lengths=(1024,)), "t", "y")
    colors = [t.line.color for t in fig.data]
    assert colors[0] != colors[1] and set(colors[:2]) <= set(evaluation.OTHER_COLORS)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "non-empty sequence"),
        ([{"selector": "a", "budget": 16, "value": 1.0}], r"missing \['length'\]"),
        ([{"selector": "a", "budget": 0, "length": 8, "value": 1.0}], "budget must be >= 1, got 0"),
        ([{"selector": "a", "budget": 16, "length": 8, "value": float("nan")}], "finite"),
    ],
    ids=["empty", "missing-key", "budget-0", "nan"],
)
def test_bad_points_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        evaluation.metric_vs_budget(bad, "t", "y")


def test_recall_by_layer_leaves_gaps_at_dense_layers():
    fig = evaluation.selector_recall_by_layer({"adamas": [None, None, 0.8, 0.7], "oracle": [None, None, 1.0, 1.0]})
    assert [t.name for t in fig.data] == ["adamas", "oracle"]
    assert np.isnan(fig.data[0].y[:2]).all() and list(fig.data[0].y[2:]) == [0.8, 0.7]
    with pytest.raises(ValueError, match="same, non-zero number of layers"):
        evaluation.selector_recall_by_layer({"adamas": [0.5], "quest": [0.5, 0.6]})
    with pytest.raises(ValueError, match="map each selector"):
        evaluation.selector_recall_by_layer({})


def test_evaluation_figures_one_per_task_and_metric_recall_per_layer_near_the_budget_asked():
    records = [p | {"task": task, "metric": "accuracy"} for task in ("passkey", "multi_key") for p in points()]
    records += [p | {"task": "perplexity", "metric": "perplexity"} for p in points()]
    records += [
        p | {"task": "recall", "metric": "recall", "per_layer": [None, 0.5, 0.7]}
        for p in points()
        if p["budget"] is not None
    ]
    built = evaluation.evaluation_figures(records, layer_budget=50)
    assert list(built) == ["accuracy_passkey", "accuracy_multi_key", "perplexity", "recall", "recall_by_layer"]
    assert all(isinstance(fig, go.Figure) for fig in built.values())
    assert built["recall_by_layer"].layout.title.text.startswith("Recall per layer at budget 64, 4096 tokens")
    assert [t.name for t in built["recall_by_layer"].data] == ["adamas", "quest"]
    assert evaluation.evaluation_figures(records[:1], layer_budget=64).keys() == {"accuracy_passkey"}
