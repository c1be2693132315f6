"""advcore.experiments: finished pieces are cached, and a resumed run equals a fresh one."""

from __future__ import annotations

import pytest

from advcore import data, experiments


@pytest.mark.slow
def test_a_partly_cached_robust_training_run_equals_a_fresh_one(tmp_path, monkeypatch):
    # Each (model, attack) evaluation seeds its own PGD starts, so which pieces came from the
    # cache (an interrupted run) cannot change the others' numbers.
    monkeypatch.setenv("ADVCORE_CACHE", str(tmp_path))
    fresh = experiments.robust_training("smoke", device="cpu")["mnist"]["accuracy"]
    pieces = sorted((data.cache_dir() / "experiments" / "smoke" / "robust-training").glob("*.pt"),
                    key=lambda path: path.stat().st_mtime_ns)  # in the order they were computed
    assert len(pieces) == len(fresh)  # one cached piece per model and attack
    for piece in pieces[len(pieces) // 2:]:  # the second model's: as if interrupted after the first
        piece.unlink()
    resumed = experiments.robust_training("smoke", device="cpu")["mnist"]["accuracy"]
    assert resumed == fresh
