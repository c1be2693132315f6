"""The book: its table of contents, its notebooks' hygiene, and a full build with -W."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from test_exercise_index import unpassed_solutions  # the exercise index's reading of a solution's verdict

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def test_toc_lists_only_pages_that_exist_and_every_notebook(toc_pages) -> None:
    files = toc_pages
    for entry in files:
        assert any((ROOT / f"{entry}{suffix}").is_file() for suffix in (".md", ".ipynb")), entry
    listed = {entry for entry in files if entry.startswith("notebooks/")}
    assert listed == {f"notebooks/{nb.stem}" for nb in NOTEBOOKS}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    dirty = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"])]
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_installs_advcore_from_this_repository_in_colab(notebook: Path) -> None:
    first_code = next(c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
    source = "".join(first_code["source"])
    assert "google.colab" in source and "pip install" in source
    assert _config()["repository"]["url"] in source, "the Colab install must use _config.yml's repository URL"


def test_citations_resolve_to_the_bibliography() -> None:
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text()))
    for key in ("goodfellow2015explaining", "madry2018towards", "szegedy2014intriguing"):
        assert key in keys
    pages = [ROOT / "book" / "intro.md", *NOTEBOOKS]
    cited = {key.strip() for page in pages for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", page.read_text())
             for key in group.split(",")}
    assert cited <= keys, f"unknown citation keys: {sorted(cited - keys)}"


def _unrendered_math(page: str) -> list[str]:
    """``$...$`` left in a rendered page's visible text (outside code, scripts and styles)."""
    visible = re.sub(r"<(script|style|pre|code|textarea)\b.*?</\1>", " ", page, flags=re.S)
    visible = re.sub(r"<[^>]+>", "", visible)
    return re.findall(r"\$[^$\s][^$\n]{0,80}?\$", visible)


@pytest.mark.book
def test_book_builds_without_warnings(smoke_book, toc_pages) -> None:
    """The whole book, executed in the smoke profile, with every warning an error."""
    if smoke_book.reused:
        pytest.skip(smoke_book.log)
    assert smoke_book.returncode == 0, smoke_book.log[-6000:]
    html = smoke_book.html
    assert (html / "index.html").is_file()
    for entry in toc_pages:
        assert (html / f"{entry}.html").is_file(), f"{entry} was not rendered"
    # Every chapter shows its figures (drawn, saved and linked by the build).
    for notebook in NOTEBOOKS:
        page = (html / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
        figures = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+\.png)"', page)
        assert figures, f"{notebook.stem} has no figures in the rendered book"
        assert all((html / figure).is_file() for figure in figures)
        # Math printed by a cell (display(Markdown("... $x$ ..."))) is typeset, not shown as dollars.
        assert not _unrendered_math(page), f"{notebook.stem}: math left as text: {_unrendered_math(page)[:3]}"
    # The build page's execution table lists every chapter, executed successfully by this build.
    build_page = (html / "book" / "build.html").read_text(encoding="utf-8")
    for notebook in NOTEBOOKS:
        assert f"notebooks/{notebook.stem}" in build_page, f"{notebook.stem} is missing from the execution table"
    assert "❌" not in build_page
    assert build_page.count("✅") == len(NOTEBOOKS)
    # The intro's chapter guide: a row per chapter, read and run times filled in by the build.
    intro = (html / "book" / "intro.html").read_text(encoding="utf-8")
    guide = re.search(r'<table class="[^"]*chapter-guide.*?</table>', intro, flags=re.S)
    assert guide, "the intro has no chapter guide table"
    rows = re.findall(r"<tr.*?</tr>", guide.group(0), flags=re.S)[1:]
    assert len(rows) == len(NOTEBOOKS)
    for row in rows:
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
        read, run = cells[2].split(" / ")
        assert re.search(r"^<p>(\d+ min|under 1 min)$", read), f"no reading time: {row}"
        assert re.search(r"^(\d+ s|\d+\.\d min)</p>$", run.strip()), f"no run time: {row}"
    # The revision sheet pastes every "ours" the chapters recorded (a missing glue fails the build).
    revision = (html / "book" / "revision.html").read_text(encoding="utf-8")
    recorded = {key for notebook in NOTEBOOKS for cell in json.loads(notebook.read_text())["cells"]
                if cell["cell_type"] == "code" for key in re.findall(r'record_ours\(\s*"([^"]+)"', "".join(cell["source"]))}
    assert "glue:text" not in revision and revision.count('class="pasted-text"') == len(recorded) > 0


COLLAPSED = {"hide-input", "hide-cell", "remove-input", "remove-cell"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_that_only_print_sentences_or_paper_tables_are_collapsed(notebook: Path) -> None:
    """A page reads like a lecture: the code that words a sentence or lays out the paper-vs-ours
    table is folded behind "Show code" (CONTRIBUTING.md, pages that read like a lecture)."""
    cells = json.loads(notebook.read_text())["cells"]
    visible = []
    for index, cell in enumerate(cells):
        source = "".join(cell["source"]).lstrip()
        if cell["cell_type"] != "code" or source.startswith("# @title Solution"):
            continue
        prints_a_sentence = source.startswith("display(Markdown(")
        paper_table = re.search(r"^paper_vs_ours = ", source, flags=re.M) is not None
        if (prints_a_sentence or paper_table) and not COLLAPSED & set(cell["metadata"].get("tags", [])):
            visible.append(f"cell {index} ({cell.get('id')})")
    assert not visible, f"{notebook.name}: tag these cells hide-input: {visible}"


def _calls(node: ast.AST, *, skip_definitions: bool) -> set[str]:
    """Names called under `node` (`plt.show` as "plt.show"), not looking inside function definitions if asked."""
    names, stack = set(), [node]
    while stack:
        current = stack.pop()
        if skip_definitions and current is not node and isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(current, ast.Call):
            func = current.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                names.add(f"{func.value.id}.{func.attr}")
        stack.extend(ast.iter_child_nodes(current))
    return names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_that_draws_a_figure_has_a_caption_and_alt_text(notebook: Path) -> None:
    """Static, so that it also covers branches the smoke build does not take (a committed result
    present or not, CIFAR-10 available or not): a figure gets its caption and alt text from its
    cell's `mystnb` metadata, and the browser check can only see the figures its build drew."""
    cells = [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]
    trees = []
    for cell in cells:
        try:  # IPython magics (the Colab install cell) are not Python; those cells draw nothing
            trees.append(ast.parse("".join(cell["source"])))
        except SyntaxError:
            trees.append(ast.Module(body=[], type_ignores=[]))
    definitions = {node.name: node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    drawers, grown = {"plt.show"}, True
    while grown:  # a function that calls a function that draws, draws
        found = {name for name, node in definitions.items() if _calls(node, skip_definitions=False) & drawers}
        grown, drawers = not found <= drawers, drawers | found
    missing = []
    for cell, tree in zip(cells, trees):
        if _calls(tree, skip_definitions=True) & drawers:
            mystnb = cell["metadata"].get("mystnb", {})
            if not (mystnb.get("figure", {}).get("caption") and mystnb.get("image", {}).get("alt")):
                missing.append(cell.get("id"))
    assert not missing, f"{notebook.name}: cells {missing} draw a figure; give them mystnb figure.caption and image.alt"


@pytest.mark.book
def test_every_solution_passes_its_check_in_the_built_book(smoke_book) -> None:
    """The chapters' own solution cells, as the smoke book build executed them, pass their checks."""
    executed = smoke_book.html.parent / "jupyter_execute"
    assert sorted(p.name for p in (executed / "notebooks").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb")), "the build did not execute every chapter"
    assert unpassed_solutions(executed) == []
