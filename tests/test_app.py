"""The Gradio app: it builds without launching and its handler turns bad input into a message."""

from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio", reason="the app's packages are not installed (e.g. on the GPU image)")
go = pytest.importorskip("plotly.graph_objects")
app = pytest.importorskip("app")


def test_build_app_wires_the_run_button() -> None:
    demo = app.build_app()
    assert isinstance(demo, gr.Blocks)
    assert demo.title == "Adamas Studio — core explorer"
    assert {type(b).__name__ for b in demo.blocks.values()} >= {"Slider", "Textbox", "Number", "Button", "Plot"}
    assert any(dep.fn is app.run for dep in demo.fns.values())


def test_run_good_input() -> None:
    scatter, curve, summary = app.run(512, 64, 8, "paper", 0)
    assert isinstance(scatter, go.Figure) and isinstance(curve, go.Figure)
    assert sum(len(trace.x) for trace in scatter.data) == 512
    assert "recall@64" in scatter.layout.title.text
    assert list(curve.layout.xaxis.ticktext) == ["16", "32", "64", "128", "256", "512"]
    assert curve.data[0].y[-1] == 1.0
    assert "recall@64" in summary and "/ 8" in summary and "relative error" in summary


def test_run_custom_thresholds_and_float_ui_values() -> None:
    _, _, summary = app.run(512.0, 32.0, 4.0, " -8, 0, 8 ", 1.0)
    assert "thresholds -8, 0, 8" in summary


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((256, 1024, 8, "paper", 0), "must not exceed the context length"),
        ((512, 64, 8, "1, 2", 0), "exactly 3 values"),
        ((512, 64, 8, "a, b, c", 0), "three numbers"),
        ((512, 64, 8, "3, 2, 1", 0), "increasing"),
        ((512, 64, 8, "paper", None), "seed"),
        ((100, 64, 8, "paper", 0), "context length"),
        ((512, 64.5, 8, "paper", 0), "whole number"),
    ],
    ids=["budget>L", "two-thresholds", "not-numbers", "decreasing", "no-seed", "short-context", "fractional-budget"],
)
def test_run_bad_input_warns_and_explains(args: tuple, match: str) -> None:
    with pytest.warns(UserWarning, match=match):
        scatter, curve, summary = app.run(*args)
    assert scatter is None and curve is None
    assert summary.startswith("**Could not run:**") and match in summary


def test_parse_thresholds_and_sweep() -> None:
    assert app.parse_thresholds("Paper") == "paper"
    assert app.parse_thresholds("(-10, 0, 10)") == (-10.0, 0.0, 10.0)
    assert app.sweep_budgets(256) == [16, 32, 64, 128, 256]
    assert app.sweep_budgets(16384)[-1] == 4096
