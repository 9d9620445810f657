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
