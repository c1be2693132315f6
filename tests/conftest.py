"""Fixtures shared by the book tests: one smoke-profile build of the whole book per session."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Point at the output folder of an earlier ``jupyter-book build . --path-output DIR`` to
#: check its pages without building again (the build test itself is then skipped).
REUSE_BUILD = "ADVCORE_TEST_BOOK_BUILD"


@dataclass(frozen=True)
class BookBuild:
    """A finished book build: where its HTML is, and how the build ended."""

    html: Path
    returncode: int
    log: str
    reused: bool = False


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> BookBuild:
    """The whole book, executed in the smoke profile, with every warning an error (built once)."""
    if os.environ.get(REUSE_BUILD):
        output = Path(os.environ[REUSE_BUILD]).resolve()
        html = output / "_build" / "html"
        if not (html / "index.html").is_file():
            raise FileNotFoundError(f"{REUSE_BUILD}={output} holds no built book ({html}/index.html); "
                                    "unset it or build there with `jupyter-book build . --path-output DIR`")
        return BookBuild(html, 0, f"reused the build in {output}", reused=True)
    output = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    env = {**os.environ, "ADVCORE_PROFILE": "smoke"}
    env.pop("MPLBACKEND", None)  # the tests' Agg backend would make plt.show() draw nothing: render as make book does
    result = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--all", "-W", "-n", "--keep-going", "--path-output", str(output)],
        capture_output=True, text=True, env=env, timeout=3600,
    )
    return BookBuild(output / "_build" / "html", result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="session")
def toc_pages() -> list[str]:
    """Every page of ``_toc.yml``, root first, as document names (``notebooks/01_panda``)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files
