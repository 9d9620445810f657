"""A side-by-side run's record: answers and latencies per mode, the headline numbers, the JSON form."""

import numpy as np
import pytest

from adamas.comparison import Comparison
from adamas.generation import StepRecord


def filled() -> Comparison:
    """Two runs of three tokens each, Adamas twice as fast per decode step, with one traced head on one layer."""
    result = Comparison()
    for mode, ms in (("adamas", 2.0), ("full", 4.0)):
        for step, text in enumerate(("The", " sky", " is")):
            result.add(mode, StepRecord(step, step, text, (100.0 if step == 0 else ms) / 1e3, 10 + step, step > 0))
    recall = np.array([[np.nan, np.nan], [0.5, 1.0]], dtype=np.float32)  # [layers, Hq]: layer 0 dense
    result.recall = [recall, recall]
    head = (np.array([0, 3, -1]), np.arange(12, dtype=np.int16), np.ones(12, dtype=np.float16))
    result.heads = [{(1, 0): head}, {(1, 0): head}]
    result.density = np.arange(2 * 2 * 12, dtype=np.int32).reshape(2, 2, 12)
    return result


def test_add_splits_the_prefill_from_the_decode_steps():
    result = filled()
    assert result.answers == {"adamas": "The sky is", "full": "The sky is"}
    assert result.prefill_ms == pytest.approx({"adamas": 100.0, "full": 100.0})
    assert result.step_ms["adamas"] == pytest.approx([2.0, 2.0]) and result.step_ms["full"] == pytest.approx([4.0, 4.0])
    assert result.graph == {"adamas": True, "full": True}


def test_summary_gives_the_headline_numbers():
    summary = filled().summary()
    assert summary["same_answer"] and summary["adamas_answer"] == "The sky is"
    assert summary["new_tokens"] == {"adamas": 3, "full": 3}
    assert summary["speedup"] == pytest.approx(2.0) and summary["adamas_ms_per_token"] == pytest.approx(2.0)
    assert summary["mean_recall"] == pytest.approx(0.75), "the dense layer's NaN is left out"
    assert summary["decode"] == "cuda graph"
    assert Comparison().summary()["mean_recall"] is None and Comparison().summary()["speedup"] is None


def test_to_dict_is_plain_json_with_the_density_binned():
    run = filled().to_dict(density_bins=5)
    assert run["recall"][0] == [[None, None], [0.5, 1.0]]
    assert run["heads"] == [
        {
            "layer": 1,
            "head": 0,
            "selected": [[0, 3, -1], [0, 3, -1]],
            "last_step_estimated": list(range(12)),
            "last_step_true": [1.0] * 12,
        }
    ]
    density = run["density"]
    assert density["length"] == 12 and density["bin_starts"] == [0, 2, 4, 7, 9]
    assert np.array(density["counts"]).sum() == filled().density.sum()
    with pytest.raises(ValueError, match="density_bins must be >= 1"):
        filled().to_dict(density_bins=0)
