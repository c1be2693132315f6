"""Write the book's revision sheet, book/revision.md: equations, settings, paper numbers vs ours.

The page has three parts:

1. the lecture's key equations (FGSM, the linear explanation, the alpha-mix objective, the
   min-max problem, the PGD step and its projection), each with the section it comes from;
2. the attack and training settings of both papers, from :mod:`advcore.papers`;
3. one table of every paper number in :data:`advcore.papers.NUMBERS` beside ours.

"Ours" is never written here: a chapter that measures a counterpart records it with
``advcore.book.record_ours(key, text)`` (a MyST-NB glue), and the page pastes it with
``{glue:text}`` from that chapter, so the build fills it in from the chapter's own run. This
script finds which chapter records which key by reading the chapters' code cells; a number no
chapter measures says so. ``tests/test_revision_sheet.py`` fails when the committed page
differs from what this script writes.

Usage (from the repository root)::

    python tools/revision_sheet.py           # rewrite book/revision.md
    python tools/revision_sheet.py --check   # exit 1 and show a diff if the page is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's advcore, also when run as a script

from advcore import papers  # noqa: E402
from advcore.book import glue_name  # noqa: E402

PAGE = Path("book/revision.md")
#: ``record_ours("key", ...)`` in a chapter's code: the key must be a literal for this script.
RECORD = re.compile(r"""\brecord_ours\(\s*["']([^"']+)["']""")
PAPER_NAMES = {
    "goodfellow2015explaining": "Goodfellow et al. 2015",
    "madry2018towards": "Madry et al. 2018",
    "madrylab_challenges": "MadryLab's released code",
    "croce2020reliable": "Croce & Hein 2020",
    "engstrom2019robustness": "MadryLab's robustness library",
    "papernot2017practical": "Papernot et al. 2017",  # used by the fidelity branch's later numbers
}
#: The settings table: (what, key) in the order a student meets them.
SETTINGS = {
    "Goodfellow et al. 2015": [
        ("FGSM ε on ImageNet (the panda)", "goodfellow.panda.eps"),
        ("FGSM ε on MNIST (pixels in [0, 1])", "goodfellow.mnist.eps"),
        ("FGSM ε on preprocessed CIFAR-10", "goodfellow.cifar.eps"),
        ("α, weight of the clean term in the adversarial objective", "goodfellow.advtrain.alpha"),
        ("maxout units per layer: original, larger", ("goodfellow.advtrain.units_original",
                                                      "goodfellow.advtrain.units_large")),
    ],
    "Madry et al. 2018": [
        ("MNIST: ε; PGD steps × step size in training", ("madry.mnist.eps", "madry.mnist.train_steps",
                                                          "madry.mnist.train_step_size")),
        ("MNIST: training iterations, batch size", ("madry.mnist.iterations", "madry.mnist.batch_size")),
        ("CIFAR-10: ε; PGD steps (paper / released config) × step size",
         ("madry.cifar.eps", "madry.cifar.train_steps_paper", "madry.cifar.train_steps_code",
          "madry.cifar.train_step_size")),
        ("CIFAR-10: training iterations, batch size", ("madry.cifar.iterations", "madry.cifar.batch_size")),
        ("landscape: random restarts per example; restarts traced", ("madry.landscape.restarts",
                                                                    "madry.landscape.trace_restarts")),
        ("PGD step size rule for evaluation: factor × ε / steps", "robustness.step_size_factor"),
    ],
}

EQUATIONS = r"""
## The key equations

**FGSM** {cite:p}`goodfellow2015explaining` (Sec. 4): one step of size $\epsilon$ along the sign
of the input gradient of the loss $J$, kept a valid image,

$$
x_\text{adv} = \mathrm{clip}_{[0,1]}\big(x + \epsilon\,\mathrm{sign}(\nabla_x J(\theta, x, y))\big).
$$

**The linear explanation** (Sec. 3): for a linear unit $w^\top x$ and a perturbation with
$\lVert\eta\rVert_\infty \le \epsilon$, the worst case $\eta = \epsilon\,\mathrm{sign}(w)$ moves
the output by

$$
w^\top \eta = \epsilon \lVert w \rVert_1,
$$

which grows linearly with the number of inputs $n$ while no single input moves by more than
$\epsilon$.

**Adversarial training, the α-mix objective** (Sec. 6):

$$
\tilde J(\theta, x, y) = \alpha\, J(\theta, x, y)
  + (1 - \alpha)\, J\big(\theta,\, x + \epsilon\,\mathrm{sign}(\nabla_x J(\theta, x, y)),\, y\big).
$$

**The min-max (saddle-point) problem** {cite:p}`madry2018towards` (Sec. 2): train against the
worst perturbation in the allowed set $\mathcal S = \{\delta : \lVert\delta\rVert_\infty \le \epsilon\}$,

$$
\min_\theta \rho(\theta), \qquad
\rho(\theta) = \mathbb{E}_{(x, y) \sim \mathcal D}\Big[\max_{\delta \in \mathcal S} L(\theta, x + \delta, y)\Big].
$$

FGSM is the exact inner maximizer when $L$ is linear in $x$; any attack gives a lower bound on
the inner maximum.

**The PGD step and projection** (Sec. 3; the random start, Sec. 4): from $x^0 = x + \eta$,
$\eta \sim U(-\epsilon, \epsilon)^n$, repeat, with step size $a$ (Madry et al. call it $\alpha$;
here $\alpha$ is already the weight of the mix above)

$$
x^{t+1} = \Pi_{x + \mathcal S}\big(x^t + a\,\mathrm{sign}(\nabla_x L(\theta, x^t, y))\big),
$$

where, for the $\ell_\infty$ ball and images in $[0, 1]$, the projection clips coordinate by
coordinate:

$$
\Pi_{x + \mathcal S}(x') = \mathrm{clip}_{[0,1]}\big(\min(\max(x', x - \epsilon), x + \epsilon)\big).
$$

`advcore.attacks.fgsm`, `pgd` and `project_linf` implement exactly these lines; chapters
{doc}`../notebooks/01_panda`, {doc}`../notebooks/03_fgsm_adversarial_training` and
{doc}`../notebooks/07_min_max_pgd` run them.

"""


def recorded_keys(root: Path = ROOT) -> dict[str, str]:
    """``{paper key: chapter stem}`` for every ``record_ours("key", ...)`` in a chapter's code."""
    found: dict[str, str] = {}
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell.get("cell_type") != "code":
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for key in RECORD.findall(source):
                if key in found and found[key] != path.stem:
                    raise ValueError(f"{key!r} is recorded by both {found[key]} and {path.stem}: keep one")
                found[key] = path.stem
    return found


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def _ours(key: str, recorded: dict[str, str]) -> str:
    if key not in recorded:
        return "not measured in this book"
    # ":s" ends the role: without a format spec, {glue:text} would split the key at its "::".
    return f"{{glue:text}}`../notebooks/{recorded[key]}.ipynb::{glue_name(key)}:s`"


def _settings() -> list[str]:
    lines = ["## The papers' settings", "",
             "As each paper (or its released code) states them; the chapters say where ours differ.", ""]
    for paper, rows in SETTINGS.items():
        lines += [f"**{paper}**", "", "| setting | value | where |", "| --- | --- | --- |"]
        for what, keys in rows:
            keys = (keys,) if isinstance(keys, str) else keys
            numbers = [papers.number(key) for key in keys]
            values = "; ".join(n.text for n in numbers)
            where = "; ".join(dict.fromkeys(f"{PAPER_NAMES.get(n.paper, n.paper)}, {n.location}" for n in numbers))
            lines.append(f"| {_cell(what)} | {_cell(values)} | {_cell(where)} |")
        lines.append("")
    return lines


def _numbers_table(recorded: dict[str, str]) -> list[str]:
    measured = sum(key in recorded for key in papers.NUMBERS)
    lines = [
        "## Every paper number in this book, and ours",
        "",
        f"All {len(papers.NUMBERS)} numbers the book quotes from the papers (`advcore.papers`), in the",
        "order of the chapters. *Ours* is pasted from the chapter that measures it, as that chapter",
        f"computed it in this build ({measured} of them); the others are not measured here. Ours are",
        "at the build's profile (smoke, cpu or gpu; see each chapter's first output), so they are",
        "comparable in kind, not in size, unless the chapter says they ran at paper scale.",
        "",
    ]
    chapter_order = sorted({n.chapter for n in papers.NUMBERS.values()} | set(recorded.values()))
    for stem in chapter_order:
        rows = [n for n in papers.NUMBERS.values() if recorded.get(n.key, n.chapter) == stem]
        if not rows:
            continue
        lines += [f"### {{doc}}`../notebooks/{stem}`", "",
                  "| what | paper | where | ours |", "| --- | --- | --- | --- |"]
        for n in rows:
            where = f"{PAPER_NAMES.get(n.paper, n.paper)}, {n.location}"
            lines.append(f"| {_cell(n.what)} | {_cell(n.text)} | {_cell(where)} | {_ours(n.key, recorded)} |")
        lines.append("")
    return lines


def render(recorded: dict[str, str] | None = None) -> str:
    """The text of book/revision.md."""
    recorded = recorded_keys() if recorded is None else recorded
    unknown = sorted(set(recorded) - set(papers.NUMBERS))
    if unknown:
        raise KeyError(f"chapters record numbers that advcore.papers does not have: {unknown}")
    lines = [
        "# Revision sheet",
        "",
        "% Generated by tools/revision_sheet.py from advcore/papers.py and the chapters'",
        "% record_ours(...) calls. Do not edit by hand: run `python tools/revision_sheet.py`.",
        "",
        "The lecture on one page: the equations to know, the settings both papers used, and every",
        "number the book quotes from them beside the number this book measured.",
        *EQUATIONS.splitlines(),
        *_settings(),
        *_numbers_table(recorded),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    page, expected = ROOT / PAGE, render()
    current = page.read_text(encoding="utf-8") if page.exists() else ""
    if args.check:
        if current == expected:
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                                   str(PAGE), "regenerated"))
        return 1
    page.write_text(expected, encoding="utf-8")
    print(f"wrote {PAGE}: {len(papers.NUMBERS)} paper numbers, {len(recorded_keys())} with ours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
