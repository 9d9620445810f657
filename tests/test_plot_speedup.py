"""The README's speedup chart: points per shape and batch, drawn as a self-contained SVG."""

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
