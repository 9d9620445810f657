"""The Studio page's figures, from a finished run's plain values: which figure goes in which panel, numbered
in page order, and a one-line caption saying what each panel shows before there is a run to draw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from visualize.density import selection_density_map
from visualize.document import densest_span, selected_token_heatmap
from visualize.latency import latency_comparison, stage_breakdown
from visualize.recall import recall_by_layer
from visualize.report import standalone_report
from visualize.scores import estimated_vs_true_scatter

if TYPE_CHECKING:
    from adamas.comparison import Comparison
    from adamas.session import Session

PANELS = {
    "document_plot": "1 · The document, each token shaded by how often Adamas selected it",
    "density_plot": "2 · Selection density: layer × head × position",
    "scatter_plot": "3 · Estimated vs true scores of one head at one decode step (pick them below)",
    "latency_plot": "4 · Decode latency per step, Adamas beside full attention",
    "recall_plot": "5 · Recall@budget per layer: the share of the true top attention mass Adamas kept",
    "stage_plot": "6 · Where one decode step's GPU time goes (on a GPU only)",
}
"""Each panel's caption, in page order: the number leads its figure's title too."""
HIGHLIGHT_TOKENS = 48
"""The passage outlined in figure 1 when no example says where the answer is."""


def numbered(name: str, figure: go.Figure) -> go.Figure:
    """`figure` with its title led by its panel's number."""
    number = PANELS[name].split(" · ")[0]
    return figure.update_layout(title_text=f"{number} · {figure.layout.title.text}")


def document_panel(
    tokens: Sequence[str], density: np.ndarray | None, start: int, highlight: tuple[int, int] | None
) -> go.Figure:
    """Figure 1: each document token (prompt positions start ... start + len(tokens)) shaded by its selections.

    density [layers, Hq, L] int32 summed over decode steps, or None before any step; `highlight`, the
    document tokens holding an example's answer, else the densest passage is outlined.
    """
    counts = np.zeros(len(tokens)) if density is None else density[:, :, start : start + len(tokens)].sum(axis=(0, 1))
    if highlight is not None:
        outlined = "the passage that holds the example's answer"
    else:
        highlight, outlined = densest_span(counts, HIGHLIGHT_TOKENS), "the most selected passage"
    title = f"How often Adamas selected each document token (outlined: {outlined})"
    return numbered("document_plot", selected_token_heatmap(tokens, counts, highlight, title=title))


def scatter_panel(
    heads: Sequence[Mapping[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]],
    layer: object,
    head: object,
    step: object,
    budget: int,
) -> go.Figure | None:
    """Figure 3: estimated vs true scores of one traced (layer, head) at decode step `step` (from 1, clamped);
    None when nothing was traced there."""
    if not heads or layer is None or head is None or step is None:
        return None
    step = min(max(int(step), 1), len(heads))
    scores = heads[step - 1].get((int(layer), int(head)))
    if scores is None:
        return None
    selected, estimated, true = scores
    title = f"Layer {int(layer)}, head {int(head)}, step {step}"
    return numbered("scatter_plot", estimated_vs_true_scatter(estimated, true, selected[selected >= 0], budget, title))


def run_panels(
    result: Comparison,
    tokens: Sequence[str],
    start: int,
    highlight: tuple[int, int] | None,
    dense_layers: Sequence[int],
    budget: int,
) -> dict[str, go.Figure | None]:
    """Figures 1, 2, 4, 5 and 6 of a finished run, by panel name; those with nothing to show are None."""
    figures: dict[str, go.Figure | None] = dict.fromkeys(("density_plot", "latency_plot", "recall_plot", "stage_plot"))
    figures["document_plot"] = document_panel(tokens, result.density, start, highlight)
    if result.recall:
        figures["density_plot"] = numbered(
            "density_plot", selection_density_map(result.density, dense_layers, title="Selection density")
        )
        figures["recall_plot"] = numbered("recall_plot", recall_by_layer(np.stack(result.recall), dense_layers, budget))
    if result.step_ms["adamas"] and result.step_ms["full"]:
        prefill = (result.prefill_ms["adamas"], result.prefill_ms["full"])
        copied = "full" in result.copied_prefill
        figures["latency_plot"] = numbered(
            "latency_plot", latency_comparison(result.step_ms["adamas"], result.step_ms["full"], prefill, copied)
        )
    if result.stages:
        means = {mode: float(np.mean(ms)) for mode, ms in result.step_ms.items() if ms}
        figures["stage_plot"] = numbered("stage_plot", stage_breakdown(result.stages, means))
    return figures


def session_panels(session: Session) -> dict[str, go.Figure | None]:
    """Every figure of a finished session by panel name, figure 3 at its first traced layer, head 0, last step."""
    job, result = session.job, session.result
    budget = job.config.budget
    figures = run_panels(result, job.prompt.tokens, job.prompt.start, job.highlight, job.config.dense_layers, budget)
    layers = session.traced_layers()
    figures["scatter_plot"] = session_scatter(session, layers[0] if layers else None, 0, len(result.heads))
    return {name: figures.get(name) for name in PANELS}  # in page order


def session_scatter(session: Session | None, layer: object, head: object, step: object) -> go.Figure | None:
    """Figure 3 redrawn for the picked layer, head and step from the session alone (None before a run)."""
    if session is None:
        return None
    return scatter_panel(session.result.heads, layer, head, step, session.job.config.budget)


def run_report(run: Mapping, figures: Sequence[go.Figure | None]) -> str:
    """A run as a standalone HTML page: its headline numbers (from the run's export: model, device, question,
    settings, summary) and the figures drawn; it opens offline."""
    summary = run["summary"]
    rows = [
        ("Model", f"{run['model']} · {run['device']}"),
        ("Question", run["question"]),
        ("Adamas answer", summary["adamas_answer"]),
        ("Full-attention answer", summary["full_answer"]),
        ("Settings", ", ".join(f"{k}={v}" for k, v in run["settings"].items() if k != "backend")),
        ("Context tokens", summary["context_tokens"]),
        ("Mean ms per token (Adamas, full)", f"{summary['adamas_ms_per_token']}, {summary['full_ms_per_token']}"),
        ("Decode", summary["decode"]),
        ("Mean recall@budget", summary["mean_recall"]),
    ]
    return standalone_report("Adamas Studio run", rows, [f for f in figures if f is not None])
