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


# --------------------------------------------------------------------------- issue 15: cached pieces


def _piece(tmp_path, monkeypatch, calls, seed=0):
    """A cached piece of a stand-in experiment: one tensor, and how often it was computed."""
    import torch

    monkeypatch.setenv("ADVCORE_CACHE", str(tmp_path))

    def compute():
        calls.append(seed)
        return {"losses": torch.arange(5.0) + seed}

    from advcore.profiles import current_profile
    return experiments._cached("stand-in", {"seed": seed}, compute, profile=current_profile("smoke"))


def test_a_flipped_byte_in_a_cached_piece_is_detected_and_recomputed(tmp_path, monkeypatch):
    # Issue 15, item 4: a piece had no checksum; one flipped byte changed the reported numbers.
    import torch

    calls: list[int] = []
    fresh = _piece(tmp_path, monkeypatch, calls)
    (path,) = (tmp_path / "experiments" / "smoke" / "stand-in").glob("*.pt")
    content = bytearray(path.read_bytes())
    index = content.index(torch.arange(5.0).numpy().tobytes()) + 5  # inside the stored numbers
    content[index] ^= 0x40
    path.write_bytes(bytes(content))
    with pytest.warns(UserWarning, match="damaged cached piece"):
        again = _piece(tmp_path, monkeypatch, calls)
    assert calls == [0, 0] and torch.equal(again["losses"], fresh["losses"])


def test_a_resumed_run_reports_what_its_cached_pieces_cost(tmp_path, monkeypatch):
    # Issue 15, item 9: a resumed run's provenance showed only the minutes of its last part.
    calls: list[int] = []
    with experiments.cache_ledger() as outer:  # ledgers nest (the CLI's around an experiment's own)
        with experiments.cache_ledger() as first:
            _piece(tmp_path, monkeypatch, calls)
        with experiments.cache_ledger() as resumed:
            _piece(tmp_path, monkeypatch, calls)
    assert first["computed"] == 1 and first["from_cache"] == 0 and first["computed_seconds"] > 0
    assert resumed["computed"] == 0 and resumed["from_cache"] == 1
    assert resumed["from_cache_seconds"] == first["computed_seconds"]  # the time it took then
    assert outer["computed"] == outer["from_cache"] == 1
