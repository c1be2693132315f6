"""The library's shape: each module uses the others through their public names only."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "advcore"


def _private_uses(path: Path) -> list[str]:
    """``from advcore.x import _name`` and ``x._name`` (``x`` an imported advcore module) in one file."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()  # local names bound to advcore modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("advcore"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} imports {node.module}.{alias.name}")
                elif node.module == "advcore":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("advcore.")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    found = [use for path in sorted(LIBRARY.glob("*.py")) for use in _private_uses(path)]
    assert found == [], ("make the name public in its home module (e.g. advcore.checks) or move it there: "
                         + "; ".join(found))
