"""Test-session defaults, set before any kernel or subprocess starts so they inherit them.

* ``ADVCORE_PROFILE=smoke``: every notebook and zoo model at test size.
* ``ADVCORE_DATA``: the sibling data mirror ``../shared/data`` when it exists (offline CI).
* ``ADVCORE_CACHE``: a fresh folder for this session, so tests never trust a stale cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SIBLING_MIRROR = ROOT.parent / "shared" / "data"

os.environ.setdefault("ADVCORE_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
if "ADVCORE_DATA" not in os.environ and SIBLING_MIRROR.is_dir():
    os.environ["ADVCORE_DATA"] = str(SIBLING_MIRROR)
if "ADVCORE_CACHE" not in os.environ:
    os.environ["ADVCORE_CACHE"] = tempfile.mkdtemp(prefix="advcore-test-cache-")

collect_ignore_glob = ["_build/*", ".venv/*"]
