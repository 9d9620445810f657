"""Figure 1: the document as a page of tokens shaded by their selections, its labels, outline and input checks."""

from __future__ import annotations

import numpy as np
import pytest

go = pytest.importorskip("plotly.graph_objects", reason="plotly is not installed (e.g. on the GPU image)")

from visualize import densest_span, document, selected_token_heatmap  # noqa: E402


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
    last = text[n - 1]
    assert text[0] == "t0" and (last == f"t{n - 1}" or f"t{n - 1}".startswith(last.rstrip("…")))
    assert fig.data[0].customdata[0][0] == "token 0: t0"
    shown = max(rows, document.MIN_ROWS)  # a short text keeps room for the colour bar and the axis title
    assert tuple(fig.layout.yaxis.range) == (shown - 0.5, -0.5), "reversed: the text reads downwards"
    assert fig.layout.height >= shown * document.ROW_PX + fig.layout.margin.t
    assert f"{counts.sum():,} selections over {n:,} tokens" in fig.layout.title.text


def test_token_heatmap_labels_show_whitespace() -> None:
    tokens = ["\n\n", " ", " the", "<|im_end|>", "a\tb", "supercalifragilistic"]
    fig = selected_token_heatmap(tokens, [1, 2, 3, 4, 5, 6], width=40, title="My doc")
    labels = list(fig.data[0].text[0][:6])
    assert labels == ["⏎⏎", "␣", "the", "&lt;|i…", "a⇥b", "su…"], "cut to what fits a cell (document.label_px)"
    hover = list(fig.data[0].customdata[0][:3])
    assert hover == ["token 0: ⏎⏎", "token 1: ␣", "token 2: ␣the"]
    assert fig.layout.title.text.startswith("My doc") and "21 selections" in fig.layout.title.text
    wide = selected_token_heatmap(tokens, [1, 2, 3, 4, 5, 6], width=5)  # fewer cells a row: longer labels
    assert wide.data[0].text[1][0] == "supercalifragilistic"


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
