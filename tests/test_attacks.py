"""Properties of advcore.attacks: the lecture's formulas, the eps-ball, and the conventions.

Synthetic data (uniform images in [0, 1]) and tiny models defined here: no downloads.
"""

from __future__ import annotations

import functools
import io
import json
import tokenize
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advcore.attacks import (
    attack_mode,
    eval_mode,
    fgsm,
    gradient_sign,
    input_gradient as library_input_gradient,
    pgd,
    pgd_step_size,
    project_linf,
    random_start_noise,
    sign_noise,
    uniform_noise,
)

CLASSES = 10
SHAPE = (1, 8, 8)


def cnn(seed: int = 0) -> nn.Module:
    """Conv + batch norm + dropout: batch-dependent in train mode, so eval mode matters."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(4 * 8 * 8, CLASSES),
    )


def smooth_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, CLASSES)).to(dtype)


def softmax_regression(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES))


def batch(n: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=g, dtype=dtype)
    x[:, :, :2] = 0.0  # a black border, as in MNIST: clipping at 0 must hold
    x[:, :, -1] = 1.0
    return x, torch.randint(0, CLASSES, (n,), generator=g)


def ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model.eval()(x), y, reduction="none")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.eval()
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    return x.grad


def pgd_kwargs(**changes: object) -> dict:
    return {"eps": 0.3, "step_size": 0.05, "steps": 10, **changes}


ATTACKS = {
    "fgsm": functools.partial(fgsm, eps=0.3),
    "fgsm_targeted": functools.partial(fgsm, eps=0.3, targeted=True),
    "pgd": functools.partial(pgd, **pgd_kwargs(generator=torch.Generator().manual_seed(0))),
    "pgd_restarts": functools.partial(pgd, **pgd_kwargs(restarts=3, generator=torch.Generator().manual_seed(0))),
    "pgd_targeted": functools.partial(pgd, **pgd_kwargs(targeted=True, random_start=False)),
}


# --------------------------------------------------------------------------- the formulas


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_equals_the_formula_computed_by_hand(targeted: bool) -> None:
    model, (x, y) = smooth_mlp(), batch()
    sign = -1.0 if targeted else 1.0
    expected = (x + sign * 0.1 * input_gradient(model, x, y).sign()).clamp(0, 1)
    assert torch.equal(fgsm(model, x, y, eps=0.1, targeted=targeted), expected)


def test_fgsm_on_softmax_regression_matches_its_closed_form() -> None:
    # For logits W x + b and cross-entropy, grad_x = W^T (softmax(W x + b) - onehot(y)).
    model, (x, y) = softmax_regression(), batch(64)
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    flat = x.flatten(1)
    probabilities = torch.softmax(flat @ weight.T + bias, dim=1)
    gradient = ((probabilities - F.one_hot(y, CLASSES).float()) @ weight).view_as(x)
    expected = (x + 0.25 * gradient.sign()).clamp(0, 1)
    x_adv = fgsm(model, x, y, eps=0.25)
    clear = gradient.abs() > 1e-5 * gradient.abs().amax()  # signs of ~0 are rounding noise
    assert torch.equal(x_adv[clear], expected[clear])
    assert clear.float().mean() > 0.99


def textbook_pgd(model, x, y, delta, *, eps, step_size, steps, targeted=False):
    """Madry et al.'s PGD update rule (Sec. 3), line by line, with project_linf."""
    model.eval()
    for _ in range(steps):
        delta = delta.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach() + (-1 if targeted else 1) * step_size * grad.sign()
        delta = project_linf(delta, eps)
        delta = (x + delta).clamp(0, 1) - x
    return x + delta


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_equals_algorithm_1_by_hand(targeted: bool, random_start: bool) -> None:
    model, (x, y) = smooth_mlp(), batch()
    start = random_start_noise(x, eps=0.3, generator=torch.Generator().manual_seed(1))[0]
    delta = ((x + start).clamp(0, 1) - x) if random_start else torch.zeros_like(x)
    expected = textbook_pgd(model, x, y, delta, eps=0.3, step_size=0.05, steps=8, targeted=targeted)
    x_adv = pgd(model, x, y, eps=0.3, step_size=0.05, steps=8, targeted=targeted,
                random_start=random_start, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x_adv, expected, atol=1e-5, rtol=0)


def test_gradient_sign_is_the_fgsm_direction() -> None:
    model, (x, y) = smooth_mlp(), batch()
    direction = gradient_sign(model, x, y)
    assert set(direction.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(fgsm(model, x, y, eps=0.2), (x + 0.2 * direction).clamp(0, 1))


# --------------------------------------------------------------------------- the eps-ball


@pytest.mark.parametrize("eps", [0.01, 0.3, 0.7])
@pytest.mark.parametrize("name", list(ATTACKS) + ["uniform_noise"])
def test_result_stays_in_the_eps_ball_and_in_the_unit_box(name: str, eps: float) -> None:
    model, (x, y) = cnn(), batch()
    if name == "uniform_noise":
        x_adv = uniform_noise(x, eps=eps, generator=torch.Generator().manual_seed(0))
    else:
        attack = ATTACKS[name]
        keywords = {"eps": eps} if name.startswith("fgsm") else {"eps": eps, "step_size": eps / 4}
        x_adv = attack(model, x, y, **keywords)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert (x_adv - x).abs().max() > 0  # it did move


def test_project_linf_clips_and_leaves_the_ball_alone() -> None:
    delta = torch.linspace(-1, 1, 101)
    before = delta.clone()
    projected = project_linf(delta, 0.3)
    assert torch.equal(delta, before)
    assert projected.abs().max() <= 0.3
    inside = delta.abs() <= 0.3
    assert torch.equal(projected[inside], delta[inside])
    assert torch.equal(project_linf(projected, 0.3), projected)  # idempotent
    assert torch.all(projected[~inside].abs() == torch.tensor(0.3))


def test_uniform_noise_is_reproducible_and_centred() -> None:
    x = torch.full((64, *SHAPE), 0.5)
    first = uniform_noise(x, eps=0.2, generator=torch.Generator().manual_seed(0))
    again = uniform_noise(x, eps=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    noise = first - x
    assert noise.abs().max() <= 0.2 + 1e-6
    assert abs(noise.mean().item()) < 0.01 and noise.std().item() == pytest.approx(0.2 / 3**0.5, rel=0.05)


def test_sign_noise_adds_plus_or_minus_eps_with_random_signs() -> None:
    """Goodfellow et al. (2015), Sec. 6: "randomly adding +-eps to each pixel", clipped to [0, 1]."""
    x = torch.full((64, *SHAPE), 0.5)
    first = sign_noise(x, eps=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, sign_noise(x, eps=0.2, generator=torch.Generator().manual_seed(0)))
    noise = first - x
    assert torch.allclose(noise.abs(), torch.full_like(noise, 0.2))  # every pixel moves by exactly eps
    assert abs((noise > 0).float().mean().item() - 0.5) < 0.02  # the signs are fair coins
    edge = sign_noise(torch.ones(4, *SHAPE), eps=0.3, generator=torch.Generator().manual_seed(1))
    assert edge.max() <= 1 and torch.allclose(edge.unique(), torch.tensor([0.7, 1.0]))
    assert torch.equal(sign_noise(x, eps=0.0), x)
    with pytest.raises(ValueError, match="eps"):
        sign_noise(x, eps=-0.1)


# --------------------------------------------------------------------------- restarts, randomness, batches


@pytest.mark.parametrize("targeted", [False, True])
def test_restarts_never_do_worse_than_one_start(targeted: bool) -> None:
    model, (x, y) = cnn(), batch(32)
    single = pgd(model, x, y, **pgd_kwargs(steps=3, targeted=targeted), generator=torch.Generator().manual_seed(5))
    several = pgd(model, x, y, **pgd_kwargs(steps=3, targeted=targeted, restarts=4),
                  generator=torch.Generator().manual_seed(5))
    if targeted:
        assert torch.all(ce(model, several, y) <= ce(model, single, y) + 1e-6)
    else:
        assert torch.all(ce(model, several, y) >= ce(model, single, y) - 1e-6)
    assert not torch.equal(several, single)  # some restart won somewhere


def test_same_generator_seed_gives_the_same_result_and_explicit_starts_reproduce_it() -> None:
    model, (x, y) = cnn(), batch()
    run = lambda **kw: pgd(model, x, y, **pgd_kwargs(restarts=3), **kw)  # noqa: E731
    first = run(generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, run(generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(first, run(generator=torch.Generator().manual_seed(4)))
    starts = random_start_noise(x, eps=0.3, restarts=3, generator=torch.Generator().manual_seed(3))
    assert starts.shape == (3, *x.shape)
    assert torch.equal(first, run(start=starts))


@pytest.mark.parametrize("restarts", [1, 3])
def test_a_batch_gives_each_example_what_it_gets_alone(restarts: int) -> None:
    # Guaranteed: with random_start=False, or the same per-example starts (here: the
    # batch's starts, sliced), the batch equals the examples one at a time. Batched
    # kernels may round differently, so compare with a tolerance and by prediction.
    model, (x, y) = cnn(), batch(8)
    model.train()  # batch norm in train mode would couple examples: the attack must use eval
    starts = random_start_noise(x, eps=0.3, restarts=restarts, generator=torch.Generator().manual_seed(0))
    attacks = {
        "fgsm": lambda xs, ys, _: fgsm(model, xs, ys, eps=0.3),
        "pgd_no_start": lambda xs, ys, _: pgd(model, xs, ys, **pgd_kwargs(random_start=False)),
        "pgd_starts": lambda xs, ys, s: pgd(model, xs, ys, **pgd_kwargs(restarts=restarts), start=s),
    }
    for name, attack in attacks.items():
        together = attack(x, y, starts)
        alone = torch.cat([attack(x[i:i + 1], y[i:i + 1], starts[:, i:i + 1]) for i in range(len(x))])
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=0, msg=name)
        with torch.no_grad():
            model.eval()
            assert torch.equal(model(together).argmax(1), model(alone).argmax(1)), name
            model.train()


# --------------------------------------------------------------------------- the attacks work


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_the_targeted_attack_raises_the_probability_of_the_target(name: str) -> None:
    model, (x, _) = softmax_regression(), batch(32)
    with torch.no_grad():
        target = (model(x).argmax(1) + 1 + torch.arange(32) % (CLASSES - 1)) % CLASSES  # never the prediction
    if name == "fgsm":
        x_adv = fgsm(model, x, target, eps=0.02, targeted=True)
    else:
        x_adv = pgd(model, x, target, eps=0.1, step_size=0.02, steps=10, targeted=True, random_start=False)
    with torch.no_grad():
        before = torch.softmax(model(x), 1).gather(1, target[:, None])
        after = torch.softmax(model(x_adv), 1).gather(1, target[:, None])
    assert torch.all(after > before)


def test_the_untargeted_attacks_raise_the_loss_and_pgd_beats_fgsm_and_noise() -> None:
    model, (x, y) = smooth_mlp(), batch(64)
    clean = ce(model, x, y)
    noise = ce(model, uniform_noise(x, eps=0.1, generator=torch.Generator().manual_seed(0)), y)
    one_step = ce(model, fgsm(model, x, y, eps=0.1), y)
    iterated = ce(model, pgd(model, x, y, eps=0.1, step_size=0.02, steps=20, random_start=False), y)
    assert torch.all(one_step > clean)
    assert iterated.mean() > one_step.mean() > noise.mean()


# --------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("name", ATTACKS)
def test_the_inputs_are_never_modified_and_the_result_is_fresh(name: str) -> None:
    model, (x, y) = cnn(), batch()
    x_before, y_before = x.clone(), y.clone()
    x_adv = ATTACKS[name](model, x, y)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    x_adv.zero_()
    assert torch.equal(x, x_before)  # no shared storage


def test_inputs_that_require_grad_are_left_alone() -> None:
    model, (x, y) = smooth_mlp(), batch()
    x = x.requires_grad_(True)
    x_adv = pgd(model, x, y, **pgd_kwargs())
    assert x.grad is None and not x_adv.requires_grad


def test_eps_zero_returns_an_unchanged_copy() -> None:
    model, (x, y) = cnn(), batch()
    for x_adv in (fgsm(model, x, y, eps=0), pgd(model, x, y, **pgd_kwargs(eps=0.0)), uniform_noise(x, eps=0)):
        assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()


def _state(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("name", ATTACKS)
def test_model_mode_and_requires_grad_flags_are_restored_and_parameters_get_no_gradient(name: str) -> None:
    model, (x, y) = cnn(), batch()
    model.train()
    model[1].eval()  # a frozen batch-norm layer inside a training model stays frozen
    model[0].bias.requires_grad_(False)
    before = _state(model)
    seen_training = []
    model[3].register_forward_hook(lambda module, _i, _o: seen_training.append(module.training))
    ATTACKS[name](model, x, y)
    assert _state(model) == before
    assert seen_training and not any(seen_training)  # dropout was off during the attack
    assert all(p.grad is None for p in model.parameters())


def test_mode_and_flags_are_restored_when_the_attack_raises() -> None:
    model, (x, y) = cnn(), batch()
    model.train()
    before = _state(model)

    def broken_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        pgd(model, x, y, **pgd_kwargs(), loss_fn=broken_loss)
    assert _state(model) == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert _state(model) == before


def test_the_attacks_work_under_no_grad_but_not_under_inference_mode() -> None:
    model, (x, y) = smooth_mlp(), batch()
    expected = pgd(model, x, y, **pgd_kwargs(random_start=False))
    with torch.no_grad():
        assert torch.equal(pgd(model, x, y, **pgd_kwargs(random_start=False)), expected)
        assert torch.equal(fgsm(model, x, y, eps=0.3), fgsm(model, x, y, eps=0.3))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fgsm(model, x, y, eps=0.3)


def test_a_custom_loss_and_a_plain_callable_model_work() -> None:
    model, (x, y) = smooth_mlp(), batch()
    margin = lambda logits, labels: -logits.gather(1, labels[:, None]).squeeze(1)  # noqa: E731
    x_adv = pgd(lambda images: model(images), x, y, **pgd_kwargs(), loss_fn=margin)
    with torch.no_grad():
        assert torch.all(model(x_adv).gather(1, y[:, None]) < model(x).gather(1, y[:, None]))


def test_float64_inputs_stay_float64() -> None:
    model, (x, y) = smooth_mlp(dtype=torch.float64), batch(dtype=torch.float64)
    x_adv = pgd(model, x, y, **pgd_kwargs(), generator=torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float64 and (x_adv - x).abs().max() <= 0.3 + 1e-12


def test_attack_mode_can_nest() -> None:
    model = cnn().train()
    before = _state(model)
    with attack_mode(model):
        with attack_mode(model):
            assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
    assert _state(model) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_result_with_a_cpu_generator() -> None:
    model, (x, y) = smooth_mlp(), batch()
    on_cpu = pgd(model, x, y, **pgd_kwargs(), generator=torch.Generator().manual_seed(0))
    on_gpu = pgd(model.cuda(), x.cuda(), y.cuda(), **pgd_kwargs(), generator=torch.Generator().manual_seed(0))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- bad input


def _bad_calls():
    model, (x, y) = smooth_mlp(), batch(4)
    ok = pgd_kwargs()
    yield "eps < 0", lambda: fgsm(model, x, y, eps=-0.1), "eps must be"
    yield "eps nan", lambda: pgd(model, x, y, **{**ok, "eps": float("nan")}), "eps must be"
    yield "eps a string", lambda: fgsm(model, x, y, eps="0.3"), "eps must be a real number"
    yield "steps < 1", lambda: pgd(model, x, y, **{**ok, "steps": 0}), "steps must be"
    yield "steps float", lambda: pgd(model, x, y, **{**ok, "steps": 2.5}), "steps must be"
    yield "step_size 0", lambda: pgd(model, x, y, **{**ok, "step_size": 0.0}), "step_size must be"
    yield "restarts 0", lambda: pgd(model, x, y, **ok, restarts=0), "restarts must be"
    yield "restarts, no start", lambda: pgd(model, x, y, **ok, restarts=2, random_start=False), "random_start"
    yield "x above 1", lambda: fgsm(model, x * 255, y, eps=0.1), r"\[0, 1\]"
    yield "x below 0", lambda: fgsm(model, x - 0.5, y, eps=0.1), r"\[0, 1\]"
    yield "x nan", lambda: fgsm(model, torch.full_like(x, float("nan")), y, eps=0.1), "NaN present: True"
    yield "x uint8", lambda: fgsm(model, (x * 255).to(torch.uint8), y, eps=0.1), "float tensor"
    yield "x no batch", lambda: uniform_noise(x[0, 0, 0], eps=0.1), "batch"
    yield "x a list", lambda: fgsm(model, x.tolist(), y, eps=0.1), "torch.Tensor"
    yield "y shape", lambda: fgsm(model, x, y[:3], eps=0.1), "shape"
    yield "y 2-d", lambda: fgsm(model, x, y[:, None], eps=0.1), "shape"
    yield "y float", lambda: fgsm(model, x, y.float(), eps=0.1), "integer class indices"
    yield "y one-hot", lambda: fgsm(model, x, F.one_hot(y, CLASSES), eps=0.1), "shape"
    yield "y negative", lambda: fgsm(model, x, y - 20, eps=0.1), ">= 0"
    yield "y too large", lambda: fgsm(model, x, y + CLASSES, eps=0.1), "classes"
    yield "mean loss", lambda: fgsm(model, x, y, eps=0.1, loss_fn=F.cross_entropy), "reduction='none'"
    yield "start outside", lambda: pgd(model, x, y, **ok, start=torch.ones_like(x)), "eps-ball"
    yield "start shape", lambda: pgd(model, x, y, **ok, restarts=2, start=torch.zeros_like(x)), "start must have shape"
    yield "no logits", lambda: fgsm(lambda t: t.flatten(1).sum(1), x, y, eps=0.1), "logits"
    yield "detached model", lambda: fgsm(lambda t: model(t).detach(), x, y, eps=0.1), "differentiabl"
    yield "project eps < 0", lambda: project_linf(x, -1.0), "eps must be"
    # Issue 15: models that give no usable gradient direction are named, not attacked silently.
    yield "nan logits", lambda: fgsm(lambda t: model(t) * float("nan"), x, y, eps=0.1), "NaN or infinite logits"
    yield "one logit", lambda: fgsm(lambda t: model(t)[:, :1], x, y * 0, eps=0.1), "at least 2"
    yield "labels 1-based", lambda: fgsm(model, x, y * 0 + CLASSES, eps=0.1), "1-based"


@pytest.mark.parametrize("case", list(_bad_calls()), ids=lambda case: case[0])
def test_bad_input_raises_a_value_error_that_says_what_to_do(case) -> None:
    _, call, message = case
    with pytest.raises(ValueError, match=message):
        call()


def test_margin_loss_is_the_cw_margin() -> None:
    from advcore.attacks import margin_loss

    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 5.0]])
    y = torch.tensor([0, 0, 2])
    # example 0: true class leads by 2 -> -2; example 1: already wrong -> 0; example 2: leads by 4 -> -4
    torch.testing.assert_close(margin_loss(logits, y), torch.tensor([-2.0, 0.0, -4.0]))
    # with confidence 50 a misclassified example keeps a gradient until the wrong class leads by 50
    torch.testing.assert_close(margin_loss(logits, y, confidence=50.0), torch.tensor([-52.0, -48.0, -54.0]))


def test_a_model_built_under_inference_mode_gets_a_clear_error_and_keeps_its_flags() -> None:
    # Issue 15, item 8: the flags could be switched off but never back on, and the error was raw.
    with torch.inference_mode():
        model = smooth_mlp()
    x, y = batch(4)
    with pytest.raises(ValueError, match="inference_mode"):
        fgsm(model, x, y, eps=0.1)
    assert all(p.requires_grad for p in model.parameters())


def test_the_error_for_a_long_list_of_images_stays_short() -> None:
    x = [torch.rand(*SHAPE) for _ in range(2000)]
    with pytest.raises(ValueError, match="length 2000") as raised:
        fgsm(smooth_mlp(), x, torch.zeros(2000, dtype=torch.long), eps=0.1)
    assert len(str(raised.value)) < 500


def test_eps_on_the_255_scale_warns_with_the_fix() -> None:
    model, (x, y) = smooth_mlp(), batch(4)
    with pytest.warns(UserWarning, match=r"8/255") as caught:
        fgsm(model, x, y, eps=8)
    assert caught[0].filename == __file__  # attributed to the caller's line, not advcore's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fgsm(model, x, y, eps=0.3)  # the usual budgets stay silent


def test_a_model_that_returns_probabilities_gets_a_warning() -> None:
    model, (x, y) = smooth_mlp(), batch(4)
    with pytest.warns(UserWarning, match="probabilities"):
        fgsm(nn.Sequential(model, nn.Softmax(dim=1)), x, y, eps=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fgsm(nn.Sequential(model, nn.LogSoftmax(dim=1)), x, y, eps=0.1)  # log-probabilities are logits


# --------------------------------------------------------------------------- the step-size rule

ROOT = Path(__file__).resolve().parents[1]


def test_pgd_step_size_is_the_robustness_rule() -> None:
    from advcore import papers
    from advcore.profiles import PROFILES

    assert papers.number("robustness.step_size_factor").value == 2.5
    assert pgd_step_size(0.3, 3) == 0.25 and pgd_step_size(0.3, 1) == 0.75
    for eps, steps in ((0.3, 7), (8 / 255, 2), (0.25, 20)):
        assert pgd_step_size(eps, steps) * steps == pytest.approx(2.5 * eps)  # travels 2.5 eps in all
    for bad in ((0.3, 0), (0.3, 2.0), (-0.1, 3), ("0.3", 3)):
        with pytest.raises(ValueError):
            pgd_step_size(*bad)
    # The profiles compute their steps from the rule, to the bit of the values first typed (0.25, 10/255;
    # cpu rounded to 0.107 and 6.67/255; gpu Madry et al.'s 0.01 and 2/255): the zoo's recipe keys stay.
    smoke, cpu, gpu = (PROFILES[name] for name in ("smoke", "cpu", "gpu"))
    assert smoke.pgd_train_step_size == pgd_step_size(0.3, smoke.pgd_train_steps) == 0.25
    assert smoke.pgd_train_step_size_cifar == pgd_step_size(8 / 255, smoke.pgd_train_steps_cifar) == 10 / 255
    assert cpu.pgd_train_step_size == round(pgd_step_size(0.3, cpu.pgd_train_steps), 3) == 0.107
    assert cpu.pgd_train_step_size_cifar == 6.67 / 255
    assert (gpu.pgd_train_step_size, gpu.pgd_train_step_size_cifar) == (0.01, 2 / 255)


def _sources() -> dict[str, str]:
    """Every Python source of the library, the benchmarks and the notebooks' code cells."""
    found = {str(p.relative_to(ROOT)): p.read_text() for folder in ("advcore", "benchmarks")
             for p in sorted((ROOT / folder).glob("*.py"))}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                found[f"{path.name}[{index}]"] = "\n".join(line for line in lines if not line.lstrip()[:1] in "%!")
    return found


def test_the_step_size_rule_is_computed_in_one_place() -> None:
    """``2.5 * ...`` in code (comments, docstrings and strings do not count) only in attacks.pgd_step_size."""
    places = []
    for name, source in _sources().items():
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
        places += [f"{name}:{a.start[0]}" for a, b in zip(tokens, tokens[1:])
                   if a.type == tokenize.NUMBER and a.string in ("2.5", "2.50") and b.string == "*"]
    assert places == [], f"2.5 * eps / steps computed outside advcore.attacks.pgd_step_size: {places}"


# --------------------------------------------------------------------------- the input gradient


def test_input_gradient_is_each_examples_own_gradient_and_leaves_the_model_alone() -> None:
    model, (x, y) = cnn(), batch(6)
    model.train()
    expected = input_gradient(cnn(), x, y)  # the plain autograd reference above, eval mode
    model.train()
    grad = library_input_gradient(model, x, y)
    torch.testing.assert_close(grad, expected)
    assert model.training and all(p.grad is None and p.requires_grad for p in model.parameters())
    # Row i is example i's own gradient, whatever else is in the batch (eval mode: no batch statistics).
    torch.testing.assert_close(library_input_gradient(model, x[2:3], y[2:3]), grad[2:3])
    torch.testing.assert_close(gradient_sign(model, x, y), grad.sign())
    # A loss_fn of the caller's: the margin loss's gradient, not the cross-entropy's.
    from advcore.attacks import margin_loss
    assert not torch.allclose(library_input_gradient(model, x, y, loss_fn=margin_loss), grad)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        library_input_gradient(model, x * 255, y)


# --------------------------------------------------------------------------- one attack specification


def test_attack_spec_is_fgsm_or_pgd_and_describes_itself() -> None:
    from advcore.attacks import AttackSpec

    model, (x, y) = cnn(), batch(5)
    fgsm_spec = AttackSpec("fgsm", 0.3)
    torch.testing.assert_close(fgsm_spec(model, x, y), fgsm(model, x, y, eps=0.3))
    pgd_spec = AttackSpec("pgd", 0.3, 0.05, 10, restarts=2)
    expected = pgd(model, x, y, eps=0.3, step_size=0.05, steps=10, restarts=2,
                   generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(pgd_spec(model, x, y, torch.Generator().manual_seed(4)), expected)
    # A seeded evaluation draws the same starts however often it is made; its generator advances over batches.
    first, second = pgd_spec.seeded(4, "cpu"), pgd_spec.seeded(4, "cpu")
    torch.testing.assert_close(first(model, x, y), expected)
    torch.testing.assert_close(second(model, x, y), expected)
    assert not torch.equal(first(model, x, y), expected)
    # The descriptions are part of training runs' keys: they stay as they were.
    assert fgsm_spec.describe() == "FGSM eps=0.3"
    assert AttackSpec("pgd", 0.3, 0.01, 40).describe() == "PGD eps=0.3, 40 steps of 0.01"
    assert pgd_spec.describe() == "PGD eps=0.3, 10 steps of 0.05, 2 restarts"
    # The zoo's recipes store the dict form, as they always have.
    assert fgsm_spec.to_dict() == {"attack": "fgsm", "eps": 0.3}
    assert AttackSpec("pgd", 0.3, 0.25, 3).to_dict() == {"attack": "pgd", "eps": 0.3, "step_size": 0.25, "steps": 3}
    for spec in (fgsm_spec, pgd_spec, AttackSpec("pgd", 0.1, 0.02, 5, random_start=False)):
        assert AttackSpec.from_dict(spec.to_dict()) == spec
    for bad in (dict(kind="cw", eps=0.3), dict(kind="pgd", eps=0.3), dict(kind="pgd", eps=0.3, step_size=0.1, steps=0)):
        with pytest.raises(ValueError):
            AttackSpec(**bad)
