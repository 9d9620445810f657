"""Per-step decode latency of Adamas against full attention."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from visualize.checks import as_vector
from visualize.style import ADAMAS_COLOR, FULL_COLOR, titled


def _check_latencies(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """`values` as a 1-D array of positive milliseconds (possibly empty), else ValueError."""
    ms = as_vector(name, values, allow_empty=True)
    if (ms <= 0).any():
        raise ValueError(f"{name} must hold positive milliseconds, got a minimum of {ms.min()}")
    return ms


def latency_comparison(
    adamas_ms: Sequence[float] | np.ndarray,
    full_ms: Sequence[float] | np.ndarray,
    prefill_ms: tuple[float, float] | None = None,
    copied: bool = False,
) -> go.Figure:
    """Decode latency per step, Adamas vs full attention: dashed means (their values in the legend), the speedup in
    the title. `prefill_ms`: each run's step 0; `copied`: the full run's copied the Adamas run's prefilled cache."""
    adamas, full = _check_latencies("adamas_ms", adamas_ms), _check_latencies("full_ms", full_ms)
    if adamas.size == 0 and full.size == 0:
        raise ValueError("adamas_ms and full_ms are both empty: give the latencies of at least one run")
    if prefill_ms is not None:
        prefill = as_vector("prefill_ms", prefill_ms)
        if prefill.size != 2 or (prefill <= 0).any():
            raise ValueError(f"prefill_ms must be two positive numbers (Adamas, full), got {prefill_ms!r}")
    fig = go.Figure()
    for name, ms, color in (("Adamas", adamas, ADAMAS_COLOR), ("full", full, FULL_COLOR)):
        if ms.size == 0:
            continue
        mean = float(ms.mean())
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, ms.size + 1),  # decode steps; step 0 is the prefill
                y=ms,
                mode="lines+markers",
                name=f"{name}, mean {mean:.2f} ms",  # the legend labels the dashed mean line
                line={"color": color},
                marker={"size": 4},
                hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.2f}} ms<extra></extra>",
            )
        )
        fig.add_hline(y=mean, line={"color": color, "dash": "dash", "width": 1})
    if adamas.size and full.size:
        speedup = full.mean() / adamas.mean()
        slower = "; Adamas is slower" if speedup < 1 else ""
        notes = [f"Adamas speedup {speedup:.2f}× (mean full / mean Adamas{slower}); dashed: the means"]
    else:
        notes = [f"{'full attention' if adamas.size == 0 else 'Adamas'} only, no speedup to show; dashed: the mean"]
    if prefill_ms is not None and copied:
        notes.append(f"one prefill (dense), {prefill[0]:.1f} ms; full attention copied its cache, {prefill[1]:.1f} ms")
    elif prefill_ms is not None:
        notes.append(f"prefill (dense in both): Adamas {prefill[0]:.1f} ms, full {prefill[1]:.1f} ms")
    fig.update_layout(
        xaxis={"title": "decode step", **step_axis(max(adamas.size, full.size))},
        yaxis={"title": "latency (ms)", "rangemode": "tozero"},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
        template="plotly_white",
    )
    return titled(fig, "Decode latency per step", *notes, legend_above=True)


def step_axis(steps: int, ticks: int = 8) -> dict[str, object]:
    """An x axis over decode steps 1 to `steps`, at most `ticks` whole-step labels: no step 0 (the prefill), so no
    label at the origin to run into the latency axis' 0."""
    dtick = next(m * 10**e for e in range(12) for m in (1, 2, 5) if steps <= m * 10**e * ticks)
    return {"range": [0.5, steps + 0.5], "tick0": 1 if dtick == 1 else 0, "dtick": dtick}


STAGE_COLORS = {
    "append + encode": "#9467bd",
    "estimate + select": "#ff7f0e",
    "sparse attention": ADAMAS_COLOR,
    "dense attention": FULL_COLOR,
    "rest of the model": "#bbbbbb",
    "between kernels": "#eeeeee",
}


def stage_breakdown(stages_us: dict[str, dict[str, float]], step_ms: dict[str, float] | None = None) -> go.Figure:
    """One decode step of each run split into stages (device µs), stacked; with `step_ms`, the gap to the measured step.

    stages_us: run name ("adamas", "full") -> stage -> µs, as adamas.profiling.stage_times gives them.
    step_ms: run name -> the run's mean measured step (ms); what the kernels leave of it shows as "between kernels".
    """
    if not isinstance(stages_us, dict) or not stages_us:
        raise ValueError("stages_us must map at least one run to its stage times")
    runs = list(stages_us)
    columns = {run: {s: float(us) / 1e3 for s, us in stages_us[run].items()} for run in runs}  # ms
    for run, parts in columns.items():
        if not parts or any(not np.isfinite(v) or v < 0 for v in parts.values()):
            raise ValueError(f"the stage times of {run!r} must be finite, non-negative numbers, got {stages_us[run]}")
        if step_ms and run in step_ms:
            parts["between kernels"] = max(float(step_ms[run]) - sum(parts.values()), 0.0)
    labels = {"adamas": "Adamas", "full": "full attention"}
    names = [labels.get(run, run) for run in runs]
    fig = go.Figure()
    stages = list(dict.fromkeys(s for parts in columns.values() for s in parts))
    for stage in stages:
        values = [columns[run].get(stage, 0.0) for run in runs]
        fig.add_trace(
            go.Bar(
                y=names,
                x=values,
                name=stage,
                orientation="h",
                marker={"color": STAGE_COLORS.get(stage)},
                hovertemplate=f"%{{y}}<br>{stage}: %{{x:.3f}} ms<extra></extra>",
            )
        )
    kernels = {run: sum(v for s, v in columns[run].items() if s != "between kernels") for run in runs}
    totals = ", ".join(f"{name} {kernels[run]:.2f} ms" for run, name in zip(runs, names, strict=True))
    fig.update_layout(
        barmode="stack",
        xaxis={"title": "ms per decode step", "rangemode": "tozero"},
        legend={"orientation": "h", "x": 0, "y": -0.45, "yanchor": "top", "traceorder": "normal"},
        template="plotly_white",
        height=340,
        margin={"l": 110},
    )
    note = f"kernels of one profiled step: {totals}"
    return titled(fig, "Where one decode step's GPU time goes", note, full_width=True)
