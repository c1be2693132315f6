"""What a chapter hands to the rest of the book: its measured counterparts of the papers' numbers.

A chapter that measures something a paper reports (an error rate, a confidence, a setting it
ran with) records its own number under the paper number's key from :mod:`advcore.papers`::

    from advcore.book import record_ours
    record_ours("madry.mnist.pgd40", f"{accuracy:.1%} (PGD-{steps})")

The record is a MyST-NB ``glue`` (Jupyter Book's way of passing a value from one page to
another): it shows nothing on the chapter's page, and the revision sheet
(``book/revision.md``, written by ``tools/revision_sheet.py``) pastes it next to the paper's
number with ``{glue:text}`` from that chapter. So "ours" on the revision sheet is always what
the chapter computed in the same build, never a typed number. Outside a book build (Colab, a
plain Jupyter kernel without ``myst-nb``) recording does nothing.
"""

from __future__ import annotations

from advcore import papers

__all__ = ["record_ours", "glue_name"]


def glue_name(key: str) -> str:
    """The glue name under which a chapter records its counterpart of paper number ``key``."""
    return f"ours.{key}"


def record_ours(key: str, text: str) -> None:
    """Record this chapter's measured counterpart of the paper number ``key``, as printed.

    Args:
        key: a key of :data:`advcore.papers.NUMBERS`, e.g. ``"madry.mnist.pgd40"``.
        text: our number as the page should print it, with what makes it comparable or not,
            e.g. ``"91.0% (PGD-40)"``, or why there is none (``"n/a: no CIFAR-10 offline"``).

    Raises:
        KeyError: ``key`` is not a paper number (the message lists the closest keys).
        TypeError: ``text`` is not a string (format the number first, as the page shows it).
    """
    papers.number(key)  # an unknown key fails here, in the chapter, not on the revision sheet
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"record_ours({key!r}, ...) needs the number as non-empty text, e.g. f'{{value:.1%}}'; "
                        f"got {text!r}")
    try:
        from myst_nb import glue
    except ImportError:  # Colab or a plain kernel: no book is being built, nobody reads the record
        return
    glue(glue_name(key), text, display=False)
