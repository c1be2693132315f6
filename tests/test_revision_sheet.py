"""The revision sheet (book/revision.md) cannot drift from the paper numbers or the chapters.

* the committed page is exactly what ``tools/revision_sheet.py`` writes;
* every number of ``advcore.papers`` is on it, with its text and location;
* every "ours" is pasted from the chapter that records it (a ``{glue:text}`` of that
  chapter's ``record_ours``), never typed; the build (tests/test_book.py, -W) fails when a
  chapter stops recording a number the page pastes;
* ``advcore.book.record_ours`` refuses keys that are not paper numbers and numbers that are
  not text.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from advcore import book, papers

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "revision.md"
HOW_TO_FIX = "run `python tools/revision_sheet.py` and commit book/revision.md"


def _load_tool():
    spec = importlib.util.spec_from_file_location("revision_sheet", ROOT / "tools" / "revision_sheet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def test_page_is_what_the_tool_writes():
    assert PAGE.read_text(encoding="utf-8") == tool.render(), f"book/revision.md is stale: {HOW_TO_FIX}"


def test_page_is_in_the_toc():
    assert "file: book/revision" in (ROOT / "_toc.yml").read_text()


def test_every_paper_number_is_on_the_page_once():
    rows = [line for line in PAGE.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and line.count("|") == 5 and not line.startswith("| what")]
    for number in papers.NUMBERS.values():
        matching = [row for row in rows if f"| {number.text} |" in row and number.location in row
                    and number.what.replace("|", "\\|") in row]
        assert len(matching) == 1, f"{number.key}: {len(matching)} rows"


def test_ours_is_pasted_from_the_chapter_that_records_it():
    text = PAGE.read_text(encoding="utf-8")
    pasted = {key: stem for stem, key in re.findall(r"\{glue:text\}`\.\./notebooks/(\w+)\.ipynb::ours\.([\w.]+):s`",
                                                       text)}
    recorded = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                for key in re.findall(r'record_ours\(\s*"([^"]+)"', "".join(cell["source"])):
                    recorded[key] = path.stem
    assert recorded, "no chapter records its numbers for the revision sheet"
    assert pasted == recorded
    # no percentage typed into the ours column: a row either pastes a glue or says it is not measured
    for line in text.splitlines():
        if line.startswith("| ") and line.count("|") == 5 and not line.startswith("| what"):
            ours = line.rsplit("|", 2)[1].strip()
            assert ours.startswith("{glue:text}") or ours == "not measured in this book" or "---" in ours, line


def test_equations_are_all_there():
    text = PAGE.read_text(encoding="utf-8")
    for piece in (r"\epsilon\,\mathrm{sign}(\nabla_x J(\theta, x, y))", r"\tilde J(\theta, x, y) = \alpha",
                  r"\min_\theta \rho(\theta)", r"\Pi_{x + \mathcal S}", r"\max_{\delta \in \mathcal S}"):
        assert piece in text, piece


def test_record_ours_refuses_unknown_keys_and_untyped_numbers():
    with pytest.raises(KeyError, match="madry.mnist.pgd40"):
        book.record_ours("madry.mnist.pgd_40", "90%")
    with pytest.raises(TypeError, match="as non-empty text"):
        book.record_ours("madry.mnist.pgd40", 0.9)
    assert book.glue_name("madry.mnist.pgd40") == "ours.madry.mnist.pgd40"


def test_a_chapter_recording_an_unknown_key_fails_the_tool():
    with pytest.raises(KeyError, match="not.a.key"):
        tool.render({"not.a.key": "01_panda"})
