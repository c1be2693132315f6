"""Properties of advcore.landscape: many-restart PGD, traces, chunking, distinct maxima."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advcore.attacks import pgd
from advcore.landscape import (
    Landscape,
    _NOISE_BLOCK,
    cluster_perturbations,
    distinct_maxima,
    far_out_restarts,
    pgd_landscape,
)

CLASSES = 4


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 6 * 6, CLASSES))


def examples(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    x[:, :, 0] = 0.0
    return x, torch.randint(0, CLASSES, (n,), generator=g)


run = functools.partial(pgd_landscape, eps=0.3, step_size=0.05, steps=6, restarts=40, traced=5,
                        keep_deltas=16, progress=False)


def test_shapes_and_consistency() -> None:
    model, (x, y) = cnn(), examples()
    result = run(model, x, y, generator=torch.Generator().manual_seed(0))
    assert result.final_losses.shape == (2, 40) and result.final_predictions.shape == (2, 40)
    assert result.traces.shape == (2, 5, 7) and result.final_deltas.shape == (2, 16, 1, 6, 6)
    assert result.restarts == 40 and torch.equal(result.labels, y)
    torch.testing.assert_close(result.traces[..., -1], result.final_losses[:, :5])
    assert result.final_deltas.abs().max() <= 0.3 + 1e-6
    x_adv = x[:, None] + result.final_deltas
    assert x_adv.min() >= -1e-6 and x_adv.max() <= 1 + 1e-6
    with torch.no_grad():  # the stored perturbations give the stored losses
        losses = F.cross_entropy(model.eval()(x_adv[0]), y[:1].expand(16), reduction="none")
    torch.testing.assert_close(losses, result.final_losses[0, :16], atol=1e-5, rtol=1e-5)
    assert (result.traces[..., -1].mean() > result.traces[..., 0].mean())  # PGD climbed


def test_every_restart_is_pgd_from_its_random_start() -> None:
    model, (x, y) = cnn(), examples(1)
    result = run(model, x, y, restarts=3, keep_deltas=3, generator=torch.Generator().manual_seed(0))
    starts = torch.empty(_NOISE_BLOCK, *x.shape[1:]).uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(0))
    for restart in range(3):
        x_adv = pgd(model, x, y, eps=0.3, step_size=0.05, steps=6, start=starts[restart:restart + 1])
        torch.testing.assert_close(x_adv - x, result.final_deltas[:, restart], atol=1e-5, rtol=0)


def test_a_loss_below_float32_resolution_is_recorded_not_rounded_to_zero() -> None:
    """A model with a margin of about 25 on the true class (a well-trained robust CNN under PGD can have
    such margins): float32 cross-entropy is exactly 0, the recorded loss is the float64 one."""
    x, _ = examples(2)
    y = torch.tensor([1, 1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, CLASSES))
    with torch.no_grad():
        model[1].weight.mul_(0.01)
        model[1].bias.zero_()[1] = 25.0  # the examples' class
    result = run(model, x, y, generator=torch.Generator().manual_seed(0))
    x_adv = x[:, None] + result.final_deltas
    with torch.no_grad():
        logits = torch.stack([model(x_adv[e]) for e in range(2)])  # (2, 16, CLASSES)
    labels = y[:, None].expand(2, 16)
    float32 = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    float64 = F.cross_entropy(logits.flatten(0, 1).double(), labels.flatten(), reduction="none")
    assert (float32 == 0).all() and (float64 > 0).all()  # the case this is about
    torch.testing.assert_close(result.final_losses[:, :16].double(), float64.view(2, 16), rtol=1e-4, atol=0)
    assert (result.traces > 0).all()


def test_the_result_does_not_depend_on_the_chunk_size() -> None:
    model, (x, y) = cnn(), examples(3)
    whole = run(model, x, y, generator=torch.Generator().manual_seed(1))
    chunked = run(model, x, y, generator=torch.Generator().manual_seed(1), chunk_size=7)
    assert whole.chunk_size == 120 and chunked.chunk_size <= 7
    torch.testing.assert_close(whole.final_losses, chunked.final_losses, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.traces, chunked.traces, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.final_deltas, chunked.final_deltas, atol=1e-5, rtol=0)


def test_the_memory_budget_sets_the_chunk_size() -> None:
    model, (x, y) = cnn(), examples()
    small = run(model, x, y, memory_budget=20_000, progress=True)
    large = run(model, x, y, memory_budget=10**9)
    assert 1 <= small.chunk_size < 20 and large.chunk_size == 80


def test_the_model_is_left_as_it_was() -> None:
    model, (x, y) = cnn(), examples()
    model.train()
    x_before = x.clone()
    run(model, x, y)
    assert all(module.training for module in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)


def test_bad_settings_raise() -> None:
    model, (x, y) = cnn(), examples()
    with pytest.raises(ValueError, match="restarts"):
        run(model, x, y, restarts=0)
    with pytest.raises(ValueError, match="eps"):
        run(model, x, y, eps=-1.0)
    with pytest.raises(ValueError, match="shape"):
        run(model, x, y[:1])


def test_loss_spread_is_ordered() -> None:
    result = run(cnn(), *examples())
    spread = result.loss_spread()
    for e in range(2):
        assert spread["min"][e] <= spread["q05"][e] <= spread["median"][e] <= spread["q95"][e] <= spread["max"][e]


def lognormal_losses(n: int = 100_000, *, median: float = 0.05) -> torch.Tensor:
    return median * torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).mul(0.8).exp()


def test_far_out_restarts_finds_none_in_a_lognormal_bulk() -> None:
    # log-normal losses: a restart crosses a far-out fence about once in 10^6 by chance
    above, below = far_out_restarts(lognormal_losses())
    assert above <= 1 and below <= 1


def test_far_out_restarts_finds_a_planted_outlier_on_either_side() -> None:
    losses = lognormal_losses(10_000)
    high = torch.cat([losses, losses.max()[None] * 100])
    low = torch.cat([losses, losses.min()[None] / 100, torch.zeros(1)])  # 0: float32 underflow, far below
    assert far_out_restarts(high)[0] == far_out_restarts(losses)[0] + 1
    assert far_out_restarts(low)[1] == far_out_restarts(losses)[1] + 2


def test_far_out_restarts_does_not_depend_on_the_scale_of_the_losses() -> None:
    # judged on log losses: a robust model's losses, orders of magnitude lower, are judged alike
    losses = torch.cat([lognormal_losses(10_000), torch.tensor([40.0, 0.0001])])
    assert far_out_restarts(losses) == far_out_restarts(losses * 1e-4) == far_out_restarts(losses.numpy() * 1e3)
    assert far_out_restarts(losses) >= (1, 1)


def test_far_out_restarts_rejects_what_is_not_a_loss() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        far_out_restarts(torch.ones(3))
    with pytest.raises(ValueError, match="finite and >= 0"):
        far_out_restarts(torch.tensor([1.0, 2.0, -1.0, 3.0]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        far_out_restarts(torch.tensor([1.0, 2.0, float("nan"), 3.0]))


# --------------------------------------------------------------------------- distinct maxima


def synthetic(deltas: torch.Tensor, eps: float = 0.3) -> Landscape:
    k = deltas.shape[0]
    return Landscape(final_losses=torch.arange(k, dtype=torch.float32)[None], final_predictions=torch.zeros(1, k, dtype=torch.long),
                     traces=torch.zeros(1, 0, 2), final_deltas=deltas[None], labels=torch.zeros(1, dtype=torch.long),
                     eps=eps, step_size=0.1, steps=1, chunk_size=k)


def test_distinct_maxima_counts_separated_corners() -> None:
    g = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 2, (3, 100), generator=g).float() * 0.6 - 0.3  # three corners of the box
    members = corners.repeat_interleave(torch.tensor([5, 3, 2]), dim=0)
    members = members + 0.01 * torch.randn(members.shape, generator=g)  # near each corner
    report = distinct_maxima(synthetic(members))
    assert report.n_clusters == 3 and report.cluster_sizes == [5, 3, 2]
    assert report.cluster_mean_loss == pytest.approx([2.0, 6.0, 8.5])
    torch.testing.assert_close(report.cosine.diagonal(), torch.ones(10))
    assert report.mean_abs_distance.diagonal().abs().max() < 1e-6
    assert report.linf_distance.shape == (10, 10)


def test_identical_perturbations_are_one_maximum() -> None:
    report = distinct_maxima(synthetic(torch.full((6, 10), 0.3)))
    assert report.n_clusters == 1 and report.cluster_sizes == [6]


def test_cluster_threshold_extremes() -> None:
    deltas = torch.randn(8, 20, generator=torch.Generator().manual_seed(0))
    assert cluster_perturbations(deltas, threshold=-1.0).unique().numel() == 1
    assert cluster_perturbations(deltas, threshold=1.5).tolist() == list(range(8))


def test_distinct_maxima_on_a_real_landscape() -> None:
    result = run(cnn(), *examples(), generator=torch.Generator().manual_seed(0))
    report = distinct_maxima(result, example=1)
    assert sum(report.cluster_sizes) == 16 and report.n_clusters == len(report.cluster_sizes)
    assert 1 <= report.n_predicted_classes <= CLASSES
    assert report.loss_spread["min"] <= report.loss_spread["max"]


def test_distinct_maxima_needs_the_perturbations() -> None:
    result = run(cnn(), *examples(), keep_deltas=0)
    with pytest.raises(ValueError, match="keep_deltas"):
        distinct_maxima(result)
    with pytest.raises(ValueError, match="example"):
        distinct_maxima(run(cnn(), *examples()), example=5)
