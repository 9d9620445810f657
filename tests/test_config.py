"""AdamasConfig: defaults, normalisation and every rejected value."""

import dataclasses

import pytest

from adamas import PAPER_THRESHOLDS, AdamasConfig


def test_defaults_follow_the_paper():
    config = AdamasConfig()
    assert config.thresholds == PAPER_THRESHOLDS == (-10.0, 0.0, 10.0)
    assert config.dense_layers == (0, 1)
    assert (config.sink, config.recent, config.backend) == (0, 0, "auto")


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
        ({"backend": "cuda"}, ValueError, "'cuda'"),
    ],
)
def test_bad_values_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdamasConfig(**kwargs)
