"""Figure functions: structure of the returned Plotly figures and their input checks."""

from __future__ import annotations

import numpy as np
import pytest

go = pytest.importorskip("plotly.graph_objects", reason="plotly is not installed (e.g. on the GPU image)")

import visualize  # noqa: E402
from visualize import (  # noqa: E402
    densest_span,
    estimated_vs_true_scatter,
    latency_comparison,
    recall_by_layer,
    selected_token_heatmap,
    selection_density_map,
)
from visualize.scores import top_recall  # noqa: E402
from visualize.style import DENSE_FILL  # noqa: E402


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


def test_scatter_drops_padding() -> None:
    estimated, true = _scores()
    selected = np.argsort(estimated)[-10:]
    padded = np.concatenate([selected, np.full(6, -1)])  # HeadTrace pads with -1
    fig = estimated_vs_true_scatter(estimated, true, padded, budget=16)
    others, chosen = fig.data
    assert sorted(chosen.customdata.tolist()) == sorted(selected.tolist())
    assert len(others.x) == 40
    assert fig.layout.title.text == estimated_vs_true_scatter(estimated, true, selected, budget=16).layout.title.text


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
        ([1.0, 2.0], [1.0, 2.0], [-1, -1], 1, "padding"),
        ([1.0, 2.0], [1.0, 2.0], [-2, 0], 1, "selected"),
        ([1.0, 2.0], [1.0, 2.0], [0.0], 1, "ints"),
    ],
    ids=[
        "empty",
        "lengths",
        "no-selection",
        "out-of-range",
        "repeat",
        "budget0",
        "nan",
        "only-padding",
        "minus2",
        "floats",
    ],
)
def test_scatter_errors(estimated: list, true: list, selected: list, budget: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        estimated_vs_true_scatter(estimated, true, selected, budget)


def test_exports() -> None:
    figures = {"selected_token_heatmap", "densest_span", "selection_density_map", "latency_comparison"}
    figures |= {"recall_by_layer", "estimated_vs_true_scatter", "evaluation_figures"}
    figures |= {"accuracy_vs_budget", "metric_vs_budget", "perplexity_vs_budget"}
    figures |= {"selection_recall_vs_budget", "selector_recall_by_layer", "stage_breakdown"}
    assert set(visualize.__all__) == figures
    assert all(callable(getattr(visualize, name)) for name in figures)


def _page(fig: go.Figure) -> np.ndarray:
    """The heatmap's z as a float array, blank cells as NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in fig.data[0].z], dtype=float)


@pytest.mark.parametrize(
    ("n", "width"),
    [(1, 40), (39, 40), (40, 40), (41, 40), (97, 7), (8192, 40)],
    ids=["one-token", "row-minus-1", "one-row", "row-plus-1", "width7", "8K"],
)
def test_token_heatmap_page(n: int, width: int) -> None:
    counts = np.random.default_rng(n).integers(0, 50, size=n)
    tokens = [f"t{i}" for i in range(n)]
    fig = selected_token_heatmap(tokens, counts, width=width)
    z = _page(fig)  # [rows, width]
    rows = -(-n // width)
    assert z.shape == (rows, width)
    assert np.array_equal(z.ravel()[:n], counts) and np.isnan(z.ravel()[n:]).all()
    assert np.nansum(z) == counts.sum()
    text = [cell for row in fig.data[0].text for cell in row]
    assert text[0] == "t0" and text[n - 1].startswith(f"t{n - 1}"[:3])
    assert fig.data[0].customdata[0][0] == "token 0: t0"
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.height >= rows * 20
    assert f"{counts.sum():,} selections over {n:,} tokens" in fig.layout.title.text


def test_token_heatmap_labels_show_whitespace() -> None:
    tokens = ["\n\n", " ", " the", "<|im_end|>", "a\tb", "supercalifragilistic"]
    fig = selected_token_heatmap(tokens, [1, 2, 3, 4, 5, 6], width=40, title="My doc")
    labels = list(fig.data[0].text[0][:6])
    assert labels == ["⏎⏎", "␣", "the", "&lt;|im_e…", "a⇥b", "superc…"]
    hover = list(fig.data[0].customdata[0][:3])
    assert hover == ["token 0: ⏎⏎", "token 1: ␣", "token 2: ␣the"]
    assert fig.layout.title.text.startswith("My doc") and "21 selections" in fig.layout.title.text
    wide = selected_token_heatmap(tokens, [1, 2, 3, 4, 5, 6], width=10)  # fewer cells a row: longer labels
    assert wide.data[0].text[0][5] == "supercalifragilistic"


@pytest.mark.parametrize(
    ("highlight", "boxes"),
    [
        ((5, 6), [(4.5, 5.5, -0.5, 0.5)]),
        ((2, 8), [(1.5, 7.5, -0.5, 0.5)]),
        ((8, 23), [(7.5, 9.5, -0.5, 0.5), (-0.5, 9.5, 0.5, 1.5), (-0.5, 2.5, 1.5, 2.5)]),
        ((10, 20), [(-0.5, 9.5, 0.5, 1.5)]),
        ((0, 25), [(-0.5, 9.5, -0.5, 0.5), (-0.5, 9.5, 0.5, 1.5), (-0.5, 4.5, 1.5, 2.5)]),
    ],
    ids=["one-token", "in-row", "three-rows", "whole-row", "everything"],
)
def test_token_heatmap_highlight_boxes(highlight: tuple[int, int], boxes: list) -> None:
    fig = selected_token_heatmap([f"w{i}" for i in range(25)], np.ones(25), highlight=highlight, width=10)
    assert [(s.x0, s.x1, s.y0, s.y1) for s in fig.layout.shapes] == boxes
    assert all(s.type == "rect" and s.fillcolor is None for s in fig.layout.shapes)
    assert f"tokens {highlight[0]}–{highlight[1] - 1}" in fig.layout.title.text
    assert not selected_token_heatmap(["a"], [1]).layout.shapes


@pytest.mark.parametrize(
    ("counts", "width", "span"),
    [
        ([0, 1, 5, 1, 0, 0, 3, 3], 2, (1, 3)),  # ties: the first window wins
        ([0, 1, 5, 1, 0, 0, 3, 3], 3, (1, 4)),
        ([0, 1, 5, 1, 0, 0, 3, 3], 1, (2, 3)),
        ([0, 0, 0, 0, 2, 9], 2, (4, 6)),
        ([1, 2, 3], 10, (0, 3)),
        ([0.0, 0.0], 1, (0, 1)),
    ],
    ids=["tie", "width3", "width1", "at-end", "wider-than-doc", "all-zero"],
)
def test_densest_span(counts: list, width: int, span: tuple[int, int]) -> None:
    assert densest_span(counts, width) == span


@pytest.mark.parametrize(
    ("tokens", "counts", "kwargs", "match"),
    [
        (["a", "b"], [1], {}, "equal lengths"),
        ([], [], {}, "counts"),
        (["a", "b"], [1, -1], {}, "≥ 0"),
        (["a", "b"], [1, float("nan")], {}, "finite"),
        (["a", 3], [1, 2], {}, "strings"),
        ("ab", [1, 2], {}, "strings"),
        (["a", "b"], [1, 2], {"width": 0}, "width"),
        (["a", "b"], [1, 2], {"highlight": (1, 3)}, "highlight"),
        (["a", "b"], [1, 2], {"highlight": (1, 1)}, "highlight"),
        (["a", "b"], [1, 2], {"highlight": (0, 1, 2)}, "highlight"),
        (["a", "b"], [1, 2], {"highlight": (0.0, 1.0)}, "highlight"),
    ],
    ids=[
        "lengths",
        "empty",
        "negative",
        "nan",
        "non-str",
        "str",
        "width0",
        "past-end",
        "empty-range",
        "triple",
        "floats",
    ],
)
def test_token_heatmap_errors(tokens: list, counts: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        selected_token_heatmap(tokens, counts, **kwargs)


@pytest.mark.parametrize(
    ("counts", "width", "error", "match"),
    [([], 2, ValueError, "counts"), ([1, 2], 0, ValueError, "width"), ([1, 2], 1.5, TypeError, "width must be an int")],
    ids=["empty", "width0", "width-float"],
)
def test_densest_span_errors(counts: list, width: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        densest_span(counts, width)


@pytest.mark.parametrize(
    ("layers", "heads", "length", "bins"),
    [(3, 2, 1, 256), (2, 3, 100, 256), (4, 2, 1000, 256), (2, 1, 513, 16), (1, 1, 7, 7)],
    ids=["L=1", "L<bins", "L>bins", "odd-bins", "L=bins"],
)
def test_density_map_bins(layers: int, heads: int, length: int, bins: int) -> None:
    density = np.random.default_rng(length).integers(0, 20, size=(layers, heads, length)).astype(np.int32)
    fig = selection_density_map(density, bins=bins)
    z = np.asarray(fig.data[0].z)  # [layers·Hq, columns]
    assert z.shape == (layers * heads, min(bins, length))
    assert np.array_equal(z.sum(axis=1), density.reshape(layers * heads, length).sum(axis=1))
    assert list(fig.data[0].y) == [f"L{i}·H{h}" for i in range(layers) for h in range(heads)]
    columns = list(fig.data[0].x)
    assert columns[0].split("–")[0] == "0" and columns[-1].split("–")[-1] == str(length - 1)
    first, last = (int(c.split("–")[0]) for c in columns[:2]) if len(columns) > 1 else (0, length)
    assert z[0, 0] == density[0, 0, first:last].sum()  # the first column sums exactly its positions
    separators = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert sorted(s.y0 for s in separators) == [i * heads - 0.5 for i in range(1, layers)]


def test_density_map_marks_dense_layers() -> None:
    density = np.zeros((4, 3, 50), dtype=np.int32)
    density[2:, :, :10] = 5
    fig = selection_density_map(density, dense_layers=[0, 1], title="Run 1")
    grey = [s for s in fig.layout.shapes if s.fillcolor == DENSE_FILL]
    assert [(s.y0, s.y1) for s in grey] == [(-0.5, 2.5), (2.5, 5.5)]
    assert [a.text.split(":")[0] for a in fig.layout.annotations] == ["L0 dense", "L1 dense"]
    assert fig.layout.title.text.startswith("Run 1") and "layers 0, 1 dense" in fig.layout.title.text
    assert "no dense layers" in selection_density_map(density).layout.title.text
    assert fig.layout.xaxis.type == "category"  # column i spans [i - ½, i + ½]: position 5 starts at 4.5
    assert list(fig.layout.xaxis.ticktext[:2]) == ["0", "5"] and list(fig.layout.xaxis.tickvals[:2]) == [-0.5, 4.5]


@pytest.mark.parametrize(
    ("density", "kwargs", "error", "match"),
    [
        (np.ones((2, 3)), {}, ValueError, "3 dims"),
        (np.ones((2, 3, 0)), {}, ValueError, "non-empty"),
        (-np.ones((2, 3, 4)), {}, ValueError, "≥ 0"),
        (np.full((2, 3, 4), np.nan), {}, ValueError, "finite"),
        (np.ones((2, 3, 4)), {"dense_layers": [2]}, ValueError, "dense_layers item must be <= 1, got 2"),
        (np.ones((2, 3, 4)), {"dense_layers": 0}, TypeError, "dense_layers must be a sequence"),
        (np.ones((2, 3, 4)), {"bins": 0}, ValueError, "bins must be >= 1"),
    ],
    ids=["2d", "empty", "negative", "nan", "dense-out-of-range", "dense-int", "bins0"],
)
def test_density_map_errors(density: np.ndarray, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        selection_density_map(density, **kwargs)


def test_latency_means_and_speedup() -> None:
    fig = latency_comparison([10.0, 12.0, 14.0], [30.0, 30.0, 29.0, 31.0], prefill_ms=(120.5, 118.25))
    adamas, full = fig.data
    assert adamas.x.tolist() == [1, 2, 3] and full.x.tolist() == [1, 2, 3, 4]
    means = sorted((s.y0, s.line.dash) for s in fig.layout.shapes)
    assert means == [(12.0, "dash"), (30.0, "dash")]
    assert "speedup 2.50×" in fig.layout.title.text and "slower" not in fig.layout.title.text
    assert "Adamas 120.5 ms, full 118.2 ms" in fig.layout.title.text
    assert "Adamas is slower" in latency_comparison([4.0], [2.0]).layout.title.text


@pytest.mark.parametrize(("adamas", "full"), [([], [5.0, 6.0]), ([5.0], [])], ids=["no-adamas", "no-full"])
def test_latency_one_run(adamas: list, full: list) -> None:
    fig = latency_comparison(adamas, full)
    assert len(fig.data) == 1 and len(fig.layout.shapes) == 1
    assert "no speedup" in fig.layout.title.text and "prefill" not in fig.layout.title.text


@pytest.mark.parametrize(
    ("adamas", "full", "prefill", "match"),
    [
        ([], [], None, "both empty"),
        ([1.0, -1.0], [1.0], None, "adamas_ms"),
        ([1.0], [0.0], None, "full_ms"),
        ([1.0], [float("inf")], None, "full_ms"),
        ([[1.0]], [1.0], None, "adamas_ms"),
        ([1.0], [1.0], (1.0,), "prefill_ms"),
        ([1.0], [1.0], (1.0, -2.0), "prefill_ms"),
        ([1.0], [1.0], ("fast", 1.0), "prefill_ms"),
    ],
    ids=["both-empty", "negative", "zero", "inf", "2d", "prefill-one", "prefill-negative", "prefill-str"],
)
def test_latency_errors(adamas: list, full: list, prefill: tuple | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        latency_comparison(adamas, full, prefill)


def _recall(steps: int = 5, layers: int = 6, heads: int = 4, dense: tuple[int, ...] = (0, 1)) -> np.ndarray:
    recall = np.random.default_rng(1).uniform(0.3, 1.0, size=(steps, layers, heads))  # [steps, layers, Hq]
    recall[:, list(dense)] = np.nan
    return recall


def test_recall_by_layer_values() -> None:
    recall = _recall()
    recall[0, 3, 1] = np.nan  # a head missing at one step is left out of that layer's mean
    fig = recall_by_layer(recall, dense_layers=(0, 1), budget=64)
    high, low, mean = fig.data
    sparse = recall[:, 2:]
    assert np.isnan(np.asarray(mean.y[:2], dtype=float)).all()
    np.testing.assert_allclose(np.asarray(mean.y[2:], dtype=float), np.nanmean(sparse, axis=(0, 2)))
    per_head = np.nanmean(sparse, axis=0)  # [layers, Hq]
    np.testing.assert_allclose(np.asarray(low.y[2:], dtype=float), per_head.min(axis=1))
    np.testing.assert_allclose(np.asarray(high.y[2:], dtype=float), per_head.max(axis=1))
    assert low.fill == "tonexty"
    assert tuple(fig.layout.yaxis.range) == (0, 1)
    assert [a.x for a in fig.layout.annotations if a.text == "dense"] == [0, 1]
    assert "budget 64" in fig.layout.title.text and "5 steps" in fig.layout.title.text


def test_recall_by_layer_excludes_declared_dense_layers() -> None:
    recall = _recall(dense=())  # values present, but layer 2 is declared dense: they must not show
    fig = recall_by_layer(recall, dense_layers=[2])
    mean = np.asarray(fig.data[2].y, dtype=float)
    assert np.isnan(mean[2]) and not np.isnan(np.delete(mean, 2)).any()
    assert [a.x for a in fig.layout.annotations if a.text == "dense"] == [2]
    assert "budget" not in fig.layout.title.text


def test_recall_by_layer_all_dense() -> None:
    fig = recall_by_layer(np.full((2, 3, 2), np.nan), dense_layers=(0, 1, 2))
    assert np.isnan(np.asarray(fig.data[2].y, dtype=float)).all()
    assert "no sparse layer" in fig.layout.title.text


@pytest.mark.parametrize(
    ("recall", "kwargs", "match"),
    [
        (np.ones((3, 4)), {}, "3 dims"),
        (np.ones((0, 3, 4)), {}, "non-empty"),
        (np.full((2, 3, 4), 1.5), {}, r"\[0, 1\]"),
        (np.full((2, 3, 4), -0.1), {}, r"\[0, 1\]"),
        (np.full((2, 3, 4), np.inf), {}, "NaN"),
        (np.ones((2, 3, 4)), {"dense_layers": (3,)}, "dense_layers"),
        (np.ones((2, 3, 4)), {"budget": 0}, "budget"),
    ],
    ids=["2d", "no-steps", "above-1", "negative", "inf", "dense-out-of-range", "budget0"],
)
def test_recall_by_layer_errors(recall: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        recall_by_layer(recall, **kwargs)
