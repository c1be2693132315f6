"""Chapters 8 and 9 with a committed paper-scale result: the branch CI never sees otherwise.

No `gpu` result is committed yet (the machines that build the book have no GPU). When one is,
the chapters must show it beside their live run. This test makes small results with the
command line, files them as the `gpu` ones in a private results folder, and runs the two
chapters against that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

from advcore.results import RESULTS_ENV, load_result

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = {"landscape": "08_landscape", "robust-training": "09_robust_training"}


@pytest.fixture(scope="module")
def committed_root(tmp_path_factory) -> Path:
    """A results folder whose `gpu` results are smoke-sized runs of the real command."""
    root = tmp_path_factory.mktemp("results")
    done = subprocess.run([sys.executable, "-m", "advcore", "run", "all", "--profile", "smoke", "--root", str(root),
                           "--no-progress"], cwd=ROOT, env={**os.environ, "ADVCORE_PROFILE": "smoke"},
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in CHAPTERS:
        shutil.copyfile(root / name / "smoke.json", root / name / "gpu.json")  # it names the same NPZ
        assert load_result(name, profile="gpu", root=root) is not None
    return root


def _markdown_and_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            parts.append(data.get("text/markdown", "") + data.get("text/plain", "") + output.get("text", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(CHAPTERS))
def test_chapter_shows_a_committed_gpu_result(experiment, committed_root, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV, str(committed_root))  # the kernel inherits it
    monkeypatch.setenv("ADVCORE_PROFILE", "smoke")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # draw the figures (the tests' Agg backend shows none)
    path = ROOT / "notebooks" / f"{CHAPTERS[experiment]}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    shown = _markdown_and_text(notebook)
    assert "No committed" not in shown and "no committed" not in shown
    assert "committed" in shown  # the chapter names the committed run and where it came from
    figures = sum("image/png" in output.get("data", {}) for cell in notebook.cells
                  for output in cell.get("outputs", []))
    live_only = nbformat.read(path, as_version=4)  # how many figures the chapter draws without one
    monkeypatch.setenv(RESULTS_ENV, str(committed_root / "empty"))
    nbclient.NotebookClient(live_only, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    live_figures = sum("image/png" in output.get("data", {}) for cell in live_only.cells
                       for output in cell.get("outputs", []))
    assert figures > live_figures  # the committed run's figures are drawn too
