"""Plotly figures for Adamas Studio; they take plain lists, arrays and numbers, never models or tensors."""

from visualize.density import selection_density_map
from visualize.document import densest_span, selected_token_heatmap
from visualize.evaluation import (
    accuracy_vs_budget,
    evaluation_figures,
    metric_vs_budget,
    perplexity_vs_budget,
    selection_recall_vs_budget,
    selector_recall_by_layer,
)
from visualize.latency import latency_comparison, stage_breakdown
from visualize.recall import recall_by_layer
from visualize.scores import estimated_vs_true_scatter

__all__ = [
    "accuracy_vs_budget",
    "densest_span",
    "estimated_vs_true_scatter",
    "evaluation_figures",
    "latency_comparison",
    "metric_vs_budget",
    "perplexity_vs_budget",
    "recall_by_layer",
    "selected_token_heatmap",
    "selection_density_map",
    "selection_recall_vs_budget",
    "selector_recall_by_layer",
    "stage_breakdown",
]
