"""The exercise index (book/exercises.md) cannot drift from the chapters' exercises.

* every ``:::{exercise} N.k, level: title`` block in notebooks/*.ipynb is listed on the
  index page, and every row of the page is such a block (read independently of the tool);
* the committed page is exactly what ``tools/exercise_index.py`` generates;
* the exercises follow CONTRIBUTING.md's convention (labels, gated dropdown solutions, real
  stubs, ...).

Fix a failure by running ``python tools/exercise_index.py`` (it rewrites the page and
prints convention problems).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "exercises.md"
HOW_TO_FIX = "run `python tools/exercise_index.py` and commit book/exercises.md"


def _load_tool():
    spec = importlib.util.spec_from_file_location("exercise_index", ROOT / "tools" / "exercise_index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

# A row links to the exercise by its label, #exercise-N-k.
ROW = re.compile(r"^\| (?P<label>\d+\.\d+) \| \[(?P<title>.*)\]\((?P<link>#exercise-\d+-\d+)\) "
                 r"\| (?P<level>[a-z-]+) \| .+ \|$")


def headings_in_notebooks() -> set[tuple[str, str, str]]:
    """``(N.k, level, title)`` of every exercise block, straight from the JSON."""
    found = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for line in "".join(cell["source"]).splitlines():
                match = re.match(r"^:::\{exercise\} (\d+\.\d+), ([a-z-]+): (.+?)\s*$", line)
                if match:
                    found.add(match.groups())
    return found


def rows_on_page() -> set[tuple[str, str, str]]:
    rows = set()
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            title = re.sub(r"\\([|\[\]])", r"\1", match["title"])
            rows.add((match["label"], match["level"], title))
    return rows


def test_every_exercise_heading_is_listed_on_the_index_page():
    missing = headings_in_notebooks() - rows_on_page()
    assert not missing, f"exercises missing from book/exercises.md: {sorted(missing)}; {HOW_TO_FIX}"


def test_every_index_row_is_an_exercise_heading():
    stale = rows_on_page() - headings_in_notebooks()
    assert not stale, f"book/exercises.md lists exercises no notebook has: {sorted(stale)}; {HOW_TO_FIX}"


def test_index_page_is_what_the_tool_generates():
    expected = tool.render(tool.collect())
    assert PAGE.read_text(encoding="utf-8") == expected, f"book/exercises.md is stale: {HOW_TO_FIX}"


def test_index_page_is_in_the_toc_and_links_only_to_chapters_in_it():
    in_toc = tool.toc_files()
    assert "book/exercises" in in_toc
    text = PAGE.read_text(encoding="utf-8")
    links = re.findall(r"\]\(\.\./([^)]+)\)", text) + re.findall(r"\{doc\}`\.\./([^`]+)`", text)
    for link in links:
        assert (ROOT / link).with_suffix(".ipynb").exists(), link
        assert str(Path(link).with_suffix("")) in in_toc, f"{link} is not in _toc.yml"
    labels = {e.options.get("label") for c in tool.collect() for e in c.exercises}
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert anchors, "the index links to no exercise"
    for anchor in anchors:
        assert anchor in labels, f"#{anchor} is not the label of an exercise in a chapter of the toc"


def test_exercises_follow_the_convention():
    problems = tool.convention_problems()
    assert not problems, "exercise convention (CONTRIBUTING.md) broken:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the tool itself


def _notebook(*cells: tuple[str, str, dict]) -> dict:
    return {"cells": [{"cell_type": kind, "source": source, "metadata": meta} for kind, source, meta in cells],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


SOLUTION_META = {"cellView": "form"}


def _exercise(label: str, level: str, title: str, body: str) -> str:
    n, k = label.split(".")
    return f":::{{exercise}} {label}, {level}: {title}\n:label: exercise-{n}-{k}\n:nonumber:\n\n{body}\n:::"


def _solution_start(label: str, extra: str = "") -> str:
    n, k = label.split(".")
    return f":::{{solution-start}} exercise-{n}-{k}\n:label: solution-{n}-{k}\n:class: dropdown\n:::{extra}"


SOLUTION_END = ":::{solution-end}\n:::"


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A tiny repository: chapter 1 in the toc with two exercises, chapter 2 not in the toc."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: I\n    chapters:\n"
        "      - file: notebooks/01_demo\n  - caption: Back\n    chapters:\n      - file: book/exercises\n")
    chapter = _notebook(
        ("markdown", "# 1. Demo | pipes\n\n## Exercises\n\n" + _exercise("1.1", "warm-up", "implement `fgsm`", "Do it."), {}),
        ("code", "def f(*a):\n    raise NotImplementedError\n\ncheck_fgsm(f)", {}),
        ("markdown", _solution_start("1.1"), {}),
        ("code", "# @title Solution (click to show)\ncheck_fgsm(reference_fgsm)", SOLUTION_META),
        ("markdown", SOLUTION_END, {}),
        ("markdown", _exercise("1.2", "open-ended", "why $\\epsilon$?", "Think.") + "\n\n"
                     + _solution_start("1.2", "\n\nBecause."), {}),
        ("code", "# @title Solution (click to show)\nprint(1)", SOLUTION_META),
        ("markdown", SOLUTION_END, {}),
        ("markdown", "## Further reading", {}),
        ("code", "check_project_linf(g)", {}),  # after the exercises: belongs to none
    )
    (tmp_path / "notebooks" / "01_demo.ipynb").write_text(json.dumps(chapter))
    other = _notebook(("markdown", "# 2. Other\n\n" + _exercise("2.1", "core", "x", "y"), {}))
    (tmp_path / "notebooks" / "02_other.ipynb").write_text(json.dumps(other))
    return tmp_path


def test_tool_reads_blocks_kinds_and_skips_chapters_outside_the_toc(book):
    chapters = tool.collect(book)
    assert [c.docname for c in chapters] == ["notebooks/01_demo"]
    first, second = chapters[0].exercises
    assert (first.label, first.level, first.kind) == ("1.1", "warm-up", "coding, checked by `check_fgsm`")
    assert (second.label, second.level, second.kind) == ("1.2", "open-ended",
                                                         "conceptual (worked answer and experiment)")
    assert second.solutions[0].text.strip() == "Because."
    page = tool.render(chapters)
    assert "## 1. Demo | pipes" in page
    assert "| 1.1 | [implement `fgsm`](#exercise-1-1) | warm-up |" in page
    assert "2 exercises in 1 chapter (1 warm-up, 0 core, 1 open-ended)" in page
    assert "| 1.2 | [why $\\epsilon$?](#exercise-1-2) | open-ended |" in page  # straight to its label
    assert "02_other" not in page
    assert not tool.convention_problems(book) or all("01_demo" not in p or "the course asks" in p
                                                      for p in tool.convention_problems(book))


def test_tool_reports_broken_conventions(book):
    problems = tool.convention_problems(book)
    assert any("02_other.ipynb has exercises but is not in _toc.yml" in p for p in problems)
    assert any("02_other.ipynb, Exercise 2.1: no solution" in p for p in problems)
    assert not [p for p in problems if "01_demo" in p and "exercises, the course asks" not in p]

    broken = _notebook(
        ("markdown", "# 1. Demo\n\n### Exercise 1.2 (core): an old heading\n\n"
                     ":::{exercise} 1.3, core: solved stub\n:label: exercise-1-9\n\nq\n:::", {}),
        ("code", "def f(x):\n    return x\n\ncheck_fgsm(f)", {}),
        ("code", "# @title Solution (click to show)\nprint('outside the block')", {}),
        ("markdown", ":::{solution-start} exercise-1-3\n:label: solution-1-3\n:::", {}),
        ("code", "# @title Solution (click to show)\nprint('no check')", {"cellView": "form", "tags": ["hide-input"]}),
        ("markdown", ":::{exercise} 1.4, core: never closed\n:label: exercise-1-4\n:nonumber:\n\nq\n:::", {}),
        ("markdown", _solution_start("1.4"), {}),
        ("code", "# @title Solution (click to show)\nprint(2)", {}),
    )
    (book / "notebooks" / "01_demo.ipynb").write_text(json.dumps(broken))
    problems = "\n".join(tool.convention_problems(book))
    assert "'### Exercise 1.2 (core): an old heading' is not an exercise block" in problems
    assert "numbered ['1.3', '1.4'], expected ['1.1', '1.2']" in problems
    assert "needs `:label: exercise-1-3` (has 'exercise-1-9')" in problems
    assert "needs `:nonumber:`" in problems
    assert "a `# @title Solution` cell outside the solution block" in problems
    assert "needs `:class: dropdown`" in problems
    assert "is not closed by `:::{solution-end}`" in problems
    assert "has a hide-input/hide-cell tag" in problems
    assert 'metadata {"cellView": "form"}' in problems
    assert "solution cell does not run the check" in problems
    assert "solved by mistake" in problems
    assert "solution to exercise-1-3 is not closed before exercise 1.4" in problems
    assert "solution to exercise-1-4 is never closed" in problems


def test_tool_check_mode_flags_a_stale_page(tmp_path, monkeypatch):
    page = tmp_path / "book" / "exercises.md"
    page.parent.mkdir()
    page.write_text(tool.render(tool.collect()) + "edited by hand\n")
    monkeypatch.setattr(tool, "ROOT", tmp_path)  # the page is read from here; notebooks from the repo
    assert tool.main(["--check"]) == 1
    page.write_text(tool.render(tool.collect()))
    assert tool.main(["--check"]) == 0


# --------------------------------------------------------------------------- the solutions pass their checks


def _shown(cell: dict) -> str:
    """What an executed code cell showed: printed text, displayed results (plain text), errors."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append("".join(output.get("text", "")))
        elif output.get("output_type") == "error":
            parts.append(f"{output.get('ename')}: {output.get('evalue')}")
        else:
            parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def unpassed_solutions(executed_root: Path) -> list[str]:
    """Coding exercises whose solution, in the executed notebooks under ``executed_root/notebooks``,
    did not report "passed" from every check the exercise calls (or reported an error)."""
    problems = []
    for path in sorted((executed_root / "notebooks").glob("*.ipynb")):
        chapter = tool.read_chapter(path.relative_to(executed_root), root=executed_root)
        for exercise in chapter.exercises:
            if not exercise.checks:
                continue
            cells = [cell for solution in exercise.solutions for cell in solution.cells]
            shown = "\n".join(_shown(cell) for cell in cells)
            errors = [o for cell in cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            for check in exercise.checks:
                if f"{check}: passed" not in shown or f"{check}: not passed" in shown or errors:
                    problems.append(f"{path.name}, exercise {exercise.label}: the solution's {check} did not "
                                    f"report 'passed' (it showed: {shown[-300:]!r})")
    return problems


def test_the_solution_verdict_reads_the_checks_outputs(tmp_path: Path) -> None:
    """unpassed_solutions fails a solution that reports 'not passed', an error, or no check at all."""
    source = json.loads((ROOT / "notebooks" / "06_transferability.ipynb").read_text())
    solution_cells = [c for c in source["cells"] if c["cell_type"] == "code"
                      and "".join(c["source"]).startswith("# @title Solution") and "check_" in "".join(c["source"])]
    assert solution_cells, "chapter 6 has a coding exercise whose solution runs its check"
    verdicts = {
        "passed": ({"output_type": "execute_result", "data": {"text/plain": "check_transfer_rate: passed\n  ✓"}},
                   True),
        "not passed": ({"output_type": "execute_result",
                        "data": {"text/plain": "check_transfer_rate: not passed yet\n  ✗ 1 of 4"}}, False),
        "error": ({"output_type": "error", "ename": "NameError", "evalue": "name 'x' is not defined"}, False),
        "silent": ({"output_type": "stream", "name": "stdout", "text": "81.6% transfer\n"}, False),
    }
    for name, (output, passes) in verdicts.items():
        executed = tmp_path / name
        (executed / "notebooks").mkdir(parents=True)
        for cell in source["cells"]:
            cell["outputs"] = [output] if cell in solution_cells else []
        (executed / "notebooks" / "06_transferability.ipynb").write_text(json.dumps(source))
        assert (unpassed_solutions(executed) == []) == passes, name
