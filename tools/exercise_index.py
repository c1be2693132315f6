"""Regenerate the book's exercise index, book/exercises.md, from the chapters' exercise blocks.

Every exercise in a chapter notebook is a ``sphinx-exercise`` block (CONTRIBUTING.md)::

    :::{exercise} N.k, warm-up|core|open-ended: title
    :label: exercise-N-k
    :nonumber:

    the question
    :::

followed (after the student's stub, for a coding exercise) by a gated, folded solution::

    :::{solution-start} exercise-N-k
    :label: solution-N-k
    :class: dropdown
    :::
    ... worked answer (markdown) and solution code cells ...
    :::{solution-end}
    :::

This script reads those blocks from ``notebooks/NN_*.ipynb`` (the chapters listed in
``_toc.yml``), works out each exercise's kind from its cells -- *coding* when a code cell
calls an ``advcore.exercises.check_*`` function, *conceptual* otherwise -- and writes the
index page, which links to every exercise by its label. ``tests/test_exercise_index.py``
fails when the committed page differs from what this script generates, and when an exercise
breaks the conventions (:func:`convention_problems`), so the index cannot drift from the chapters.

Usage (from the repository root)::

    python tools/exercise_index.py           # rewrite book/exercises.md
    python tools/exercise_index.py --check   # exit 1 and show a diff if the page is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
INDEX_PAGE = Path("book/exercises.md")
LEVELS = ("warm-up", "core", "open-ended")
EXERCISES_PER_CHAPTER = (2, 4)  # the issue: "2-4 per chapter"

#: The first line of an exercise block.
EXERCISE = re.compile(r"^:::\{exercise\} (?P<chapter>\d+)\.(?P<number>\d+), "
                      r"(?P<level>warm-up|core|open-ended): (?P<title>\S.*?)\s*$")
#: Anything that looks like an exercise (a block or an old-style heading); those not matching
#: EXERCISE are typos or leftovers.
LOOSE_EXERCISE = re.compile(r"^\s{0,3}(#{1,6}\s*Exercises?\s*\d|(:{3,}|`{3,})\s*\{exercise(-start)?\})",
                            re.IGNORECASE)
#: A directive option line, ``:label: exercise-1-2``.
OPTION = re.compile(r"^:(?P<name>[a-z-]+):\s*(?P<value>.*?)\s*$")
SOLUTION_START = re.compile(r"^:::\{solution-start\}\s*(?P<target>\S*)\s*$")
SOLUTION_END = re.compile(r"^:::\{solution-end\}\s*$")
#: A solution that is not gated: its code could not be a real (executed) cell.
UNGATED_SOLUTION = re.compile(r"^\s{0,3}(:{3,}|`{3,})\s*\{solution\}")
#: A heading that ends the exercises: level 1 or 2.
SECTION = re.compile(r"^\s{0,3}#{1,2}\s")
CHECK_CALL = re.compile(r"\b(check_\w+)\s*\(")
SOLUTION_TITLE = "# @title Solution"
COLLAPSING_TAGS = {"hide-input", "hide-cell"}

#: The lecture's own two exercises, by chapter number.
LECTURE_EXERCISES = {
    4: "why was the last layer not considered for perturbations?",
    8: "how to check for distinct maxima?",
}


@dataclass
class Solution:
    """The gated solution block of an exercise."""

    target: str  # the exercise label it names
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the worked answer: markdown inside the block
    cells: list[dict] = field(default_factory=list)  # code cells inside the block
    closed: bool = False


@dataclass
class Exercise:
    """One exercise of a chapter: its block, the code cells after it, its solution."""

    chapter: int
    number: int
    level: str
    title: str
    options: dict[str, str] = field(default_factory=dict)  # :label:, :nonumber:, ...
    checks: list[str] = field(default_factory=list)  # check_* functions its cells call
    stub_cells: list[str] = field(default_factory=list)  # code cells outside the solution that call a check
    loose_solution_cells: list[str] = field(default_factory=list)  # `# @title Solution` cells outside a block
    solutions: list[Solution] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.chapter}.{self.number}"

    @property
    def target(self) -> str:
        """The label the exercise must carry, ``exercise-N-k``."""
        return f"exercise-{self.chapter}-{self.number}"

    @property
    def kind(self) -> str:
        if self.checks:
            return "coding, checked by " + ", ".join(f"`{name}`" for name in self.checks)
        worked = any(s.text.strip() for s in self.solutions)
        experiment = any(s.cells for s in self.solutions)
        extras = [name for name, present in (("worked answer", worked), ("experiment", experiment)) if present]
        return "conceptual" + (f" ({' and '.join(extras)})" if extras else "")


@dataclass
class Chapter:
    """A chapter notebook and its exercises."""

    path: Path  # relative to the repository root, e.g. notebooks/01_panda.ipynb
    title: str
    exercises: list[Exercise]
    malformed: list[str]  # lines that look like exercises but do not match EXERCISE
    problems: list[str] = field(default_factory=list)  # structure errors found while reading

    @property
    def number(self) -> int:
        return int(self.path.stem.split("_", 1)[0])

    @property
    def docname(self) -> str:
        return self.path.with_suffix("").as_posix()


# --------------------------------------------------------------------------- reading notebooks


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _markdown_lines(text: str) -> list[str]:
    """The lines of a markdown cell outside backtick/tilde code fences."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")) and not LOOSE_EXERCISE.match(line) \
                and not UNGATED_SOLUTION.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


class _Reader:
    """Walks a notebook's cells once, in order, and assembles its exercises."""

    def __init__(self, path: Path) -> None:
        self.chapter = Chapter(path, path.stem, [], [])
        self.current: Exercise | None = None
        self.solution: Solution | None = None  # the open gated solution, if any
        self.options_of: dict | None = None  # the directive whose option lines come next

    def problem(self, text: str) -> None:
        self.chapter.problems.append(f"{self.chapter.path.as_posix()}: {text}")

    def markdown(self, text: str) -> None:
        for line in _markdown_lines(text):
            if self.options_of is not None:
                option = OPTION.match(line)
                if option:
                    self.options_of[option["name"]] = option["value"]
                    continue
                self.options_of = None
            if line.startswith("# ") and self.chapter.title == self.chapter.path.stem:
                self.chapter.title = line[2:].strip()
            if self._directive(line) or line.strip() == ":::":
                continue
            if SECTION.match(line):
                if self.solution is not None:
                    self.problem(f"solution to {self.solution.target} is not closed before {line.strip()!r}")
                    self.solution = None
                self.current = None
            elif self.solution is not None:
                self.solution.text += line + "\n"

    def _directive(self, line: str) -> bool:
        """Handle an exercise or solution directive line; False when the line is none."""
        match = EXERCISE.match(line)
        if match:
            if self.solution is not None:
                self.problem(f"solution to {self.solution.target} is not closed before exercise "
                             f"{match['chapter']}.{match['number']}")
                self.solution = None
            self.current = Exercise(int(match["chapter"]), int(match["number"]), match["level"], match["title"])
            self.chapter.exercises.append(self.current)
            self.options_of = self.current.options
            return True
        if LOOSE_EXERCISE.match(line):
            self.chapter.malformed.append(line.strip())
            return True
        if UNGATED_SOLUTION.match(line):
            self.problem(f"{line.strip()!r}: use the gated form, solution-start ... solution-end")
            return True
        match = SOLUTION_START.match(line)
        if match:
            if self.current is None:
                self.problem(f"solution to {match['target'] or '(no exercise named)'} outside an exercise")
                return True
            self.solution = Solution(match["target"])
            self.current.solutions.append(self.solution)
            self.options_of = self.solution.options
            return True
        if SOLUTION_END.match(line):
            if self.solution is None:
                self.problem("solution-end without a solution-start")
            else:
                self.solution.closed = True
                self.solution = None
            return True
        return False

    def code(self, cell: dict, text: str) -> None:
        exercise = self.current
        if exercise is None:
            return
        for name in CHECK_CALL.findall(text):
            if name not in exercise.checks:
                exercise.checks.append(name)
        if self.solution is not None:
            self.solution.cells.append({"metadata": cell.get("metadata", {}), "source": text,
                                        "outputs": cell.get("outputs", [])})  # an executed notebook's
        elif text.lstrip().startswith(SOLUTION_TITLE):
            exercise.loose_solution_cells.append(text)
        elif CHECK_CALL.search(text):
            exercise.stub_cells.append(text)


def read_chapter(path: Path, root: Path = ROOT) -> Chapter:
    """The title, exercises and malformed exercise lines of one notebook."""
    reader = _Reader(path)
    for cell in json.loads((root / path).read_text(encoding="utf-8"))["cells"]:
        if cell.get("cell_type") == "markdown":
            reader.markdown(_source(cell))
        elif cell.get("cell_type") == "code":
            reader.options_of = None
            reader.code(cell, _source(cell))
    if reader.solution is not None:
        reader.problem(f"solution to {reader.solution.target} is never closed (solution-end)")
    return reader.chapter


def toc_files(root: Path = ROOT) -> set[str]:
    """Every ``file:`` entry of ``_toc.yml`` (document names without suffix)."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                found.add(str(Path(node["file"]).with_suffix("")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")))
    return found


def notebook_paths(root: Path = ROOT) -> list[Path]:
    return sorted(p.relative_to(root) for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def collect(root: Path = ROOT) -> list[Chapter]:
    """The chapters that are in the table of contents and have exercises, in order."""
    in_toc = toc_files(root)
    chapters = [read_chapter(path, root) for path in notebook_paths(root)]
    return [c for c in chapters if c.exercises and c.docname in in_toc]


# --------------------------------------------------------------------------- the page


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell and a link's text."""
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


def _link(exercise: Exercise) -> str:
    """Straight to the exercise block, by its label (resolved across the book by MyST)."""
    return f"#{exercise.options.get('label') or exercise.target}"


def _summary(chapters: list[Chapter]) -> str:
    exercises = [e for c in chapters for e in c.exercises]
    levels = ", ".join(f"{sum(e.level == level for e in exercises)} {level}" for level in LEVELS)
    coding = sum(bool(e.checks) for e in exercises)
    plural = "s" if len(chapters) != 1 else ""
    return (f"{len(exercises)} exercises in {len(chapters)} chapter{plural} ({levels}); {coding} coding "
            f"exercises with a check, {len(exercises) - coding} conceptual.")


def _lecture_sentence(chapters: list[Chapter]) -> list[str]:
    present = {c.number: c for c in chapters}
    parts = [f"*{question}* in {{doc}}`../{present[n].docname}`"
             for n, question in LECTURE_EXERCISES.items() if n in present]
    if not parts:
        return []
    return ["The lecture's own exercises are here too: " + "; ".join(parts) + ".", ""]


def render(chapters: list[Chapter]) -> str:
    """The text of book/exercises.md for these chapters."""
    lines = [
        "# Exercises by chapter",
        "",
        "% Generated by tools/exercise_index.py from the `{exercise}` blocks of notebooks/*.ipynb.",
        "% Do not edit by hand: run `python tools/exercise_index.py`.",
        "% tests/test_exercise_index.py fails when this page and the notebooks disagree.",
        "",
        "Every chapter ends with exercises on the idea it teaches, graded **warm-up** (apply the",
        "formula), **core** (the chapter's main idea) and **open-ended** (an experiment of your own).",
        "**Coding** exercises come with a check you run in the notebook, such as",
        "`check_fgsm(my_fgsm)` from `advcore.exercises`: it runs your function on hidden cases and",
        "says in plain words what is right or what is wrong. **Conceptual** exercises have a worked",
        "answer backed by a small experiment. In the book every solution is folded under *Solution to",
        "Exercise ...*: try first, then click to reveal. In Colab the solution code stays folded under",
        "its title, and a worked answer follows the exercise below a `solution-start` line.",
        "",
        *_lecture_sentence(chapters),
    ]
    if not chapters:
        return "\n".join(lines + ["The chapters' exercises will be listed here.", ""])
    lines += [_summary(chapters), ""]
    for chapter in chapters:
        lines += [f"## {chapter.title}", "", "| | exercise | level | kind |", "| --- | --- | --- | --- |"]
        lines += [f"| {e.label} | [{_cell(e.title)}]({_link(e)}) | {e.level} | {e.kind} |"
                  for e in chapter.exercises]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- conventions


def convention_problems(root: Path = ROOT) -> list[str]:
    """Every way the notebooks' exercises break CONTRIBUTING.md's exercise convention."""
    in_toc = toc_files(root)
    problems = []
    for path in notebook_paths(root):
        chapter = read_chapter(path, root)
        where = path.as_posix()
        problems += [f"{where}: {line!r} is not an exercise block `:::{{exercise}} N.k, "
                     "warm-up|core|open-ended: title`" for line in chapter.malformed]
        problems += chapter.problems
        if chapter.exercises and chapter.docname not in in_toc:
            problems.append(f"{where} has exercises but is not in _toc.yml")
        problems += _numbering_problems(chapter)
        for exercise in chapter.exercises:
            problems += [f"{where}, Exercise {exercise.label}: {p}" for p in _exercise_problems(exercise)]
    return problems


def _numbering_problems(chapter: Chapter) -> list[str]:
    if not chapter.exercises:
        return []
    where, problems = chapter.path.as_posix(), []
    labels = [e.label for e in chapter.exercises]
    expected = [f"{chapter.number}.{k}" for k in range(1, len(labels) + 1)]
    if labels != expected:
        problems.append(f"{where}: exercises are numbered {labels}, expected {expected}")
    low, high = EXERCISES_PER_CHAPTER
    if not low <= len(labels) <= high:
        problems.append(f"{where}: {len(labels)} exercises, the course asks for {low} to {high}")
    return problems


def _exercise_problems(exercise: Exercise) -> list[str]:
    problems = []
    if exercise.options.get("label") != exercise.target:
        problems.append(f"the block needs `:label: {exercise.target}` (has {exercise.options.get('label')!r})")
    if "nonumber" not in exercise.options:
        problems.append("the block needs `:nonumber:` (N.k is its number; Sphinx's counts the whole book)")
    if not exercise.solutions:
        problems.append("no solution (a gated `solution-start` ... `solution-end` block)")
    if exercise.loose_solution_cells:
        problems.append("a `# @title Solution` cell outside the solution block (it would show unfolded)")
    for solution in exercise.solutions:
        problems += _solution_problems(exercise, solution)
    if exercise.checks:
        solution_cells = [cell for s in exercise.solutions for cell in s.cells]
        if not any(CHECK_CALL.search(cell["source"]) for cell in solution_cells):
            problems.append("a coding exercise whose solution cell does not run the check")
        if not exercise.stub_cells:
            problems.append("a coding exercise without a stub cell that calls the check")
        if any("NotImplementedError" not in stub for stub in exercise.stub_cells):
            problems.append("the stub cell is not a stub (`raise NotImplementedError`): solved by mistake?")
    return problems


def _solution_problems(exercise: Exercise, solution: Solution) -> list[str]:
    problems = []
    if solution.target != exercise.target:
        problems.append(f"its solution names {solution.target!r}, not {exercise.target!r}")
    expected_label = exercise.target.replace("exercise-", "solution-", 1)
    if solution.options.get("label") != expected_label:
        problems.append(f"the solution needs `:label: {expected_label}`")
    if "dropdown" not in solution.options.get("class", "").split():
        problems.append("the solution needs `:class: dropdown` (folded until the reader opens it)")
    if not solution.closed:
        problems.append("the solution is not closed by `:::{solution-end}`")
    if not solution.text.strip() and not solution.cells:
        problems.append("the solution is empty")
    for cell in solution.cells:
        metadata, source = cell["metadata"], cell["source"]
        if not source.lstrip().startswith(SOLUTION_TITLE) or metadata.get("cellView") != "form":
            problems.append('a solution code cell needs the first line `# @title Solution (click to show)` '
                            'and metadata {"cellView": "form"} (folded in Colab)')
        if COLLAPSING_TAGS & set(metadata.get("tags", [])):
            problems.append("a solution code cell has a hide-input/hide-cell tag: the dropdown folds it already")
    return problems


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    page, expected = ROOT / INDEX_PAGE, render(collect())
    current = page.read_text(encoding="utf-8") if page.exists() else ""
    if args.check:
        if current == expected:
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                                   str(INDEX_PAGE), "regenerated"))
        return 1
    page.write_text(expected, encoding="utf-8")
    for problem in convention_problems():
        print("warning:", problem, file=sys.stderr)
    print(f"wrote {INDEX_PAGE}: {_summary(collect()) if collect() else 'no chapters yet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
