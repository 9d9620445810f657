"""Evaluation: passkey, RULER-style tasks, perplexity and recall@budget, per selector and budget.

`python -m adamas.eval --out DIR` (see `__main__`) runs the grid of `runner.Grid` and writes
results.json, results.md and figures (`report`). The pieces: `tasks` (offline prompt
generators and scoring), `decoding` (one dense prefill per prompt, replayed for every
selector), `perplexity` (decode-mode NLL), `recall` (recall@budget per layer), `runner`.
"""

from adamas.eval.runner import QUICK, Grid, run_grid

__all__ = ["QUICK", "Grid", "run_grid"]
