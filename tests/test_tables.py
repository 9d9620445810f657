"""The documents' tables of results: each is what benchmarks/tables.py makes of its committed results file."""

import pytest

from benchmarks import tables


@pytest.mark.parametrize("document", tables.DOCUMENTS)
def test_every_table_in_the_document_matches_its_results_file(document):
    text = (tables.ROOT / document).read_text()
    assert tables.render(text) == text, f"{document} is out of date: run python -m benchmarks.tables --write"


def test_every_table_is_shown_somewhere_and_unknown_ones_are_named():
    shown = {m.group(2) for d in tables.DOCUMENTS for m in tables.BLOCK.finditer((tables.ROOT / d).read_text())}
    assert shown == set(tables.TABLES)
    with pytest.raises(ValueError, match="unknown table 'speed'"):
        tables.render("<!-- table: speed -->\n<!-- /table -->")


def test_a_block_is_filled_between_its_markers_and_the_rest_kept():
    text = "Intro.\n<!-- table: app -->\nold numbers\n<!-- /table -->\nOutro.\n"
    filled = tables.render(text)
    assert filled.startswith("Intro.\n<!-- table: app -->\n| context (tokens) |")
    assert filled.endswith("<!-- /table -->\nOutro.\n") and "old numbers" not in filled
    assert tables.render(filled) == filled


def test_the_examples_table_shows_each_examples_run_and_says_when_none_was_timed():
    row = {"example": "Pride and Prejudice", "context": 5123, "adamas_ms": 41.26, "full_ms": 50.0, "speedup": 1.2118}
    row |= {"speedup_median": 1.25}
    rows = [row | {"ttft_s": 39.04, "same_answer": True}, row | {"speedup": None, "ttft_s": 2, "same_answer": False}]
    lines = tables.cpu_examples(rows).splitlines()
    assert lines[0].startswith("| example | context (tokens) | Adamas ms/token |") and len(lines) == 4
    assert lines[2] == "| Pride and Prejudice | 5,123 | 41.3 | 50.0 | 1.21x | 1.25x | 39.0 s | yes |"
    assert lines[3] == "| Pride and Prejudice | 5,123 | 41.3 | 50.0 | — | 1.25x | 2.0 s | no |"
    assert tables.cpu_examples([]).startswith("No bundled example is timed")
