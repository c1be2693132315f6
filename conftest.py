"""Test-session defaults, set before any kernel or subprocess starts so they inherit them.

* ``ADVCORE_PROFILE=smoke``: every notebook and zoo model at test size.
* ``ADVCORE_DATA``: the sibling data mirror ``../shared/data`` when it exists (offline CI).
* ``ADVCORE_CACHE``: a fresh folder for this session, so tests never trust a stale cache (set
  here, in the controlling process, so pytest-xdist's workers share it: the zoo locks its entries).

``make test`` runs two pytest-xdist workers: the tests of the book build are one work unit, handed
out first (the build is the longest piece of the suite: it executes every notebook again), and
every other file is a unit of its own (a notebook's cells share one kernel, so a file never splits
across workers); a worker takes the next unit when it is done with its own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SIBLING_MIRROR = ROOT.parent / "shared" / "data"

os.environ.setdefault("ADVCORE_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
if "ADVCORE_DATA" not in os.environ and SIBLING_MIRROR.is_dir():
    os.environ["ADVCORE_DATA"] = str(SIBLING_MIRROR)
if "ADVCORE_CACHE" not in os.environ:
    os.environ["ADVCORE_CACHE"] = tempfile.mkdtemp(prefix="advcore-test-cache-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each pytest-xdist worker (and the notebook kernels it starts) gets its share of the cores: with
    # torch's default of a thread per core in every worker, the workers oversubscribe the cores and
    # OpenMP's spinning threads more than doubled the suite's CPU time (make test on a clean clone,
    # measured: 40 CPU min against 17).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))

collect_ignore_glob = ["_build/*", ".venv/*"]

#: Test files that use the one smoke build of the book (``tests/conftest.py::smoke_book``): one work
#: unit for pytest-xdist, so the book is built once, and collected first, so its worker starts it at once.
BOOK_TEST_FILES = ("tests/test_book.py", "tests/test_book_browser.py")


def _work_unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "book" if path in BOOK_TEST_FILES else path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    strays = [item.nodeid for item in items
              if "smoke_book" in getattr(item, "fixturenames", ()) and _work_unit(item.nodeid) != "book"]
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} use(s) the book build (smoke_book) outside "
                                f"{', '.join(BOOK_TEST_FILES)}: move it there, or add its file to "
                                "BOOK_TEST_FILES in conftest.py (a worker would build the book once more).")
    items.sort(key=lambda item: _work_unit(item.nodeid) != "book")  # stable: files keep their order


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: ignored without xdist (or with -p no:xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """One work unit per file (the book's files: one unit), handed out in collection order, whatever
    ``--dist`` says: a notebook's cells must stay together, in order, on one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class BookFirstScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    config.option.loadscopereorder = False  # largest-first would queue the book last: few tests, longest
    return BookFirstScheduling(config, log)
