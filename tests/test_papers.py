"""The one list of paper numbers (advcore.papers): consistent, cited, and looked up safely."""
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
