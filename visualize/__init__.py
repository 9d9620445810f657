"""Plotly figures for Adamas Studio; they take plain lists, arrays and numbers, never models or tensors."""

from visualize.scores import estimated_vs_true_scatter, recall_vs_budget

__all__ = ["estimated_vs_true_scatter", "recall_vs_budget"]
