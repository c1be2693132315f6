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


def test_the_landscape_experiment_keeps_a_robust_models_tiny_losses():
    # A robust model's losses under attack reach 1e-10 (chapter 8, committed PGD-trained CNN); the
    # experiment once kept them in float16, which rounds everything below 6e-8 to 0.
    import torch
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.mul_(0.001)
        model[1].bias.zero_()[3] = 20.0  # margin about 20 on class 3: cross-entropy about 9 e^-20 = 2e-8
    x, y = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([3])
    settings = {"eps": 0.3, "step_size": 0.1, "steps": 3, "restarts": 8, "traced": 2, "keep_deltas": 8}
    piece = experiments._landscape_piece(model, x, y, settings, seed=0, device=torch.device("cpu"), progress=False)
    losses = piece["final_losses"].double()
    assert (losses > 1e-9).all() and (losses < 1e-7).all()  # float16 would hold 0 or 6e-8 here
    with torch.no_grad():
        clean = nn.functional.cross_entropy(model(x).double(), y)
    assert losses.max() < 2 * clean  # the attack moves the loss by a factor, not orders of magnitude
