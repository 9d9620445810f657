"""Figure functions: structure of the returned Plotly figures and their input checks."""

from __future__ import annotations

import numpy as np
import pytest

go = pytest.importorskip("plotly.graph_objects", reason="plotly is not installed (e.g. on the GPU image)")

from visualize import estimated_vs_true_scatter, recall_vs_budget  # noqa: E402
from visualize.scores import top_recall  # noqa: E402


def _scores(n: int = 50) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(0)
    true = rng.normal(size=n)
    estimated = np.round(true * 4 + rng.normal(size=n))
    return estimated.tolist(), true.tolist()


def test_scatter_structure() -> None:
    estimated, true = _scores()
    selected = np.argsort(estimated)[-10:].tolist()
    fig = estimated_vs_true_scatter(estimated, true, selected, budget=10)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2
    others, chosen = fig.data
    assert len(chosen.x) == 10 and len(others.x) == 40
    assert chosen.marker.color != others.marker.color
    assert sorted(chosen.customdata.tolist()) == sorted(selected)
    recall = top_recall(np.array(true), np.array(selected), 10)
    assert f"recall@10 = {recall:.3f}" in fig.layout.title.text
    cut = [s for s in fig.layout.shapes if s.x0 == s.x1]
    assert len(cut) == 1 and cut[0].x0 == min(estimated[i] for i in selected)


def test_scatter_perfect_selection_and_custom_title() -> None:
    true = [3.0, 1.0, 2.0, 0.0]
    fig = estimated_vs_true_scatter(np.array([-1, -3, -2, -4]), true, [0, 2], budget=2, title="Head 5")
    assert fig.layout.title.text.startswith("Head 5")
    assert "recall@2 = 1.000" in fig.layout.title.text
    fig = estimated_vs_true_scatter([-1, -3, -2, -4], true, [1, 3], budget=2)
    assert "recall@2 = 0.000" in fig.layout.title.text


@pytest.mark.parametrize(
    ("estimated", "true", "selected", "budget", "match"),
    [
        ([], [], [0], 1, "estimated"),
        ([1.0, 2.0], [1.0], [0], 1, "equal lengths"),
        ([1.0, 2.0], [1.0, 2.0], [], 1, "selected"),
        ([1.0, 2.0], [1.0, 2.0], [2], 1, "selected"),
        ([1.0, 2.0], [1.0, 2.0], [0, 0], 2, "distinct"),
        ([1.0, 2.0], [1.0, 2.0], [0], 0, "budget"),
        ([1.0, float("nan")], [1.0, 2.0], [0], 1, "estimated"),
    ],
    ids=["empty", "lengths", "no-selection", "out-of-range", "repeat", "budget0", "nan"],
)
def test_scatter_errors(estimated: list, true: list, selected: list, budget: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        estimated_vs_true_scatter(estimated, true, selected, budget)


def test_recall_curve_structure() -> None:
    budgets, recalls = [16, 32, 64, 128], [0.5, 0.6, 0.8, 1.0]
    fig = recall_vs_budget(budgets, recalls, current=64)
    assert len(fig.data) == 1
    assert fig.data[0].y.tolist() == recalls
    assert fig.data[0].customdata.tolist() == budgets
    assert list(fig.layout.xaxis.ticktext) == ["16", "32", "64", "128"]
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == pytest.approx(6.0)
    assert len(recall_vs_budget(budgets, recalls).layout.shapes) == 0


@pytest.mark.parametrize(
    ("budgets", "recalls", "match"),
    [
        ([], [], "budgets"),
        ([16, 32], [0.5], "equal lengths"),
        ([0, 32], [0.5, 0.6], "positive"),
        ([16, 32], [0.5, 1.5], r"\[0, 1\]"),
    ],
    ids=["empty", "lengths", "budget0", "recall>1"],
)
def test_recall_curve_errors(budgets: list, recalls: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        recall_vs_budget(budgets, recalls)
