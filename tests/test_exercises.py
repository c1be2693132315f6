"""The exercise checks: right answers pass, typical wrong answers fail with their diagnosis.

Every check must (1) pass the reference solution and hand-written correct solutions,
(2) fail each deliberately wrong solution with the plain-language message that names
the mistake, (3) never raise: a stub is "not attempted", an exception is reported.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from advcore import exercises as ex
from advcore.attacks import fgsm
from advcore.exercises import NOT_ATTEMPTED, CheckResult

CHECKS = {
    "fgsm": (ex.check_fgsm, ex.reference_fgsm),
    "targeted_fgsm": (ex.check_targeted_fgsm, ex.reference_targeted_fgsm),
    "uniform_noise": (ex.check_uniform_noise, ex.reference_uniform_noise),
    "project_linf": (ex.check_project_linf, ex.reference_project_linf),
    "targeted_pgd_step": (ex.check_targeted_pgd_step, ex.reference_targeted_pgd_step),
    "fgsm_mix_loss": (ex.check_fgsm_mix_loss, ex.reference_fgsm_mix_loss),
    "linear_worst_case": (ex.check_linear_worst_case, ex.reference_linear_worst_case),
    "breaks_gradient_masking": (ex.check_breaks_gradient_masking, ex.reference_breaks_gradient_masking),
    "flip_points": (ex.check_flip_points, ex.reference_flip_points),
    "transfer_rate": (ex.check_transfer_rate, ex.reference_transfer_rate),
}


def text(result: CheckResult) -> str:
    return "\n".join(result.messages)


# --------------------------------------------------------------------------- student-style helpers


def input_grad(model, x, y):
    """The gradient a student gets with ``backward()``: of the mean loss, w.r.t. a copy of x."""
    x = x.clone().detach().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return x.grad


def delta_grad(model, x, delta, target):
    delta = delta.clone().detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), target), delta)
    return grad


def pgd_step(model, x, delta, target, eps, step, *, sign=-1.0, project=True, box=True, raw=False):
    """A hand-written targeted PGD step with switches for the typical mistakes."""
    grad = delta_grad(model, x, delta, target)
    delta = delta + sign * step * (grad if raw else grad.sign())
    if project:
        delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0, 1) - x if box else delta


def mix_loss(model, x, y, eps, alpha, *, weights=None, x_fgsm=None, reduction="mean"):
    """A hand-written FGSM-mix loss with switches for the typical mistakes."""
    x_fgsm = fgsm(model, x, y, eps=eps) if x_fgsm is None else x_fgsm
    a, b = (alpha, 1 - alpha) if weights is None else weights
    return (a * F.cross_entropy(model(x), y, reduction=reduction)
            + b * F.cross_entropy(model(x_fgsm), y, reduction=reduction))


def noise(x, eps, generator, *, low=-1.0, high=1.0, shape=None, clip=True):
    u = torch.rand(shape or x.shape, generator=generator) * (high - low) + low
    out = x + u * eps
    return out.clamp(0, 1) if clip else out


# --------------------------------------------------------------------------- right answers pass


@pytest.mark.parametrize("name", CHECKS)
def test_reference_solution_passes_its_check(name):
    check, reference = CHECKS[name]
    result = check(reference)
    assert result.passed, text(result)
    assert result.messages[0].startswith("✓ All ")
    assert not any(m.startswith(("✗", "⚠")) for m in result.messages), text(result)


def fgsm_by_hand(model, x, y, eps):
    return (x + eps * input_grad(model, x, y).sign()).clamp(0, 1).detach()


def fgsm_autograd_grad(model, x, y, eps):
    x_ = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_), y, reduction="sum"), x_)
    return torch.clamp(x + eps * torch.sign(grad), min=0.0, max=1.0)


def mix_through_fgsm(model, x, y, eps, alpha):
    """Differentiates through the FGSM image (create_graph): the same gradient, since d sign = 0."""
    x_ = x.clone().requires_grad_(True)
    clean = F.cross_entropy(model(x_), y)
    (grad,) = torch.autograd.grad(clean, x_, create_graph=True)
    x_fgsm = (x_ + eps * grad.sign()).clamp(0, 1)
    return alpha * clean + (1 - alpha) * F.cross_entropy(model(x_fgsm), y)


CORRECT = [
    (ex.check_fgsm, fgsm_by_hand),
    (ex.check_fgsm, fgsm_autograd_grad),
    (ex.check_targeted_fgsm, lambda m, x, t, eps: (x - eps * input_grad(m, x, t).sign()).clamp(0, 1)),
    (ex.check_uniform_noise, noise),
    (ex.check_uniform_noise,
     lambda x, eps, g: (x + torch.empty_like(x).uniform_(-eps, eps, generator=g)).clamp(0, 1)),
    (ex.check_project_linf, lambda d, eps: torch.maximum(torch.minimum(d, torch.tensor(eps)), torch.tensor(-eps))),
    (ex.check_targeted_pgd_step, pgd_step),
    (ex.check_fgsm_mix_loss, mix_loss),
    (ex.check_fgsm_mix_loss, mix_through_fgsm),
    (ex.check_linear_worst_case, lambda w, eps: eps * w.abs().sum()),  # a 0-d tensor is fine
    (ex.check_linear_worst_case, lambda w, eps: float(w @ (eps * w.sign()))),
]


@pytest.mark.parametrize("check, solution", CORRECT)
def test_hand_written_correct_solutions_pass(check, solution):
    result = check(solution)
    assert result.passed, text(result)


# --------------------------------------------------------------------------- wrong answers fail


def fgsm_in_place(model, x, y, eps):
    grad = input_grad(model, x, y)
    return x.add_(eps * grad.sign()).clamp_(0, 1)


def noise_reseeded(x, eps, generator):
    torch.manual_seed(0)  # the check restores the notebook's random state afterwards
    return noise(x, eps, None)


def pgd_grad_at_x(model, x, delta, target, eps, step):
    grad = delta_grad(model, x, torch.zeros_like(delta), target)  # the gradient at x, not x + delta
    delta = (delta - step * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1) - x


def mix_with_backward(model, x, y, eps, alpha):
    x_fgsm = (x + eps * input_grad(model, x, y).sign()).clamp(0, 1)  # backward() fills param .grad
    return mix_loss(model, x, y, eps, alpha, x_fgsm=x_fgsm)


def mix_clean_no_grad(model, x, y, eps, alpha):
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
    return alpha * clean + (1 - alpha) * F.cross_entropy(model(fgsm(model, x, y, eps=eps)), y)


def fgsm_step(model, x, y, eps, *, sign=1.0, scale=1.0, raw=False, clip=True):
    """A hand-written FGSM with switches for the typical mistakes."""
    grad = input_grad(model, x, y)
    out = x + sign * scale * eps * (grad if raw else grad.sign())
    return out.clamp(0, 1) if clip else out


def mix_with(**options):
    """A wrong FGSM-mix loss: ``mix_loss`` with some options, or an FGSM image made by ``fgsm_step``."""
    fgsm_options = options.pop("fgsm", None)

    def loss(model, x, y, eps, alpha):
        weights = options.get("weights")
        weights = weights(alpha) if callable(weights) else weights
        x_fgsm = None if fgsm_options is None else fgsm_step(model, x, y, eps, **fgsm_options).detach()
        return mix_loss(model, x, y, eps, alpha, weights=weights, x_fgsm=x_fgsm,
                        reduction=options.get("reduction", "mean"))

    return loss


def random_signs(x, eps, g):
    return (x + eps * (2 * torch.randint(0, 2, x.shape, generator=g) - 1)).clamp(0, 1)


def flip_farthest(eps_values, logits, label):
    wrong = logits.argmax(1) != label
    below, above = eps_values[(eps_values < 0) & wrong], eps_values[(eps_values > 0) & wrong]
    return (below.min().item() if len(below) else None, above.max().item() if len(above) else None)


def flip_last_right(eps_values, logits, label):
    """The last eps where the prediction is still right on each side (one grid step inside)."""
    lo, hi = ex.reference_flip_points(eps_values, logits, label)
    step = (eps_values[1] - eps_values[0]).item()
    return (None if lo is None else lo + step, None if hi is None else hi - step)


def transfer_fools(source, target, x, y, eps):
    x_adv = fgsm(source, x, y, eps=eps)
    with torch.no_grad():
        return source(x_adv).argmax(1) != y, target(x_adv).argmax(1) != y


def transfer_over_all(*args):
    fools_source, fools_target = transfer_fools(*args)
    return (fools_source & fools_target).float().mean().item()


def transfer_target_only(*args):
    return transfer_fools(*args)[1].float().mean().item()


# (check, wrong solution, a phrase the diagnosis must contain)
FGSM, TARGETED, NOISE, PROJECT = ex.check_fgsm, ex.check_targeted_fgsm, ex.check_uniform_noise, ex.check_project_linf
PGD, MIX = ex.check_targeted_pgd_step, ex.check_fgsm_mix_loss
WRONG = {
    "fgsm sign flipped": (FGSM, lambda *a: fgsm_step(*a, sign=-1.0), "the loss went down"),
    "fgsm missing clip": (FGSM, lambda *a: fgsm_step(*a, clip=False), "leaves [0, 1]: did you clip"),
    "fgsm grad not sign": (FGSM, lambda *a: fgsm_step(*a, raw=True), "only the sign of the"),
    "fgsm wrong step": (FGSM, lambda *a: fgsm_step(*a, scale=0.5), "not by eps"),
    "fgsm returns eta": (FGSM, lambda m, x, y, eps: eps * input_grad(m, x, y).sign(), "returned the perturbation"),
    "fgsm in place": (FGSM, fgsm_in_place, "changed its input `x` in place"),
    "fgsm wrong shape": (FGSM, lambda *a: fgsm_by_hand(*a).flatten(1), "should have shape"),
    "fgsm returns None": (FGSM, lambda m, x, y, eps: None, "not a tensor"),
    "fgsm returns tuple": (FGSM, lambda m, x, y, eps: (x, x), "not a tensor"),
    "targeted sign flipped": (TARGETED, fgsm_by_hand, "that is the untargeted step"),
    "targeted missing clip": (TARGETED, lambda *a: fgsm_step(*a, sign=-1.0, clip=False), "leaves [0, 1]: did you clip"),
    "noise one-sided": (NOISE, lambda x, eps, g: noise(x, eps, g, low=0.0), "only positive"),
    "noise gaussian": (NOISE, lambda x, eps, g: (x + eps * torch.randn(x.shape, generator=g)).clamp(0, 1),
                       "more than eps"),
    "noise missing clip": (NOISE, lambda x, eps, g: noise(x, eps, g, clip=False), "leaves [0, 1]: did you clip"),
    "noise random sign": (NOISE, random_signs, "random-sign noise"),
    "noise half width": (NOISE, lambda x, eps, g: noise(x, eps, g, low=-0.5, high=0.5), "spread"),
    "noise one value per image": (NOISE, lambda x, eps, g: noise(x, eps, g, shape=(len(x),) + (1,) * (x.dim() - 1)),
                                  "All pixels of an image got the same noise"),
    "noise same for every image": (NOISE, lambda x, eps, g: noise(x, eps, g, shape=x.shape[1:]),
                                   "Every image in the batch got the same noise"),
    "project one side": (PROJECT, lambda d, eps: d.clamp(max=eps), "clipped only one side"),
    "project nothing": (PROJECT, lambda d, eps: d.clone(), "forget to project"),
    "project sign": (PROJECT, lambda d, eps: eps * d.sign(), "inside the ball unchanged"),
    "project rescale": (PROJECT, lambda d, eps: d * eps / d.abs().max().clamp(min=1e-12),
                        "rescaled the whole perturbation"),
    "project nonnegative": (PROJECT, lambda d, eps: d.clamp(0, eps), "Negative entries became 0"),
    "project in place": (PROJECT, lambda d, eps: d.clamp_(-eps, eps), "in place"),
    "pgd sign flipped": (PGD, lambda *a: pgd_step(*a, sign=1.0), "went up the target-class loss"),
    "pgd no projection": (PGD, lambda *a: pgd_step(*a, project=False), "forget to project"),
    "pgd no [0, 1] box": (PGD, lambda *a: pgd_step(*a, box=False), "x + delta leaves [0, 1]"),
    "pgd grad not sign": (PGD, lambda *a: pgd_step(*a, raw=True), "only the sign"),
    "pgd step of eps": (PGD, lambda m, x, d, t, eps, step: pgd_step(m, x, d, t, eps, eps), "stepped by eps"),
    "pgd gradient at x": (PGD, pgd_grad_at_x, "gradient at x, not at x + delta"),
    "pgd returns x_adv": (PGD, lambda m, x, *a: x + pgd_step(m, x, *a), "returned `x + delta`"),
    "pgd delta in place": (PGD, lambda m, x, d, *a: d.copy_(pgd_step(m, x, d, *a)), "changed its input `delta` in place"),
    "mix weights swapped": (MIX, mix_with(weights=lambda a: (1 - a, a)), "weights are swapped"),
    "mix ignores alpha": (MIX, mix_with(weights=(0.5, 0.5)), "ignores alpha"),
    "mix no weights": (MIX, mix_with(weights=(1, 1)), "without the weights"),
    "mix clean only": (MIX, lambda m, x, y, eps, a: F.cross_entropy(m(x), y), "clean loss only"),
    "mix FGSM missing clip": (MIX, mix_with(fgsm={"clip": False}), "not clipped"),
    "mix FGSM sign flipped": (MIX, mix_with(fgsm={"sign": -1.0}), "step down the loss"),
    "mix FGSM raw gradient": (MIX, mix_with(fgsm={"raw": True}), "raw gradient"),
    "mix summed": (MIX, mix_with(reduction="sum"), "summed the per-example losses"),
    "mix per-example": (MIX, mix_with(reduction="none"), "one loss per example"),
    "mix detached": (MIX, lambda *a: ex.reference_fgsm_mix_loss(*a).detach(), "no gradient"),
    "mix item": (MIX, lambda *a: ex.reference_fgsm_mix_loss(*a).item(), "Python number"),
    "mix backward leaks grads": (MIX, mix_with_backward, "left gradients in the model's parameters"),
    "mix clean term cut off": (MIX, mix_clean_no_grad, "right value but the wrong gradient"),
    "linear L2 norm": (ex.check_linear_worst_case, lambda w, eps: float(eps * w.norm()), "L2 ball"),
    "linear no abs": (ex.check_linear_worst_case, lambda w, eps: float(eps * w.sum()), "with their signs"),
    "linear no eps": (ex.check_linear_worst_case, lambda w, eps: float(w.abs().sum()), "forgot eps"),
    "linear one coordinate": (ex.check_linear_worst_case, lambda w, eps: float(eps * w.abs().max()),
                              "only the largest coordinate"),
    "linear vector": (ex.check_linear_worst_case, lambda w, eps: eps * w.abs(), "return one number"),
    "flip order": (ex.check_flip_points, lambda e, z, c: ex.reference_flip_points(e, z, c)[::-1], "wrong order"),
    "flip farthest": (ex.check_flip_points, flip_farthest, "farthest from 0"),
    "flip zero for never": (ex.check_flip_points,
                            lambda *a: tuple(0.0 if v is None else v for v in ex.reference_flip_points(*a)),
                            "return None for it"),
    "flip last right": (ex.check_flip_points, flip_last_right, "last eps where the prediction is still right"),
    "flip one number": (ex.check_flip_points, lambda *a: ex.reference_flip_points(*a)[1], "return a pair"),
    "transfer percent": (ex.check_transfer_rate, lambda *a: 100 * ex.reference_transfer_rate(*a), "percentage"),
    "transfer over all": (ex.check_transfer_rate, transfer_over_all, "divided by all examples"),
    "transfer target only": (ex.check_transfer_rate, transfer_target_only, "fool the target; count only"),
    "transfer complement": (ex.check_transfer_rate, lambda *a: 1 - ex.reference_transfer_rate(*a),
                            "does *not* transfer"),
}


@pytest.mark.parametrize("mistake", WRONG)
def test_wrong_solution_fails_with_its_diagnosis(mistake):
    check, solution, phrase = WRONG[mistake]
    result = check(solution)
    assert not result.passed, text(result)
    assert result.messages[0].startswith("✗"), text(result)
    assert phrase in text(result), f"{mistake}: expected {phrase!r} in\n{text(result)}"


def test_diagnosis_names_only_the_mistakes_made():
    """A sign flip with a clip is reported as a sign flip, not also as something vaguer."""
    result = ex.check_fgsm(lambda *a: fgsm_step(*a, sign=-1.0))
    assert len(result.messages) == 2, text(result)  # the summary and the one diagnosis
    both = ex.check_fgsm(lambda *a: fgsm_step(*a, sign=-1.0, clip=False))
    assert "did you clip" in text(both) and "the loss went down" in text(both)


# --------------------------------------------------------------------------- warnings, stubs, errors


def test_result_that_requires_grad_passes_with_a_warning():
    def fgsm_attached(model, x, y, eps):
        x_ = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_), y), x_)
        return (x_ + eps * grad.sign()).clamp(0, 1)  # still attached to the graph

    result = ex.check_fgsm(fgsm_attached)
    assert result.passed
    assert any(m.startswith("⚠") and "requires grad" in m for m in result.messages)


@pytest.mark.parametrize("solution, phrase", [
    (noise_reseeded, "do not re-seed"),
    (lambda x, eps, g: noise(x, eps, None), "draw from the generator"),
])
def test_noise_ignoring_the_generator_passes_with_a_warning(solution, phrase):
    result = ex.check_uniform_noise(solution)
    assert result.passed, text(result)
    assert any(m.startswith("⚠") and phrase in m for m in result.messages), text(result)


def stub(*args):
    raise NotImplementedError  # the notebook's exercise stub


@pytest.mark.parametrize("name", CHECKS)
def test_stub_is_not_attempted_and_does_not_raise(name):
    result = CHECKS[name][0](stub)
    assert not result.passed
    assert result.messages == [NOT_ATTEMPTED]
    assert NOT_ATTEMPTED == "Not attempted yet: fill in the function above and re-run this cell."


def broken(*args):
    return {}["oops"]  # a KeyError from inside the student's code


@pytest.mark.parametrize("name", CHECKS)
def test_exceptions_are_reported_in_plain_words_not_raised(name):
    result = CHECKS[name][0](broken)
    assert not result.passed
    assert "Your function raised KeyError: 'oops'" in result.messages[0]
    assert "(on " in result.messages[0]  # says which hidden case


def test_common_errors_come_with_a_hint():
    result = ex.check_fgsm(lambda model, x, y, eps: x + eps * x.grad.sign())  # x.grad is None
    assert "AttributeError" in result.messages[0]
    assert "torch.autograd.grad" in result.messages[1]
    result = ex.check_uniform_noise(lambda x, eps: x)  # wrong signature
    assert "TypeError" in result.messages[0] and "signature" in result.messages[1]


@pytest.mark.parametrize("name", CHECKS)
@pytest.mark.parametrize("value", [None, 3, "x_adv", (1, 2)])
def test_non_functions_and_odd_returns_never_raise(name, value):
    check = CHECKS[name][0]
    assert not check(value).passed
    assert not check(lambda *args: value).passed


# --------------------------------------------------------------------------- the result object


def test_check_result_displays_plain_feedback():
    result = ex.check_fgsm(lambda *a: fgsm_step(*a, clip=False))
    assert bool(result) is False
    assert repr(result).startswith("check_fgsm: not passed yet\n  ✗ ")
    assert str(result) == repr(result)
    markdown = result._repr_markdown_()
    assert markdown.startswith("**check_fgsm**: not passed yet")
    assert all(f"- {m}" in markdown for m in result.messages)
    assert repr(ex.check_fgsm(ex.reference_fgsm)) == "check_fgsm: passed\n  ✓ All 6 hidden cases match FGSM."


def test_stub_feedback_is_one_line():
    result = ex.check_fgsm(stub)
    assert repr(result) == f"check_fgsm: {NOT_ATTEMPTED}"
    assert result._repr_markdown_() == f"**check_fgsm**: {NOT_ATTEMPTED}"


def test_check_result_positional_contract():
    result = CheckResult(True, ["✓ fine"])
    assert result.passed and result.messages == ["✓ fine"] and bool(result)


# --------------------------------------------------------------------------- determinism, speed, side effects


@pytest.mark.parametrize("name", CHECKS)
def test_checks_are_deterministic_and_leave_the_global_random_state_alone(name):
    check, reference = CHECKS[name]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = check(reference)
    assert torch.equal(torch.get_rng_state(), state)
    assert check(reference).messages == first.messages
    wrong = WRONG["fgsm sign flipped"][1]
    assert ex.check_fgsm(wrong).messages == ex.check_fgsm(wrong).messages


def test_student_code_using_the_global_generator_does_not_shift_the_notebook_stream():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ex.check_uniform_noise(lambda x, eps, g: noise(x, eps, None))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", CHECKS)
def test_checks_are_fast(name):
    check, reference = CHECKS[name]
    check(reference)  # warm up
    threads = torch.get_num_threads()
    start = time.process_time()  # CPU time: robust to other jobs sharing the machine
    check(reference)
    elapsed = time.process_time() - start
    # About 0.01-0.05 s: the checks run single-threaded on tiny cases; a cell must stay well under 1 s.
    assert elapsed < 0.5, f"{name} took {elapsed:.2f} s of CPU time"
    assert torch.get_num_threads() == threads  # the notebook's thread setting is restored


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_checks_do_not_depend_on_the_profile(monkeypatch, profile):
    monkeypatch.setenv("ADVCORE_PROFILE", profile)
    for check, reference in CHECKS.values():
        assert check(reference).passed


def test_checks_work_when_called_under_no_grad():
    with torch.no_grad():
        assert ex.check_fgsm(ex.reference_fgsm).passed
        assert ex.check_targeted_pgd_step(ex.reference_targeted_pgd_step).passed


def test_public_names_match_the_contract():
    expected = {f"check_{n}" for n in CHECKS} | {f"reference_{n}" for n in CHECKS}
    assert expected | {"CheckResult", "NOT_ATTEMPTED"} == set(ex.__all__)


def test_mix_loss_reference_is_the_objective_the_library_trains_with():
    """The exercise's J~ and advcore.train's FGSM objective agree (one definition in the book)."""
    from advcore.train import FGSMObjective

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    x, y = torch.rand(5, 1, 4, 4), torch.randint(0, 4, (5,))
    for eps, alpha in ((0.25, 0.5), (0.1, 0.3)):
        trained = FGSMObjective(eps=eps, alpha=alpha)(model, x, y, torch.Generator()).loss
        exercise = ex.reference_fgsm_mix_loss(model, x, y, eps, alpha)
        torch.testing.assert_close(exercise, trained)
