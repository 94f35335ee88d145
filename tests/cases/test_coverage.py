"""The README's coverage table is generated from the case files and kept current."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cases.coverage import BEGIN, END, id_ranges, load_all, markdown, update_block

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ids, text", [
    ([], ""),
    (["1.1"], "1.1"),
    (["1.1", "1.2", "1.3", "1.5"], "1.1-1.3, 1.5"),
    (["1.68", "1.70", "1.71"], "1.68, 1.70-1.71"),       # 1.69 is deleted in TP-469
    (["1.9", "1.10", "2.1", "2.2"], "1.9-1.10, 2.1-2.2"),  # never across sections
    (["X-UDS-1", "X-UDS-2", "X-SMM-3"], "X-UDS-1-X-UDS-2, X-SMM-3"),
])
def test_id_ranges(ids, text):
    assert id_ranges(ids) == text


def test_update_block_replaces_only_the_block():
    text = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert update_block(text, "new") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="no coverage block"):
        update_block("no block here", "new")


def test_the_readme_table_matches_the_case_files():
    cases = load_all(ROOT / "testcases")
    table = markdown(cases)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert update_block(readme, table) == readme, \
        "README.md coverage table is stale: run python scripts/gen_coverage.py"
    assert "| **All** |" in table
