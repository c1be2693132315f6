"""Profiles: one environment variable scales every experiment."""

from __future__ import annotations

import dataclasses

import pytest

from advcore.profiles import PROFILE_ENV, PROFILES, current_profile, default_profile_name


def test_environment_variable_chooses_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "CPU")
    assert current_profile().name == "cpu"
    assert current_profile("gpu").name == "gpu"  # an explicit name wins


def test_default_follows_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert current_profile().name == default_profile_name()


def test_unknown_profile_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "huge")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        current_profile()


def test_profiles_grow_from_smoke_to_gpu() -> None:
    smoke, cpu, gpu = (PROFILES[name] for name in ("smoke", "cpu", "gpu"))
    for field in dataclasses.fields(smoke):
        if field.type in ("int", int) and field.name != "batch_size":
            assert getattr(smoke, field.name) <= getattr(cpu, field.name) <= getattr(gpu, field.name), field.name


def test_gpu_profile_uses_the_papers_settings() -> None:
    gpu = PROFILES["gpu"]
    assert gpu.landscape_restarts == 100_000  # Madry et al.: 10^5 restarts
    assert gpu.pgd_train_steps == 40  # Madry et al.: 40 PGD steps on MNIST
    assert gpu.pgd_eval_steps == 100 and gpu.pgd_eval_restarts == 20  # PGD-100, 20 restarts
    assert gpu.mnist_train + gpu.mnist_val == 60_000 and gpu.mnist_test == 10_000
