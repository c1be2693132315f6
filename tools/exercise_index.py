"""Regenerate the book's exercise index, book/exercises.md, from the chapters' headings.

Every exercise in a chapter notebook starts with a markdown heading (CONTRIBUTING.md)::

    ### Exercise N.k (warm-up | core | open-ended): title

This script reads those headings from ``notebooks/NN_*.ipynb`` (the chapters listed in
``_toc.yml``), works out each exercise's kind from its cells -- *coding* when a code cell
calls an ``advcore.exercises.check_*`` function, *conceptual* otherwise -- and writes the
index page. ``tests/test_exercise_index.py`` fails when the committed page differs from
what this script generates, and when an exercise breaks the conventions
(:func:`convention_problems`), so the index cannot drift from the chapters.

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

#: The exact heading of an exercise.
HEADING = re.compile(r"^### Exercise (?P<chapter>\d+)\.(?P<number>\d+) "
                     r"\((?P<level>warm-up|core|open-ended)\): (?P<title>\S.*?)\s*$")
#: Anything that looks like an exercise heading; those not matching HEADING are typos.
LOOSE_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*Exercises?\s*\d", re.IGNORECASE)
#: A heading that ends an exercise: level 1 to 3.
SECTION = re.compile(r"^\s{0,3}#{1,3}\s")
#: A MyST target, ``(exercise-1-2)=``; right before an exercise heading it is linked directly.
TARGET = re.compile(r"^\((?P<label>[^()\s]+)\)=\s*$")
CHECK_CALL = re.compile(r"\b(check_\w+)\s*\(")
SOLUTION_TITLE = "# @title Solution"
COLLAPSING_TAGS = {"hide-input", "hide-cell"}

#: The lecture's own two exercises, by chapter number.
LECTURE_EXERCISES = {
    4: "why was the last layer not considered for perturbations?",
    8: "how to check for distinct maxima?",
}


@dataclass
class Exercise:
    """One exercise of a chapter, as found under its heading."""

    chapter: int
    number: int
    level: str
    title: str
    anchor: str | None = None  # the MyST target right before the heading, if any
    checks: list[str] = field(default_factory=list)  # check_* functions its cells call
    details: int = 0  # <details> blocks (worked answers) in its markdown
    solution_cells: list[dict] = field(default_factory=list)
    stub_cells: list[str] = field(default_factory=list)  # code cells that call a check, not solutions

    @property
    def label(self) -> str:
        return f"{self.chapter}.{self.number}"

    @property
    def kind(self) -> str:
        if self.checks:
            return "coding, checked by " + ", ".join(f"`{name}`" for name in self.checks)
        extras = [name for name, present in (("worked answer", self.details),
                                             ("experiment", self.solution_cells)) if present]
        return "conceptual" + (f" ({' and '.join(extras)})" if extras else "")


@dataclass
class Chapter:
    """A chapter notebook and its exercises."""

    path: Path  # relative to the repository root, e.g. notebooks/01_panda.ipynb
    title: str
    exercises: list[Exercise]
    malformed: list[str]  # heading lines that look like exercises but do not match HEADING

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
    """The lines of a markdown cell outside code fences."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def read_chapter(path: Path, root: Path = ROOT) -> Chapter:
    """The title, exercises and malformed exercise headings of one notebook."""
    cells = json.loads((root / path).read_text(encoding="utf-8"))["cells"]
    title, exercises, malformed = path.stem, [], []
    current: Exercise | None = None
    target: str | None = None  # a MyST target on the last non-blank markdown line
    for cell in cells:
        text = _source(cell)
        if cell.get("cell_type") != "markdown":
            target = None
        if cell.get("cell_type") == "markdown":
            for line in _markdown_lines(text):
                if line.startswith("# ") and title == path.stem:
                    title = line[2:].strip()
                match = HEADING.match(line)
                if match:
                    current = Exercise(int(match["chapter"]), int(match["number"]), match["level"],
                                       match["title"], anchor=target)
                    exercises.append(current)
                    target = None
                    continue
                if line.strip():
                    found = TARGET.match(line.strip())
                    target = found["label"] if found else None
                if LOOSE_HEADING.match(line):
                    malformed.append(line.strip())
                if SECTION.match(line):
                    current = None
            if current is not None:
                current.details += text.count("<details")
        elif cell.get("cell_type") == "code" and current is not None:
            _add_code_cell(current, cell, text)
    return Chapter(path, title, exercises, malformed)


def _add_code_cell(exercise: Exercise, cell: dict, text: str) -> None:
    for name in CHECK_CALL.findall(text):
        if name not in exercise.checks:
            exercise.checks.append(name)
    if text.lstrip().startswith(SOLUTION_TITLE):
        exercise.solution_cells.append({"metadata": cell.get("metadata", {}), "source": text})
    elif CHECK_CALL.search(text):
        exercise.stub_cells.append(text)


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


def _link(chapter: Chapter, exercise: Exercise) -> str:
    """Straight to the exercise when it has a MyST target, else to its chapter."""
    return f"#{exercise.anchor}" if exercise.anchor else f"../{chapter.path.as_posix()}"


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
        "% Generated by tools/exercise_index.py from the `### Exercise N.k (level): title` headings",
        "% of notebooks/*.ipynb. Do not edit by hand: run `python tools/exercise_index.py`.",
        "% tests/test_exercise_index.py fails when this page and the notebooks disagree.",
        "",
        "Every chapter ends with exercises on the idea it teaches, graded **warm-up** (apply the",
        "formula), **core** (the chapter's main idea) and **open-ended** (an experiment of your own).",
        "**Coding** exercises come with a check you run in the notebook, such as",
        "`check_fgsm(my_fgsm)` from `advcore.exercises`: it runs your function on hidden cases and",
        "says in plain words what is right or what is wrong. **Conceptual** exercises have a worked",
        "answer backed by a small experiment. Solutions are collapsed, in the book and in Colab:",
        "try first, then click to reveal.",
        "",
        *_lecture_sentence(chapters),
    ]
    if not chapters:
        return "\n".join(lines + ["The chapters' exercises will be listed here.", ""])
    lines += [_summary(chapters), ""]
    for chapter in chapters:
        lines += [f"## {chapter.title}", "", "| | exercise | level | kind |", "| --- | --- | --- | --- |"]
        lines += [f"| {e.label} | [{_cell(e.title)}]({_link(chapter, e)}) | {e.level} | {e.kind} |"
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
        problems += [f"{where}: heading {line!r} is not `### Exercise N.k (warm-up|core|open-ended): "
                     "title`" for line in chapter.malformed]
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
    if not exercise.solution_cells and not exercise.details:
        problems.append("no solution (a `# @title Solution` cell or a <details> block)")
    for cell in exercise.solution_cells:
        metadata = cell["metadata"]
        if metadata.get("cellView") != "form" or not COLLAPSING_TAGS & set(metadata.get("tags", [])):
            problems.append('a solution cell lacks metadata {"cellView": "form", "tags": ["hide-input"]}')
    if exercise.checks:
        if not any(CHECK_CALL.search(cell["source"]) for cell in exercise.solution_cells):
            problems.append("a coding exercise whose solution cell does not run the check")
        if not exercise.stub_cells:
            problems.append("a coding exercise without a stub cell that calls the check")
        if any("NotImplementedError" not in stub for stub in exercise.stub_cells):
            problems.append("the stub cell is not a stub (`raise NotImplementedError`): solved by mistake?")
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
