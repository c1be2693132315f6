"""The intro's chapter guide: one line per chapter, with how long it takes to read and to run.

Usage in a MyST page (one chapter per line, ``document | what it shows``)::

    ```{chapter-guide}
    ../notebooks/01_panda | FGSM fools an ImageNet classifier with an invisible step.
    ```

The directive leaves a placeholder; once every document has been read (and executed), a
post-transform fills in a table from the build's own records, never from typed numbers:

* **read**: minutes for the chapter's prose, from MyST's word count of the page
  (``wordcount`` metadata, at ``myst_words_per_minute``, 200 by default);
* **run**: seconds the chapter's code took when it was last executed, from MyST-NB's
  execution record (the numbers of the *About this build* page's ``nb-exec-table``); a
  chapter whose code has not changed since an earlier build shows that build's time.
"""

from __future__ import annotations

import posixpath

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

from myst_nb._compat import findall
from myst_nb.sphinx_ import NbMetadataCollector

GUIDE_KEY = "has_chapter_guide"


class chapter_guide_node(nodes.General, nodes.Element):
    """Placeholder for the guide table; holds ``rows``: ``(docname, description nodes)``."""


class ChapterGuide(SphinxDirective):
    """``{chapter-guide}``: one ``document | description`` line per chapter."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        node = chapter_guide_node()
        node["rows"] = []
        for offset, line in enumerate(self.content):
            if not line.strip():
                continue
            if "|" not in line:
                raise self.error(f"chapter-guide line {offset + 1}: expected `document | description`, got {line!r}")
            target, description = (part.strip() for part in line.split("|", 1))
            docname = posixpath.normpath(posixpath.join(posixpath.dirname(self.env.docname), target))
            text_nodes, messages = self.state.inline_text(description, self.lineno + offset)
            node["rows"].append((docname, target, text_nodes))
            node += messages
        NbMetadataCollector.set_doc_data(self.env, self.env.docname, GUIDE_KEY, True)
        self.set_source_info(node)
        return [node]


def _entry(*children: nodes.Node) -> nodes.entry:
    paragraph = nodes.paragraph()
    paragraph += list(children)
    return nodes.entry("", paragraph)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class FillChapterGuide(SphinxPostTransform):
    """Replace the placeholder with the table, from word counts and execution records."""

    default_priority = 8  # before references are resolved (the chapter links are pending_xref)

    def run(self, **kwargs) -> None:
        exec_data = NbMetadataCollector.get_doc_data(self.env)
        for node in findall(self.document)(chapter_guide_node):
            table = nodes.table(classes=["colwidths-auto", "chapter-guide"])
            group = nodes.tgroup(cols=3)
            table += group
            group += [nodes.colspec(colwidth=width) for width in (30, 54, 16)]
            head, body = nodes.thead(), nodes.tbody()
            group += [head, body]
            head += nodes.row("", *(_entry(nodes.Text(name)) for name in ("chapter", "what it shows", "read / run")))
            for docname, target, text_nodes in node["rows"]:
                link = pending_xref(refdoc=self.env.docname, reftarget=target, reftype="doc", refdomain="std",
                                    refexplicit=False, refwarn=True, classes=["xref", "doc"])
                link += nodes.inline(text=docname)
                words = self.env.metadata.get(docname, {}).get("wordcount", {})
                read = ("not counted" if "minutes" not in words
                        else "under 1 min" if words["minutes"] < 1 else f"{words['minutes']} min")
                record = (exec_data.get(docname) or {}).get("exec_data") or {}
                runtime = record.get("runtime")
                run = _minutes(runtime) if runtime is not None and record.get("succeeded") else "not executed"
                body += nodes.row("", _entry(link), _entry(*[n.deepcopy() for n in text_nodes]),
                                  _entry(nodes.Text(f"{read} / {run}")))
            node.replace_self(table)


def _refresh_guides(app: Sphinx, env) -> list[str]:
    """Re-write the pages with a guide when a chapter was executed again (new run times)."""
    if not NbMetadataCollector.new_exec_data(env):
        return []
    return [doc for doc, data in NbMetadataCollector.get_doc_data(env).items() if data.get(GUIDE_KEY)]


def setup(app: Sphinx) -> dict:
    app.add_node(chapter_guide_node)
    app.add_directive("chapter-guide", ChapterGuide)
    app.add_post_transform(FillChapterGuide)
    app.connect("env-updated", _refresh_guides)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
