"""The one list of paper numbers (advcore.papers): consistent, cited, and looked up safely."""
import json
import re
from pathlib import Path

import pytest

from advcore import papers

BIB = Path(__file__).resolve().parents[1] / "book" / "references.bib"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_number_cites_a_reference_in_the_bibliography():
    keys = set(re.findall(r"@\w+\{([^,]+),", BIB.read_text()))
    missing = {n.key: n.paper for n in papers.NUMBERS.values() if n.paper not in keys}
    assert not missing, f"paper keys not in book/references.bib: {missing}"


def test_every_number_names_an_existing_chapter_and_a_location():
    stems = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    for n in papers.NUMBERS.values():
        assert n.chapter in stems, n
        assert n.location.strip() and n.what.strip(), n


def test_percent_texts_agree_with_values():
    """A percentage's text is its value as a fraction, to the digits printed."""
    for n in papers.NUMBERS.values():
        if n.text.endswith("%"):
            assert 0 <= n.value <= 1, n
            digits = n.text[:-1]
            decimals = len(digits.split(".")[1]) if "." in digits else 0
            assert f"{100 * n.value:.{decimals}f}" == digits, n


def test_known_values():
    assert papers.number("madry.mnist.pgd40").value == pytest.approx(0.932)
    assert papers.number("goodfellow.transfer.softmax_agrees_on_maxout_errors").text == "54.6%"
    assert papers.number("goodfellow.transfer.softmax_agrees_when_both_wrong").text == "84.6%"
    assert papers.number("autoattack.madry_mnist").text == "88.50%"
    assert "93.2%" in papers.percent_texts() and "0.3" not in papers.percent_texts()


def test_unknown_key_lists_close_keys():
    with pytest.raises(KeyError, match="madry.mnist.pgd40"):
        papers.number("madry.mnist.pgd_40")


def test_cite_names_paper_and_location():
    assert papers.cite("madry.mnist.pgd40") == "93.2% (Madry et al., Table 1)"


# Madry et al. are cited in their ICLR 2018 text (book/references.bib). The longer arXiv text
# numbers differently (PGD rule in Sec. 2.1, landscape in Sec. 3.1 with Fig. 1-2, experiments in
# Sec. 5) and neither has an algorithm box. The ICLR text has no Sec. 2.1 or 3.1 and no
# Algorithm 1, so citing them is always wrong (its Sec. 5 and Fig. 2 exist, so those are not
# matched here; the locations in advcore.papers are checked below).
_ARXIV_ONLY = re.compile(
    r"Madry et al\.(?:'s)?,?\s+(?:2018,?\s+)?(?:\(\s*)?"
    r"(?:Sec\.\s*(?:2\.1|3\.1)\b|Fig\.\s*1-2|Alg(?:\.|orithm)\s*1\b)")


def _cited_text(path: Path) -> str:
    """A file's text as a reader sees it: for notebooks, the cell sources joined."""
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    return path.read_text()


def test_madry_citations_use_the_iclr_numbering():
    root = NOTEBOOKS.parent
    files = [*NOTEBOOKS.glob("*.ipynb"), *(root / "advcore").glob("*.py"), *(root / "book").glob("*.md"),
             *(root / "tools").glob("*.py"), *(root / "benchmarks").glob("*.py"), root / "benchmarks" / "README.md",
             root / "CONTRIBUTING.md", root / "README.md", root / "results" / "README.md"]
    found = {f"{p.relative_to(root)}: {m.group(0)!r}" for p in files if p.exists()
             for m in _ARXIV_ONLY.finditer(_cited_text(p))}
    assert not found, f"arXiv-only locations cited for Madry et al. (cite the ICLR 2018 text): {sorted(found)}"
    assert all(not n.location.startswith(("Sec. 2.1", "Sec. 3.1", "Sec. 5"))
               for n in papers.NUMBERS.values() if n.paper == "madry2018towards")
