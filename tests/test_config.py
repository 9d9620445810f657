"""AdamasConfig: defaults, normalisation and every rejected value; the integer check and the code distance bound."""

import dataclasses

import numpy as np
import pytest
import torch

from adamas import PAPER_THRESHOLDS, AdamasConfig
from adamas.config import (
    DEFAULT_DENSE_LAYERS,
    DEFAULT_RECENT,
    DEFAULT_SINK,
    DEFAULT_THRESHOLDS,
    WINDOW_BUDGET,
    check_int,
    max_code_distance,
)


def test_defaults_are_the_measured_choice_and_the_paper_is_one_call_away():
    config = AdamasConfig()
    assert (config.thresholds, config.dense_layers) == (DEFAULT_THRESHOLDS, DEFAULT_DENSE_LAYERS)
    assert (config.sink, config.recent, config.backend) == (DEFAULT_SINK, DEFAULT_RECENT, "auto")
    assert config.dense_backend == "auto"
    paper = AdamasConfig.paper(64)
    assert paper.thresholds == PAPER_THRESHOLDS == (-10.0, 0.0, 10.0)
    assert (paper.budget, paper.dense_layers, paper.sink, paper.recent) == (64, (0, 1), 0, 0)
    assert AdamasConfig.paper(budget=16, sink=2, selector="oracle").sink == 2


@pytest.mark.parametrize(
    ("budget", "given", "window"),
    [
        (1, {}, (0, 0)),
        (4, {}, (0, 2)),
        (16, {}, (1, 8)),
        (WINDOW_BUDGET, {}, (DEFAULT_SINK, DEFAULT_RECENT)),
        (4096, {}, (DEFAULT_SINK, DEFAULT_RECENT)),
        (16, {"sink": 10}, (10, 6)),
        (16, {"recent": 16}, (0, 16)),
        (128, {"sink": 0}, (0, DEFAULT_RECENT)),
        (128, {"sink": 8, "recent": 0}, (8, 0)),
    ],
    ids=lambda v: "-".join(f"{k}{x}" for k, x in v.items()) if isinstance(v, dict) else str(v),
)
def test_an_unset_window_scales_to_the_budget_and_fits_around_a_set_one(budget, given, window):
    config = AdamasConfig(budget=budget, **given)
    assert (config.sink, config.recent) == window
    assert config.sink + config.recent <= budget


def test_replace_keeps_the_resolved_window_and_says_how_to_shrink_it():
    config = AdamasConfig()
    assert dataclasses.replace(config, budget=256).recent == DEFAULT_RECENT
    with pytest.raises(ValueError, match=rf"sink \+ recent \({DEFAULT_SINK} \+ {DEFAULT_RECENT}\).*leave one unset"):
        dataclasses.replace(config, budget=16)
    assert dataclasses.replace(config, budget=16, sink=None, recent=None).recent == 8


def test_values_are_normalised_and_frozen():
    config = AdamasConfig(budget=64, thresholds=[-1, 0, 2], dense_layers=[3], backend="torch")
    assert config.thresholds == (-1.0, 0.0, 2.0) and config.dense_layers == (3,)
    assert AdamasConfig(thresholds="paper").thresholds == PAPER_THRESHOLDS
    assert AdamasConfig(thresholds="calibrated").thresholds == "calibrated"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.budget = 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"budget": 0}, ValueError, "budget must be >= 1, got 0"),
        ({"budget": 12.0}, TypeError, "budget must be an int"),
        ({"budget": True}, TypeError, "budget"),
        ({"thresholds": (1.0, 1.0, 2.0)}, ValueError, "strictly increasing"),
        ({"thresholds": (1.0, 2.0, 3.0, 4.0)}, ValueError, "exactly 3"),
        ({"thresholds": ("a", "b", "c")}, TypeError, "three floats"),
        ({"thresholds": "calibrate"}, ValueError, "'paper', 'calibrated' or three"),
        ({"calibration_quantiles": (0.3, 0.5, 1.0)}, ValueError, "between 0 and 1"),
        ({"calibration_quantiles": (0.6, 0.5, 0.7)}, ValueError, "calibration_quantiles must be strictly increasing"),
        ({"dense_layers": 2}, TypeError, "dense_layers"),
        ({"dense_layers": (0, -1)}, ValueError, "dense_layers item must be >= 0"),
        ({"sink": -1}, ValueError, "sink"),
        ({"recent": 2.5}, TypeError, "recent"),
        ({"budget": 8, "sink": 4, "recent": 5}, ValueError, r"sink \+ recent \(4 \+ 5\).*budget \(8\)"),
        ({"budget": 8, "sink": 9}, ValueError, r"sink \+ recent \(9 \+ 0\) must not exceed budget \(8\)"),
        ({"backend": "cuda"}, ValueError, "'cuda'"),
        ({"dense_backend": "cpu"}, ValueError, r"dense_backend must be one of .*, got 'cpu'"),
    ],
)
def test_bad_values_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdamasConfig(**kwargs)


def test_max_code_distance_is_every_dim_at_opposite_levels():
    from adamas.reference import manhattan, pack

    for d in (16, 64, 128):
        low, high = pack(torch.zeros(1, 1, d)), pack(torch.full((1, 1, 1, d), 3))
        assert int(manhattan(low, high)) == max_code_distance(d) == 3 * d


@pytest.mark.parametrize(
    ("value", "maximum", "error", "match"),
    [
        (True, None, TypeError, "n must be an int, got bool True"),
        (2.0, None, TypeError, "n must be an int, got float"),
        (0, None, ValueError, "n must be >= 1, got 0"),
        (9, 8, ValueError, "n must be <= 8, got 9"),
    ],
    ids=["bool", "float", "below", "above"],
)
def test_check_int_names_the_value_and_what_is_allowed(value, maximum, error, match):
    with pytest.raises(error, match=match):
        check_int("n", value, 1, maximum)
    assert check_int("n", np.int64(8), 1, 8) == 8 and type(check_int("n", np.int64(8), 1)) is int
