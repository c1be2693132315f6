"""`python -m advcore`: list, run an experiment into a folder, read it back with provenance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from advcore import __main__ as cli
from advcore import experiments
from advcore.profiles import current_profile
from advcore.results import load_result

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the command line in a fresh interpreter, as a user would (the env carries the test cache)."""
    env = {**os.environ, "ADVCORE_PROFILE": "smoke"}
    return subprocess.run([sys.executable, "-m", "advcore", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_list_names_every_experiment():
    done = _cli("list")
    assert done.returncode == 0, done.stderr
    for name, experiment in experiments.EXPERIMENTS.items():
        assert name in done.stdout and f"chapter {experiment.chapter:>2}" in done.stdout


@pytest.mark.parametrize("argv, message", [
    (["run", "landscap"], "unknown experiment 'landscap'. Did you mean 'landscape'?"),
    (["run", "nothing-like-it"], "Choose one of: landscape, robust-training, all"),
    (["show", "all"], "unknown experiment 'all'"),
])
def test_unknown_experiments_get_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert message in str(stop.value)


def test_bad_profile_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "landscape", "--profile", "huge"])
    assert stop.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_show_without_a_result_says_how_to_make_one(tmp_path, capsys):
    assert cli.main(["show", "landscape", "--profile", "gpu", "--root", str(tmp_path)]) == 1
    assert "python -m advcore run landscape --profile gpu" in capsys.readouterr().out


@pytest.mark.slow
def test_run_landscape_writes_results_that_load_back(tmp_path):
    done = _cli("run", "landscape", "--profile", "smoke", "--root", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[landscape] done in" in done.stdout

    files = sorted(p.name for p in (tmp_path / "landscape").iterdir())
    assert len(files) == 2 and "smoke.json" in files  # the JSON and the NPZ it names
    assert any(name.startswith("smoke-") and name.endswith(".npz") for name in files)
    assert not [p for p in (tmp_path / "landscape").iterdir() if p.name.startswith(".")]  # no temporaries
    assert sum(p.stat().st_size for p in (tmp_path / "landscape").iterdir()) < 1_000_000

    result = load_result("landscape", profile="smoke", root=tmp_path)
    assert result is not None
    provenance = result.provenance
    assert provenance["profile"] == "smoke" and provenance["wall_time_s"] > 0
    assert provenance["command"].startswith("python -m advcore run landscape --profile smoke")
    assert provenance["device"].startswith(("cpu", "cuda")) and provenance["torch"]

    profile, settings = current_profile("smoke"), experiments.landscape_settings("smoke")
    models, examples = len(result["models"]), profile.landscape_examples
    assert result["final_losses"].shape == (models, examples, profile.landscape_restarts)
    assert result["traces"].shape == (models, examples, settings["traced"], settings["steps"] + 1)
    assert np.isfinite(result["final_losses"].astype(np.float32)).all()
    assert (result["class_counts"].sum(-1) == profile.landscape_restarts).all()

    shown = _cli("show", "landscape", "--profile", "smoke", "--root", str(tmp_path))
    assert shown.returncode == 0 and "final_losses: array float32" in shown.stdout

    # Run again: the finished pieces (one per model and example) come from the cache.
    pieces = list((Path(os.environ["ADVCORE_CACHE"]) / "experiments" / "smoke" / "landscape").glob("*.pt"))
    assert len(pieces) >= models * examples
    again = _cli("run", "landscape", "--profile", "smoke", "--root", str(tmp_path), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = load_result("landscape", profile="smoke", root=tmp_path)
    np.testing.assert_array_equal(rerun["final_losses"], result["final_losses"])
    # Its provenance says so, and counts the cached pieces' time (not only the minutes of the rerun).
    resumed = rerun.provenance["resumed"]
    assert resumed["pieces_from_cache"] >= models * examples and resumed["pieces_computed"] == 0
    assert rerun.provenance["wall_time_s"] >= resumed["from_cache_seconds"] > 0
    assert rerun["seconds"] == result["seconds"]  # the pieces' own compute times, cached or not


@pytest.mark.slow
def test_run_robust_training_writes_results_that_load_back(tmp_path):
    done = _cli("run", "robust-training", "--profile", "smoke", "--root", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[robust-training] done in" in done.stdout

    result = load_result("robust-training", profile="smoke", root=tmp_path)
    assert result is not None
    assert result.provenance["command"].startswith("python -m advcore run robust-training --profile smoke")
    mnist = result["mnist"]
    assert mnist["available"] is True and mnist["eps"] == pytest.approx(0.3)
    assert set(mnist["models"]) == {"plain", "PGD-trained"}
    accuracy = {(row["model"], row["attack"]): row["accuracy"] for row in mnist["accuracy"]}
    assert len(accuracy) == 2 * 4 and all(0.0 <= a <= 1.0 for a in accuracy.values())
    # PGD at eps = 0.3 breaks the plain CNN: far fewer test images survive it than clean ones.
    assert accuracy[("plain", "PGD-40 (step 0.01)")] < 0.5 * accuracy[("plain", "natural")]
    # The cost of robustness is measured for each objective (timings are not compared: shared machines are noisy).
    steps = mnist["step_seconds"]
    assert {"standard", "PGD-40 (Madry et al.'s training)"} <= set(steps) and all(s > 0 for s in steps.values())
    for key in ("robust", "plain"):
        assert result[f"mnist_{key}_steps"].shape == result[f"mnist_{key}_loss"].shape
        assert np.isfinite(result[f"mnist_{key}_loss"]).all()
    # Offline, CIFAR-10 is reported as missing with the reason; online (Colab) it runs.
    assert isinstance(result["cifar10"]["available"], bool)
    if not result["cifar10"]["available"]:
        assert "CIFAR-10 is not available here" in result["cifar10"]["reason"]


# --------------------------------------------------------------------------- issue 15, item 5


def test_show_defaults_to_the_profile_run_uses(tmp_path, monkeypatch, capsys):
    # `run` defaulted to $ADVCORE_PROFILE, `show` to gpu: run then show said "no result".
    from advcore.results import save_result

    monkeypatch.setenv("ADVCORE_PROFILE", "smoke")
    save_result("landscape", {"eps": 0.3}, profile="smoke", wall_time_s=1.0, root=tmp_path)
    assert cli.main(["show", "landscape", "--root", str(tmp_path)]) == 0
    assert "`smoke` profile" in capsys.readouterr().out


def test_an_unwritable_root_fails_before_anything_runs(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setitem(experiments.EXPERIMENTS, "landscape", experiments.Experiment(
        "landscape", 8, "stand-in", lambda *args, **kwargs: ran.append(1) or {"eps": 0.3}))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(SystemExit, match="cannot write results to .*nothing was run"):
        cli.main(["run", "landscape", "--profile", "smoke", "--root", str(blocked / "results")])
    assert not ran


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"a string"', "{}", '{"name": "landscape"}'])
def test_show_reports_a_results_file_that_is_not_a_result(tmp_path, capsys, content):
    (tmp_path / "landscape").mkdir()
    (tmp_path / "landscape" / "smoke.json").write_text(content)
    with pytest.warns(UserWarning, match="not an advcore result"):
        assert cli.main(["show", "landscape", "--profile", "smoke", "--root", str(tmp_path)]) == 1
    assert "is damaged" in capsys.readouterr().out
