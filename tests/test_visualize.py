"""Figure functions: structure of the returned Plotly figures, their input checks, and that each fits its panel."""

from __future__ import annotations

import numpy as np
import pytest

go = pytest.importorskip("plotly.graph_objects", reason="plotly is not installed (e.g. on the GPU image)")

import visualize  # noqa: E402
from visualize import (  # noqa: E402
    density,
    document,
    estimated_vs_true_scatter,
    latency_comparison,
    recall,
    recall_by_layer,
    selected_token_heatmap,
    selection_density_map,
    stage_breakdown,
    style,
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
    assert fig.layout.xaxis.type == "category"  # column i spans [i - ½, i + ½]: position 10 starts at 9.5
    assert list(fig.layout.xaxis.ticktext[:2]) == ["0", "10"] and list(fig.layout.xaxis.tickvals[:2]) == [-0.5, 9.5]


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
    assert [a.x for a in fig.layout.annotations if a.text == "dense"] == [0.5], "one label for the run of layers 0-1"
    assert [(s.x0, s.x1) for s in fig.layout.shapes] == [(-0.5, 1.5)]
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


def _panels() -> dict[str, tuple[go.Figure, bool]]:
    """Each figure of the app as a run on the default model draws it (30 layers, 9 heads, 4.5K tokens), with the
    app's longest titles, and whether the page gives it the full width (else half a row)."""
    rng = np.random.default_rng(0)
    estimated, true = _scores(4500)
    words = ["Netherfield", "\n\n", " the", " acknowledged", ","] * 900
    stages = {
        "adamas": {"append + encode": 40.0, "estimate + select": 300.0, "rest of the model": 2500.0},
        "full": {"x": 1.0},
    }
    return {
        "document": (
            selected_token_heatmap(
                words,
                rng.integers(0, 90, size=len(words)),
                (300, 340),
                title="How often Adamas selected each document token (outlined: the passage that holds the example's "
                "answer)",
            ),
            True,
        ),
        "density": (
            selection_density_map(rng.integers(0, 9, size=(30, 9, 4515)), (0, 1), title="Selection density"),
            False,
        ),
        "scatter": (
            estimated_vs_true_scatter(estimated, true, list(range(128)), 128, "Layer 12, head 8, step 117"),
            False,
        ),
        "latency": (latency_comparison(80 + rng.random(120), 84 + rng.random(120), (5234.5, 5120.25)), False),
        "recall": (recall_by_layer(_recall(40, 30, 9, dense=(0, 1)), (0, 1), 1024), False),
        "stages": (stage_breakdown(stages, {"adamas": 80.0, "full": 84.0}), True),
    }


@pytest.mark.parametrize("name", ["document", "density", "scatter", "latency", "recall", "stages"])
def test_every_title_fits_its_panel_and_the_top_margin_holds_it(name: str) -> None:
    fig, full_width = _panels()[name]
    lines = fig.layout.title.text.split("<br>")
    notes = [line.removeprefix("<sup>").removesuffix("</sup>") for line in lines if line.startswith("<sup>")]
    heads = [line for line in lines if not line.startswith("<sup>")]
    assert heads and all(
        len(line) <= (style.FULL_TITLE_CHARS if full_width else style.HALF_TITLE_CHARS) for line in heads
    )
    assert all(len(line) <= (style.FULL_NOTE_CHARS if full_width else style.HALF_NOTE_CHARS) for line in notes)
    legend_above = (
        fig.layout.legend.y is not None and fig.layout.legend.y >= 1 and fig.layout.legend.yanchor == "bottom"
    )
    room = style.TITLE_PAD_PX + style.TITLE_LINE_PX * len(lines) + (style.LEGEND_ROW_PX if legend_above else 0)
    assert fig.layout.margin.t >= room, "the title (and a legend above the plot) must not run into the plot"
    assert (fig.layout.title.yref, fig.layout.title.yanchor, fig.layout.title.pad.t) == ("container", "top", 24)


def test_recall_labels_each_run_of_dense_layers_once_and_keeps_layer_numbers_level() -> None:
    fig = recall_by_layer(_recall(3, 30, 2, dense=(0, 1, 5)), (0, 1, 5))
    labels = [a for a in fig.layout.annotations if a.text == "dense"]
    assert [a.x for a in labels] == [0.5, 5], "neighbouring dense layers share one label"
    assert [(s.x0, s.x1) for s in fig.layout.shapes] == [(-0.5, 1.5), (4.5, 5.5)]
    assert fig.layout.xaxis.tickangle == 0 and 30 / fig.layout.xaxis.dtick <= recall.MAX_LAYER_TICKS
    assert recall.runs(()) == [] and recall.runs((3,)) == [(3, 3)]


@pytest.mark.parametrize("steps", [1, 5, 9, 31, 127])
def test_latency_steps_start_at_one_with_few_whole_labels(steps: int) -> None:
    axis = latency_comparison(np.full(steps, 80.0), np.full(steps, 84.0)).layout.xaxis
    assert tuple(axis.range) == (0.5, steps + 0.5), "no step 0 (the prefill), no label at the origin"
    labels = [t for t in np.arange(axis.tick0, steps + 1, axis.dtick) if t >= 1]
    assert axis.dtick == int(axis.dtick) and 1 <= len(labels) <= 8


def test_latency_means_sit_in_the_legend_not_on_the_lines() -> None:
    fig = latency_comparison([80.0, 81.0], [84.0, 85.0])
    assert fig.layout.annotations == (), "a label on a dashed mean line would cover the other run's line"
    assert [t.name for t in fig.data] == ["Adamas, mean 80.50 ms", "full, mean 84.50 ms"]


@pytest.mark.parametrize("length", [1, 50, 4515, 131_072])
def test_density_position_labels_stay_level_and_few(length: int) -> None:
    fig = selection_density_map(np.ones((2, 1, length)))
    assert fig.layout.xaxis.tickangle == 0 and 1 <= len(fig.layout.xaxis.ticktext) <= density.X_TICKS + 1


@pytest.mark.parametrize("width", [10, 24, 40, 64])
def test_token_labels_fit_their_cells(width: int) -> None:
    tokens = ["Netherfield", " acknowledged", "<|im_end|>", " a", "\n"] * 40
    fig = selected_token_heatmap(tokens, np.ones(len(tokens)), width=width)
    shown = [cell.replace("&lt;", "<") for row in fig.data[0].text for cell in row]
    assert max(map(document.label_px, shown)) <= document.PLOT_PX / width - document.GAP_PX, "a gap between words"
    assert document.label_px("mmmm") > document.label_px("illi"), "cut by width, not by length"


@pytest.mark.parametrize("tokens", [3, 60, 5000], ids=["three-tokens", "two-rows", "long"])
def test_token_colour_bar_fits_the_plot(tokens: int) -> None:
    fig = selected_token_heatmap(["a"] * tokens, np.arange(tokens), width=40)
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    bar = fig.data[0].colorbar
    assert bar.lenmode == "pixels" and 120 <= bar.len <= plot_px, "a bar longer than the plot is cut off"


def test_scatter_cut_label_sits_inside_the_plot() -> None:
    estimated, true = _scores()
    fig = estimated_vs_true_scatter(estimated, true, np.argsort(estimated)[-10:], 10)
    assert [a.xanchor for a in fig.layout.annotations] == ["right"], "left of the cut, which lies near the right edge"
