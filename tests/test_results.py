"""advcore.results: results with provenance, written atomically, read back or reported missing."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from advcore import results
from advcore.results import load_result, result_path, save_result


def _data():
    return {
        "final_losses": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
        "traces": torch.arange(6, dtype=torch.float32).view(2, 3),
        "eps": 0.3,
        "examples": [3, 1, 4],
        "table": {"natural": 0.988, "pgd": 0.932, "note": "MNIST"},
        "count": np.int64(7),
        "missing": float("nan"),
    }


def test_roundtrip_with_provenance(tmp_path):
    path = save_result("landscape", _data(), profile="smoke", wall_time_s=1.5, root=tmp_path,
                       command="python -m advcore run landscape --profile smoke")
    assert path == tmp_path / "landscape" / "smoke.json"
    result = load_result("landscape", profile="smoke", root=tmp_path)
    assert result is not None
    np.testing.assert_array_equal(result["final_losses"], _data()["final_losses"])
    np.testing.assert_array_equal(result["traces"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert result["eps"] == 0.3 and result["examples"] == [3, 1, 4] and result["count"] == 7
    assert result["table"]["note"] == "MNIST" and np.isnan(result["missing"])
    p = result.provenance
    assert p["profile"] == "smoke" and p["wall_time_s"] == 1.5
    assert p["command"].startswith("python -m advcore")
    assert p["torch"] == torch.__version__ and p["device"] and p["created_utc"].endswith("Z")
    assert "git_commit" in p and "advcore" in p
    if p["device"].startswith("cpu"):  # the vector capability that sets a CPU run's speed
        assert torch.backends.cpu.get_cpu_capability() in p["device"]
    assert "smoke" in result.describe() and result.profile == "smoke"
    assert set(result.keys()) >= {"final_losses", "eps"} and "eps" in result
    with pytest.raises(KeyError, match="no 'nope'"):
        result["nope"]


def test_missing_result_is_none(tmp_path):
    assert load_result("landscape", profile="gpu", root=tmp_path) is None


def test_scalars_only_writes_no_npz_and_removes_a_stale_one(tmp_path):
    save_result("demo", {"a": np.ones(3)}, profile="cpu", wall_time_s=0, root=tmp_path)
    assert len(list((tmp_path / "demo").glob("cpu-*.npz"))) == 1
    save_result("demo", {"a": np.zeros(3)}, profile="cpu", wall_time_s=0, root=tmp_path)
    assert len(list((tmp_path / "demo").glob("cpu-*.npz"))) == 1  # the old arrays are gone
    save_result("demo", {"a": 1}, profile="cpu", wall_time_s=0, root=tmp_path)
    assert not list((tmp_path / "demo").glob("cpu-*.npz"))
    assert load_result("demo", profile="cpu", root=tmp_path)["a"] == 1


@pytest.mark.parametrize("name", ["", "Landscape", "../escape", "a b", "x/y"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="Result name"):
        save_result(name, {"a": 1}, profile="cpu", wall_time_s=0, root=tmp_path)


def test_bad_keys_and_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="identifiers"):
        save_result("demo", {"not a key": 1}, profile="cpu", wall_time_s=0, root=tmp_path)
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_result("demo", {"a": object()}, profile="cpu", wall_time_s=0, root=tmp_path)
    assert not (tmp_path / "demo" / "cpu.json").exists()


def test_large_results_are_refused(tmp_path):
    big = np.random.default_rng(0).random(300_000)  # ~2.3 MB of incompressible float64
    with pytest.raises(ValueError, match="MiB"):
        save_result("demo", {"a": big}, profile="cpu", wall_time_s=0, root=tmp_path, max_bytes=1_000_000)
    assert not (tmp_path / "demo").exists()


def test_a_partially_written_file_never_appears(tmp_path, monkeypatch):
    """A save killed midway leaves the previous complete result and no stray file."""
    save_result("demo", {"a": np.zeros(4), "v": 1}, profile="cpu", wall_time_s=0, root=tmp_path)
    before = sorted(p.name for p in (tmp_path / "demo").iterdir())
    real_replace = os.replace

    def dying_replace(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # killed between writing the temporary file and renaming it
        return real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_result("demo", {"a": np.ones(4), "v": 2}, profile="cpu", wall_time_s=0, root=tmp_path)
    monkeypatch.setattr(results.os, "replace", real_replace)
    result = load_result("demo", profile="cpu", root=tmp_path)
    assert result["v"] == 1 and result["a"].tolist() == [0, 0, 0, 0]
    # No temporary file, no orphaned arrays: exactly the files of the previous result.
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == before


def test_readers_see_old_or_new_never_half(tmp_path):
    """Hammer one result with writes while reading it: every read is a complete result."""
    save_result("demo", {"a": np.full(50_000, 0.0), "v": 0}, profile="cpu", wall_time_s=0, root=tmp_path)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def writer():
        for v in range(1, 15):
            save_result("demo", {"a": np.full(50_000, float(v)), "v": v}, profile="cpu",
                        wall_time_s=0, root=tmp_path)
        stop.set()

    def reader():
        import warnings

        while not stop.is_set():
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                result = load_result("demo", profile="cpu", root=tmp_path)
            assert result is not None
            try:
                assert float(result["a"][0]) == result["v"] == float(result["a"][-1])
                seen.append(result["v"])
            except BaseException as error:  # pragma: no cover - the failure we test for
                errors.append(error)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    final = load_result("demo", profile="cpu", root=tmp_path)
    assert final["v"] == 14


def test_damaged_json_is_reported_not_raised(tmp_path):
    json_path = result_path("demo", profile="gpu", root=tmp_path)
    json_path.parent.mkdir(parents=True)
    json_path.write_text('{"name": "demo", "provenance": {')  # truncated
    with pytest.warns(UserWarning, match="damaged"):
        assert load_result("demo", profile="gpu", root=tmp_path) is None


def test_default_root_is_the_checkout_results_folder(monkeypatch):
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    checkout = Path(results.__file__).resolve().parent.parent
    assert results.results_dir() == checkout / "results"
    monkeypatch.setenv(results.RESULTS_ENV, "/tmp/somewhere")
    assert results.results_dir() == Path("/tmp/somewhere")


def test_committed_results_load(tmp_path):
    """Whatever is committed under results/ loads with its provenance (none yet is fine)."""
    root = Path(results.__file__).resolve().parent.parent / "results"
    for json_path in root.glob("*/*.json"):
        result = load_result(json_path.parent.name, profile=json_path.stem, root=root)
        assert result is not None, json_path
        assert result.provenance["profile"] == json_path.stem
        assert json.loads(json_path.read_text())["provenance"]["wall_time_s"] >= 0


def test_missing_result_is_fetched_from_the_repository(tmp_path, monkeypatch):
    """In Colab the package has no results/ folder: committed results come from the repository."""
    from advcore import data

    remote = tmp_path / "remote"
    save_result("remote-demo", {"a": np.arange(3.0), "v": 5}, profile="gpu", wall_time_s=1.0, root=remote)
    monkeypatch.setattr(results, "_repository_results_url", lambda: remote.as_uri())
    monkeypatch.setattr(data, "is_online", lambda url="": True)
    monkeypatch.setattr(results, "_in_checkout", lambda: False)  # as installed by pip in Colab
    monkeypatch.setenv("ADVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    fetched = load_result("remote-demo", profile="gpu")
    assert fetched is not None and fetched["v"] == 5 and fetched["a"].tolist() == [0, 1, 2]
    assert fetched.path.is_relative_to(tmp_path / "cache")
    assert load_result("remote-demo", profile="gpu", download=False) is None
    assert load_result("absent", profile="gpu") is None  # not committed anywhere: None, no error
