"""The fast paths of advcore (issue: the CPU's speed limit) compute the same attacks.

* channels-last (``fast_memory_format``) is on by default for conv nets: results equal a
  plain NCHW reference loop up to float rounding, the caller's model and layout are kept;
* several restarts run as one batch: the same result as one restart after the other;
* ``precision="bfloat16"`` is opt-in: results still lie exactly in the eps-ball and [0, 1],
  and the loss reached is close to float32's;
* the CUDA compile path runs (and is checked) on the CPU when forced.

Tolerances: a pixel whose input gradient is (nearly) zero may step the other way under a
different summation order, and that difference is carried to later steps; we allow 1% of
pixels to differ and the mean loss reached to differ by 1% (measured on this CPU, 2026-12-01: 0% of
pixels for channels-last on the conv net and the MLP, and for batched restarts).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advcore import attacks, models
from advcore.attacks import fast_memory_format, fgsm, pgd, random_start_noise
from advcore.landscape import pgd_landscape
from advcore.train import PGDObjective, train

DIFFERING_PIXELS = 0.01  # fraction of pixels allowed to end elsewhere


@pytest.fixture(autouse=True)
def channels_last_everywhere(monkeypatch) -> None:
    """Exercise the channels-last path even on CPUs where it is not the default (without AVX2)."""
    monkeypatch.setitem(attacks.CHANNELS_LAST, "cpu", True)
LOSS_TOLERANCE = 0.01  # relative difference of the mean loss reached


def conv_net(channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def batch(n: int = 32, channels: int = 3) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, channels, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def reference_pgd(model: nn.Module, x: Tensor, y: Tensor, start: Tensor, *, eps: float, step_size: float,
                  steps: int) -> Tensor:
    """Madry et al.'s update rule, written plainly in NCHW float32 (what advcore computed before)."""
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = torch.clamp(x + start, lower, upper)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.clamp(x_adv.detach() + step_size * grad.sign(), lower, upper)
    return x_adv


def mean_loss(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def assert_same_attack(model: nn.Module, x: Tensor, y: Tensor, result: Tensor, expected: Tensor) -> None:
    differing = (result - expected).abs().gt(1e-6).float().mean().item()
    assert differing <= DIFFERING_PIXELS, f"{differing:.2%} of pixels differ"
    assert mean_loss(model, result, y) == pytest.approx(mean_loss(model, expected, y), rel=LOSS_TOLERANCE)


@pytest.mark.parametrize("make_model", [conv_net, mlp], ids=["conv", "mlp"])
def test_pgd_fast_path_equals_the_plain_loop(make_model) -> None:
    model, (x, y) = make_model(), batch()
    start = random_start_noise(x, eps=0.1, generator=torch.Generator().manual_seed(2))[0]
    result = pgd(model, x, y, eps=0.1, step_size=0.02, steps=10, start=start)
    assert_same_attack(model, x, y, result, reference_pgd(model, x, y, start, eps=0.1, step_size=0.02, steps=10))


def nhwc_strides(t: Tensor) -> bool:
    """Whether ``t`` has channels-last strides, also where a channel dimension of size 1 makes
    ``is_contiguous(memory_format=torch.channels_last)`` true of NCHW strides too."""
    return t.stride() == torch.empty_like(t, memory_format=torch.channels_last).stride()


@pytest.mark.parametrize("channels", [1, 3], ids=["one channel (MNIST)", "three channels"])
def test_conv_nets_run_channels_last_and_the_model_is_handed_back_unchanged(channels) -> None:
    model, (x, y) = conv_net(channels), batch(channels=channels)
    weights = [param for param in model.parameters() if param.dim() == 4]
    before = [(param, param.data, param.stride(), param.detach().clone()) for param in weights]
    seen: list[bool] = []
    for conv in (model[0], model[3]):  # every convolution: its kernels, and its input unless one channel
        # (in memory one channel's NCHW is its NHWC: the kernels' layout decides which kernel runs)
        conv.register_forward_pre_hook(lambda m, args: seen.append(
            nhwc_strides(m.weight) and (nhwc_strides(args[0]) or args[0].shape[1] == 1)))
    pgd(model, x, y, eps=0.1, step_size=0.02, steps=2)
    assert len(seen) == 4 and all(seen), f"the attack did not run every convolution channels-last: {seen}"
    for param, (same_param, storage, stride, values) in zip(weights, before):
        assert param is same_param and param.data.data_ptr() == storage.data_ptr() and param.stride() == stride
        assert torch.equal(param, values)
    assert attacks.preferred_memory_format(mlp(), x) is torch.contiguous_format


def test_values_changed_inside_the_block_are_kept() -> None:
    model = conv_net()
    with fast_memory_format(model, batch()[0]):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        expected = model[0].weight.detach().clone()
    assert model[0].weight.is_contiguous() and torch.equal(model[0].weight, expected)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_the_result_comes_back_in_the_callers_layout(layout) -> None:
    model, (x, y) = conv_net(), batch()
    x = x.contiguous(memory_format=layout)
    for result in (pgd(model, x, y, eps=0.1, step_size=0.02, steps=2), fgsm(model, x, y, eps=0.1)):
        assert result.is_contiguous(memory_format=layout) and result.shape == x.shape


def test_batched_restarts_equal_one_restart_after_the_other(monkeypatch) -> None:
    model, (x, y) = conv_net(), batch(8)
    run = lambda: pgd(model, x, y, eps=0.1, step_size=0.02, steps=5, restarts=6,  # noqa: E731
                      generator=torch.Generator().manual_seed(3))
    together = run()
    monkeypatch.setitem(attacks.RESTART_ROWS, "cpu", 1)  # one restart per batch
    assert attacks._restart_group(x, 6) == 1
    one_by_one = run()
    assert_same_attack(model, x, y, together, one_by_one)


def test_on_step_sees_every_iterate() -> None:
    model, (x, y) = conv_net(), batch(4)
    seen: list[tuple[int, Tensor, Tensor]] = []
    pgd(model, x, y, eps=0.1, step_size=0.02, steps=4, random_start=False,
        on_step=lambda t, loss, x_t: seen.append((t, loss, x_t.clone())))
    assert [t for t, _, _ in seen] == [0, 1, 2, 3] and all(loss.shape == (4,) for _, loss, _ in seen)
    # The hook's iterates are PGD's own: iterate t is pgd with t steps, its loss is the loss there.
    for t, loss, x_t in seen:
        expected = x if t == 0 else pgd(model, x, y, eps=0.1, step_size=0.02, steps=t, random_start=False)
        torch.testing.assert_close(x_t, expected)
        with torch.no_grad(), attacks.eval_mode(model):
            torch.testing.assert_close(loss, F.cross_entropy(model(expected), y, reduction="none"))


def test_bfloat16_is_opt_in_exactly_bounded_and_close_in_loss() -> None:
    model, (x, y) = conv_net(), batch(16)
    kwargs = dict(eps=0.1, step_size=0.02, steps=5, random_start=False)
    exact = pgd(model, x, y, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "emulated" on CPUs without AVX-512 BF16
        fast = pgd(model, x, y, precision="bfloat16", **kwargs)
    assert fast.dtype == torch.float32
    assert (fast - x).abs().max().item() <= 0.1 + 1e-7 and fast.min() >= 0 and fast.max() <= 1
    assert mean_loss(model, fast, y) == pytest.approx(mean_loss(model, exact, y), rel=0.05)


def test_precision_errors_and_the_emulation_warning() -> None:
    model, (x, y) = conv_net(), batch(2)
    with pytest.raises(ValueError, match="precision must be"):
        pgd(model, x, y, eps=0.1, step_size=0.02, steps=1, precision="half")
    with pytest.raises(ValueError, match="needs CUDA"):
        fgsm(model, x, y, eps=0.1, precision="float16")
    if not attacks.bfloat16_is_native("cpu"):
        with pytest.warns(RuntimeWarning, match="no native bfloat16"):
            fgsm(model, x, y, eps=0.1, precision="bfloat16")


def test_float32_inside_a_callers_autocast_region_is_exact() -> None:
    model, (x, y) = conv_net(), batch(4)
    exact = fgsm(model, x, y, eps=0.1)
    with warnings.catch_warnings(), torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.equal(fgsm(model, x, y, eps=0.1, precision="float32"), exact)


def test_landscape_fast_path_equals_the_plain_loop() -> None:
    model, (x, y) = conv_net(), batch(1)
    result = pgd_landscape(model, x, y, eps=0.1, step_size=0.02, steps=5, restarts=16, traced=0,
                           keep_deltas=16, progress=False, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    noise = torch.empty(1024, 3, 16, 16).uniform_(-0.1, 0.1, generator=generator)[:16]  # landscape's block draw
    expected = reference_pgd(model, x.expand(16, -1, -1, -1), y.expand(16), noise, eps=0.1, step_size=0.02, steps=5)
    assert_same_attack(model, x.expand(16, -1, -1, -1), y.expand(16), x + result.final_deltas[0], expected)


def test_training_a_conv_net_hands_it_back_in_its_own_layout() -> None:
    model, (x, y) = conv_net(), batch(64)
    history = train(model, torch.utils.data.TensorDataset(x, y), epochs=1, batch_size=32, progress=False,
                    objective=PGDObjective(eps=0.1, step_size=0.05, steps=2), eval_train_examples=0)
    assert all(param.is_contiguous() for param in model.parameters())
    assert len(history.steps["loss"]) == 2 and "precision" not in history.config


def test_training_records_an_explicit_precision() -> None:
    model, (x, y) = mlp(), batch(32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = train(model, torch.utils.data.TensorDataset(x, y), epochs=1, batch_size=32, progress=False,
                        precision="bfloat16", eval_train_examples=0)
    assert history.config["precision"] == "bfloat16"


@pytest.mark.slow
def test_the_compiled_path_equals_eager(monkeypatch) -> None:
    """The CUDA default (``torch.compile``) checked on the CPU, where it is forced on."""
    model, (x, y) = models.MadryCNN().eval(), (torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    eager = pgd(model, x, y, eps=0.3, step_size=0.05, steps=3, random_start=False)
    monkeypatch.setenv(attacks.COMPILE_ENV, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a silent fallback to eager would pass
        fast = pgd(model, x, y, eps=0.3, step_size=0.05, steps=3, random_start=False)
    assert_same_attack(model, x, y, fast, eager)
