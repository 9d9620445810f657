"""Synthetic decode problems and the selection report built on them."""

from __future__ import annotations

import math

import pytest
import torch

from adamas import hadamard
from adamas.synthetic import SyntheticProblem, recall_curve, selection_report, synthetic_decode_problem


@pytest.mark.parametrize(
    ("length", "n_relevant", "head_dim", "q_heads", "kv_heads"),
    [(1, 0, 16, 1, 1), (1, 1, 64, 4, 1), (63, 5, 32, 4, 2), (512, 8, 128, 8, 2)],
    ids=["L1", "L1-planted", "L63-gqa2", "L512-gqa4"],
)
def test_shapes_and_planted_positions(length: int, n_relevant: int, head_dim: int, q_heads: int, kv_heads: int) -> None:
    p = synthetic_decode_problem(length, n_relevant, head_dim=head_dim, q_heads=q_heads, kv_heads=kv_heads)
    assert p.q.shape == (1, q_heads, head_dim)
    assert p.k.shape == p.v.shape == (1, kv_heads, length, head_dim)
    assert isinstance(p, SyntheticProblem) and p.length == length
    assert len(p.planted) == len(set(p.planted)) == n_relevant
    assert all(0 <= i < length for i in p.planted)
    assert list(p.planted) == sorted(p.planted)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_dtype_and_seed(dtype: torch.dtype) -> None:
    a = synthetic_decode_problem(128, 4, seed=3, dtype=dtype)
    b = synthetic_decode_problem(128, 4, seed=3, dtype=dtype)
    c = synthetic_decode_problem(128, 4, seed=4, dtype=dtype)
    assert a.q.dtype == a.k.dtype == a.v.dtype == dtype
    assert torch.equal(a.k, b.k) and torch.equal(a.q, b.q) and a.planted == b.planted
    assert not torch.equal(a.k, c.k)


def test_hadamard_keys_reach_the_paper_thresholds() -> None:
    p = synthetic_decode_problem(512, 0)
    h = hadamard(p.k)
    assert 7.0 < h.std().item() < 11.0
    outside = (h.abs() > 10).float().mean().item()
    assert 0.1 < outside < 0.5, "all four code buckets should be used"


def test_planted_tokens_have_top_true_scores() -> None:
    p = synthetic_decode_problem(512, 8)
    true = torch.tensor(selection_report(p, 512)["true"])
    assert set(true.topk(8).indices.tolist()) == set(p.planted)


def test_generous_budget_finds_planted_tokens() -> None:
    p = synthetic_decode_problem(512, 8, seed=1)
    report = selection_report(p, 128)
    assert report["planted_selected"] == 8
    assert report["recall"] > 0.6
    assert report["output_error"] < 1e-3
    assert len(report["selected"]) == report["budget"] == 128
    assert len(report["estimated"]) == len(report["true"]) == report["length"] == 512
    assert all(e <= 0 for e in report["estimated"])


@pytest.mark.parametrize("budget", [512, 600], ids=["budget=L", "budget>L"])
def test_budget_at_least_length_is_exact(budget: int) -> None:
    p = synthetic_decode_problem(512, 4)
    report = selection_report(p, budget)
    assert report["recall"] == 1.0
    assert report["selected"] == list(range(512))
    assert report["output_error"] < 1e-6
    assert report["planted_selected"] == 4


def test_report_is_plain_values() -> None:
    report = selection_report(synthetic_decode_problem(256, 2), 32, thresholds=(-8.0, 0.0, 8.0))
    for key in ("recall", "output_error"):
        assert isinstance(report[key], float) and math.isfinite(report[key])
    assert all(isinstance(report[key], list) for key in ("estimated", "true", "selected"))
    assert all(isinstance(i, int) for i in report["selected"])


def test_recall_curve_matches_report_and_reaches_one() -> None:
    p = synthetic_decode_problem(512, 8)
    budgets = [16, 64, 256, 512]
    curve = recall_curve(p, budgets)
    assert len(curve) == len(budgets)
    assert curve[-1] == 1.0
    assert curve[1] == pytest.approx(selection_report(p, 64)["recall"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"length": 0, "n_relevant": 0}, ValueError, "length"),
        ({"length": 8, "n_relevant": 9}, ValueError, "n_relevant"),
        ({"length": 8, "n_relevant": -1}, ValueError, "n_relevant"),
        ({"length": 8.0, "n_relevant": 1}, TypeError, "length"),
        ({"length": 8, "n_relevant": 1, "head_dim": 96}, ValueError, "head_dim"),
        ({"length": 8, "n_relevant": 1, "q_heads": 6, "kv_heads": 4}, ValueError, "query heads"),
        ({"length": 8, "n_relevant": 1, "seed": -1}, ValueError, "seed"),
        ({"length": 8, "n_relevant": 1, "dtype": torch.int32}, TypeError, "dtype"),
    ],
    ids=["length0", "too-many-planted", "negative-planted", "float-length", "head_dim96", "gqa", "seed", "dtype"],
)
def test_problem_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        synthetic_decode_problem(**kwargs)


def test_report_errors() -> None:
    p = synthetic_decode_problem(64, 2)
    with pytest.raises(ValueError, match="budget"):
        selection_report(p, 0)
    with pytest.raises(ValueError, match="increasing"):
        selection_report(p, 8, thresholds=(1.0, 0.0, 2.0))
    with pytest.raises(TypeError, match="problem"):
        selection_report("not a problem", 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budgets"):
        recall_curve(p, [])
