"""Every percentage a chapter's Markdown states is a paper number (advcore.papers) or a derived constant.

A number typed into a page drifts from its source; a measured number belongs in a printed,
computed sentence, not in Markdown. So Markdown may only state the papers' own numbers,
which live with their source locations in :mod:`advcore.papers`, and a few constants.
"""
import json
import re
from pathlib import Path

import pytest

from advcore import papers

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

#: Percentages derived from the setting, not measured and not quoted from a paper.
DERIVED = {
    "10%": "chance among 10 classes; also 'a 90% confidence' complement",
    "11%": "1/9: chance of naming one particular wrong label out of nine",
    "50%": "chance agreement of two random gradient signs; 'at least 50% confidence'",
    "90%": "the confidence threshold of the rubbish-class table",
}

PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?%")


def markdown_percentages(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return [f"{m.group(1)}%" for m in PERCENT.finditer(text)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_markdown_percentages_are_paper_numbers_or_derived(path: Path) -> None:
    allowed = papers.percent_texts() | set(DERIVED)
    unknown = sorted(set(markdown_percentages(path)) - allowed)
    assert not unknown, (f"{path.name}: percentages in Markdown that are neither in advcore.papers nor derived "
                         f"constants: {unknown}. Quote the paper number via advcore.papers (add it there with its "
                         "source), or print a measured number from code.")


def test_the_check_catches_a_typed_in_number(tmp_path: Path) -> None:
    fake = tmp_path / "x.ipynb"
    fake.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": ["ours reaches 97.1% and 0.94%"]}]}))
    assert markdown_percentages(fake) == ["97.1%", "0.94%"]
    assert "97.1%" not in papers.percent_texts() | set(DERIVED)
