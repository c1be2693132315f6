"""Each page loads each script once.

Under Jupyter Book 1.x (Sphinx 7.4), sphinx-thebe registers its inline configuration script
twice, so every page declared ``const THEBE_JS_URL`` twice and the browser stopped on
"Identifier 'THEBE_JS_URL' has already been declared" (found by tests/test_book_browser.py).
This drops repeated scripts (same file, same inline body, same attributes; an inline script's file may be None or "") from each page,
keeping the first.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _script_key(script: object) -> tuple:
    """What the browser sees of a script: its file and attributes (inline body included), not its priority."""
    attributes = getattr(script, "attributes", {}) or {}
    return str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def drop_repeated_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
