"""The README's charts: speedup per shape and batch, evaluation per selector, drawn as self-contained SVG."""

import json
import xml.etree.ElementTree as ET

import pytest

from benchmarks import plot_speedup


def records():
    rows = []
    for batch, base in ((1, 1.0), (8, 2.0)):
        for i, length in enumerate((4096, 32768, 131072)):
            for budget in (128, 1024):
                rows.append({"shape": "s", "batch": batch, "L": length, "budget": budget, "speedup": base + i})
    return rows


def test_series_takes_one_budget_sorted_by_context():
    lines = plot_speedup.series(list(reversed(records())), 128)
    assert lines == {"s, batch 1": [(4096, 1.0), (32768, 2.0), (131072, 3.0)],
                     "s, batch 8": [(4096, 2.0), (32768, 3.0), (131072, 4.0)]}  # fmt: skip


def test_svg_is_well_formed_with_a_line_per_series(tmp_path):
    results = tmp_path / "attention.json"
    payload = {"environment": {"device": "GPU", "date": "2026-01-01T00:00"}, "records": records()}
    results.write_text(json.dumps(payload))
    out = tmp_path / "chart.svg"
    plot_speedup.main([str(results), str(out)])
    root = ET.fromstring(out.read_text())
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2 and all(len(line.get("points").split()) == 3 for line in lines)
    with pytest.raises(SystemExit, match="no records at budget 64"):
        plot_speedup.main([str(results), str(out), "--budget", "64"])


def test_eval_charts_draw_recall_and_perplexity_per_selector(tmp_path):
    from benchmarks import plot_eval

    rows = [
        {"task": task, "selector": sel, "budget": b, "length": n, "value": v}
        for n in (512, 1024)
        for task, v in (("recall", 0.5), ("perplexity", 12.0))
        for sel, b in (("adamas", 16), ("adamas", 64), ("quest", 16), ("quest", 64))
    ]
    rows.append({"task": "perplexity", "selector": "full", "budget": None, "length": 1024, "value": 10.0})
    lines, full = plot_eval.by_selector(rows, "perplexity", 1024)
    assert full == 10.0 and lines == {"adamas": [(16, 12.0), (64, 12.0)], "quest": [(16, 12.0), (64, 12.0)]}
    results = tmp_path / "results.json"
    payload = {"environment": {}, "parameters": {}, "seconds": 1.0, "records": rows}
    results.write_text(json.dumps(payload))
    plot_eval.main([str(results), str(tmp_path)])
    for name in ("eval_recall.svg", "eval_perplexity.svg"):
        svg = ET.fromstring((tmp_path / name).read_text())
        assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    assert "1024 tokens" in (tmp_path / "eval_recall.svg").read_text()
