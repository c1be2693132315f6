"""APGD (Croce & Hein 2020), the Square Attack (Andriushchenko et al. 2020) and the worst case
over an attack suite: the conventions of tests/test_attacks.py, the papers' algorithms, and
that each attack does its job (APGD at least as strong as PGD; Square needs no gradient)."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import test_attacks as base
from advcore import data, train
from advcore.attacks import (
    apgd,
    apgd_checkpoints,
    dlr_loss,
    dlr_loss_targeted,
    fgsm,
    pgd,
    random_start_noise,
    square,
    square_fraction,
    square_noise,
)
from advcore.evaluate import worst_case
from test_attacks import CLASSES, batch, cnn, smooth_mlp

NEW_ATTACKS = {
    "apgd": functools.partial(apgd, eps=0.3, steps=10, generator=torch.Generator().manual_seed(0)),
    "apgd_dlr_restarts": functools.partial(apgd, eps=0.3, steps=10, loss="dlr", restarts=2,
                                           generator=torch.Generator().manual_seed(0)),
    "apgd_targeted": functools.partial(apgd, eps=0.3, steps=10, targeted=True, random_start=False),
    "square": functools.partial(square, eps=0.3, queries=30, generator=torch.Generator().manual_seed(0)),
    "square_targeted": functools.partial(square, eps=0.3, queries=30, targeted=True,
                                         generator=torch.Generator().manual_seed(0)),
}


# --------------------------------------------------------------------------- the conventions, reused


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_the_inputs_are_never_modified_and_the_result_is_fresh(name: str, monkeypatch) -> None:
    monkeypatch.setitem(base.ATTACKS, name, NEW_ATTACKS[name])
    base.test_the_inputs_are_never_modified_and_the_result_is_fresh(name)


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_model_mode_and_flags_are_restored_and_parameters_get_no_gradient(name: str, monkeypatch) -> None:
    monkeypatch.setitem(base.ATTACKS, name, NEW_ATTACKS[name])
    base.test_model_mode_and_requires_grad_flags_are_restored_and_parameters_get_no_gradient(name)


@pytest.mark.parametrize("eps", [0.01, 0.3, 0.7])
@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_result_stays_in_the_eps_ball_and_in_the_unit_box(name: str, eps: float) -> None:
    model, (x, y) = cnn(), batch()
    x_adv = NEW_ATTACKS[name](model, x, y, eps=eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert (x_adv - x).abs().max() > 0


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_eps_zero_returns_an_unchanged_copy_and_no_grad_changes_nothing(name: str) -> None:
    model, (x, y) = smooth_mlp(), batch()
    x_zero = NEW_ATTACKS[name](model, x, y, eps=0.0)
    assert torch.equal(x_zero, x) and x_zero.data_ptr() != x.data_ptr()
    fresh = {"generator": torch.Generator().manual_seed(1)} if "targeted" not in name or "square" in name else {}
    expected = NEW_ATTACKS[name](model, x, y, **fresh)
    fresh = {"generator": torch.Generator().manual_seed(1)} if fresh else {}
    with torch.no_grad():
        assert torch.equal(NEW_ATTACKS[name](model, x, y, **fresh), expected)


def test_same_generator_gives_the_same_result_and_explicit_random_numbers_reproduce_it() -> None:
    model, (x, y) = cnn(), batch()
    run = lambda **kw: apgd(model, x, y, eps=0.3, steps=8, restarts=3, **kw)  # noqa: E731
    first = run(generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, run(generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(first, run(generator=torch.Generator().manual_seed(4)))
    assert torch.equal(first, run(start=random_start_noise(x, eps=0.3, restarts=3,
                                                           generator=torch.Generator().manual_seed(3))))
    attack = lambda **kw: square(model, x, y, eps=0.3, queries=20, **kw)  # noqa: E731
    squares = attack(generator=torch.Generator().manual_seed(3))
    assert torch.equal(squares, attack(noise=square_noise(x, queries=20, generator=torch.Generator().manual_seed(3))))
    assert not torch.equal(squares, attack(generator=torch.Generator().manual_seed(4)))


def test_a_batch_gives_each_example_what_it_gets_alone() -> None:
    model, (x, y) = cnn(), batch(8)
    model.train()  # batch norm in train mode would couple the examples: the attacks must use eval
    starts = random_start_noise(x, eps=0.3, restarts=2, generator=torch.Generator().manual_seed(0))
    noise = square_noise(x, queries=25, generator=torch.Generator().manual_seed(0))
    attacks = {
        "apgd": lambda i: apgd(model, x[i], y[i], eps=0.3, steps=12, restarts=2, start=starts[:, i]),
        "apgd_dlr": lambda i: apgd(model, x[i], y[i], eps=0.3, steps=12, loss="dlr", restarts=2, start=starts[:, i]),
        "square": lambda i: square(model, x[i], y[i], eps=0.3, queries=25,
                                   noise={"stripes": noise["stripes"][i], "corners": noise["corners"][:, i],
                                          "signs": noise["signs"][:, i]}),
    }
    for name, attack in attacks.items():
        together = attack(slice(None))
        alone = torch.cat([attack(slice(i, i + 1)) for i in range(len(x))])
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=0, msg=name)


def test_restarts_never_do_worse_than_one_start() -> None:
    model, (x, y) = smooth_mlp(), batch(64)
    one = apgd(model, x, y, eps=0.05, steps=5, generator=torch.Generator().manual_seed(5))
    several = apgd(model, x, y, eps=0.05, steps=5, restarts=4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fooled_once, fooled_several = model(one).argmax(1) != y, model(several).argmax(1) != y
    assert torch.all(fooled_several >= fooled_once)
    same = fooled_once == fooled_several
    assert torch.all(base.ce(model, several, y)[same] >= base.ce(model, one, y)[same] - 1e-6)


# --------------------------------------------------------------------------- the papers' definitions


def test_checkpoints_follow_the_papers_recursion() -> None:
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, Sec. 3.2)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    for steps in (1, 5, 10, 37, 1000):
        points = apgd_checkpoints(steps)
        assert points == sorted(set(points)) and all(0 < w <= steps for w in points)
        gaps = [b - a for a, b in zip([0, *points], points)]
        assert all(gap >= 0.06 * steps - 1 for gap in gaps)


def test_dlr_is_positive_exactly_when_misclassified_and_ignores_shift_and_scale() -> None:
    logits = torch.randn(200, CLASSES, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, CLASSES, (200,), generator=torch.Generator().manual_seed(1))
    loss = dlr_loss(logits, y)
    assert torch.equal(loss > 0, logits.argmax(1) != y)
    torch.testing.assert_close(dlr_loss(7.0 * logits + 3.0, y), loss)
    sorted_logits = logits[0].sort(descending=True).values
    others = torch.cat([logits[0, :y[0]], logits[0, y[0] + 1:]]).max()
    assert loss[0].item() == pytest.approx(-(logits[0, y[0]] - others).item()
                                           / (sorted_logits[0] - sorted_logits[2]).item(), rel=1e-5)
    target = (y + 1) % CLASSES
    targeted = dlr_loss_targeted(logits, y, target)
    assert torch.equal(targeted > 0, logits.gather(1, target[:, None]).squeeze(1) > logits.gather(1, y[:, None]).squeeze(1))
    torch.testing.assert_close(dlr_loss_targeted(0.5 * logits - 2.0, y, target), targeted)


def test_square_fraction_halves_on_the_authors_schedule() -> None:
    assert square_fraction(0.8, 0, 10_000) == 0.8
    assert square_fraction(0.8, 11, 10_000) == 0.4
    assert square_fraction(0.8, 9_000, 10_000) == pytest.approx(0.8 / 2**9)
    assert square_fraction(0.8, 100, 1_000) == square_fraction(0.8, 1_000, 10_000)  # rescaled budget


def test_the_targeted_attacks_reach_the_target_more_often_than_the_clean_prediction() -> None:
    model, (x, _) = base.softmax_regression(), batch(32)
    with torch.no_grad():
        clean = model(x).argmax(1)
    target = (clean + 1) % CLASSES
    for x_adv in (apgd(model, x, target, eps=0.3, steps=10, targeted=True),
                  apgd(model, x, target, eps=0.3, steps=10, targeted=True, loss="dlr", labels=clean),
                  square(model, x, target, eps=0.3, queries=200, targeted=True,
                         generator=torch.Generator().manual_seed(0))):
        with torch.no_grad():
            reached = (model(x_adv).argmax(1) == target).float().mean()
        assert reached > 0.2  # clean, no example is classified as its target


# --------------------------------------------------------------------------- the attacks work


class NoBackward(torch.autograd.Function):
    """The identity, whose backward pass raises: a model that gives no gradient at all."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model has no gradient")


def test_square_never_uses_gradients() -> None:
    net, (x, y) = base.softmax_regression(), batch(32)
    model = lambda images: net(NoBackward.apply(images))  # noqa: E731
    with pytest.raises(RuntimeError, match="no gradient"):
        pgd(model, x, y, eps=0.3, step_size=0.1, steps=2)  # the gradient attacks cannot run
    x_adv = square(model, x, y, eps=0.3, queries=100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (net(x_adv).argmax(1) != y).float().mean() > (net(x).argmax(1) != y).float().mean()


@pytest.fixture(scope="module")
def trained_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A ReLU MLP trained with FGSM (Goodfellow et al.'s objective) on 3,000 MNIST images."""
    full = data.load_mnist("train")
    x, y = full.tensors
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, CLASSES))
    train.train(model, TensorDataset(x[:3000], y[:3000]), objective=train.FGSMObjective(eps=0.2),
                epochs=4, batch_size=50, lr=2e-3, progress=False, monitor=None, eval_train_examples=0,
                device="cpu")
    test = data.load_mnist("test", limit=400)
    return model.eval(), test.tensors[0], test.tensors[1]


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(trained_mlp) -> None:
    model, x, y = trained_mlp
    eps, steps = 0.1, 10  # not so large that every attack reaches 0%
    accuracy = lambda x_adv: (model(x_adv).argmax(1) == y).float().mean().item()  # noqa: E731
    with torch.no_grad():
        assert accuracy(x) > 0.8
    pgd_accuracy = accuracy(pgd(model, x, y, eps=eps, step_size=2.5 * eps / steps, steps=steps,
                                generator=torch.Generator().manual_seed(0)))
    apgd_accuracy = accuracy(apgd(model, x, y, eps=eps, steps=steps, generator=torch.Generator().manual_seed(0)))
    assert apgd_accuracy <= pgd_accuracy
    fgsm_accuracy = accuracy(fgsm(model, x, y, eps=eps))
    assert apgd_accuracy < fgsm_accuracy


# --------------------------------------------------------------------------- the worst case


def test_worst_case_counts_an_example_robust_only_if_every_attack_fails() -> None:
    model, (x, y) = smooth_mlp(), batch(40)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example correct clean
    half = torch.arange(40) < 20

    def breaks(mask: torch.Tensor):
        # Fools exactly the examples in `mask` (the true FGSM where it works is not the point here).
        def attack(m, xs, ys):
            x_adv = xs.clone()
            with torch.no_grad():
                far = fgsm(m, xs, ys, eps=1.0)
            chosen = mask[: len(xs)] & (m(far).argmax(1) != ys)
            x_adv[chosen] = far[chosen]
            return x_adv
        return attack

    result = worst_case(model, (x, y), {"first half": breaks(half), "second half": breaks(~half)},
                        batch_size=40, progress=False)
    fooled_first = ~result.correct[:, 0]
    fooled_second = ~result.correct[:, 1]
    assert fooled_first.any() and fooled_second.any()
    assert torch.equal(result.robust, ~(fooled_first | fooled_second))
    mean_of_attacks = (result.accuracy("first half") + result.accuracy("second half")) / 2
    assert result.robust_accuracy < mean_of_attacks
    broken = result.broken_by
    assert all(b == "first half" for b, f in zip(broken, fooled_first) if f)
    assert all(b == "second half" for b, f1, f2 in zip(broken, fooled_first, fooled_second) if f2 and not f1)
    assert all(b is None for b, r in zip(broken, result.robust) if r)
    summary = result.summary()
    assert summary.loc["worst case", "accuracy"] == result.robust_accuracy
    assert summary.loc["second half", "only this attack fooled"] == int((fooled_second & ~fooled_first).sum())
    frame = result.per_example()
    assert list(frame["broken by"]) == broken and len(frame) == 40


def test_worst_case_marks_clean_mistakes_and_rejects_an_empty_suite() -> None:
    model, (x, y) = smooth_mlp(), batch(16)
    result = worst_case(model, (x, y), {"FGSM": functools.partial(fgsm, eps=0.1)}, progress=False)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert [b == "clean" for b in result.broken_by] == wrong.tolist()
    with pytest.raises(ValueError, match="at least one attack"):
        worst_case(model, (x, y), {})


# --------------------------------------------------------------------------- bad input


def _bad_calls():
    model, (x, y) = smooth_mlp(), batch(4)
    yield "eps < 0", lambda: apgd(model, x, y, eps=-0.1), "eps must be"
    yield "steps 0", lambda: apgd(model, x, y, eps=0.1, steps=0), "steps must be"
    yield "unknown loss", lambda: apgd(model, x, y, eps=0.1, loss="hinge"), "loss must be"
    yield "targeted dlr without labels", lambda: apgd(model, x, y, eps=0.1, loss="dlr", targeted=True), "labels="
    yield "labels where unused", lambda: apgd(model, x, y, eps=0.1, labels=y), "only by the targeted DLR"
    yield "momentum 0", lambda: apgd(model, x, y, eps=0.1, momentum=0.0), "momentum must be"
    yield "restarts, no start", lambda: apgd(model, x, y, eps=0.1, restarts=2, random_start=False), "random_start"
    yield "start outside", lambda: apgd(model, x, y, eps=0.1, start=torch.ones_like(x)), "eps-ball"
    yield "x above 1", lambda: apgd(model, x * 255, y, eps=0.1), r"\[0, 1\]"
    yield "y shape", lambda: square(model, x, y[:3], eps=0.1), "shape"
    yield "dlr with 2 classes", lambda: apgd(lambda t: model(t)[:, :2], x, y % 2, eps=0.1, loss="dlr"), "at least 3"
    yield "square flat input", lambda: square(model, x.flatten(1), y, eps=0.1), r"\(N, C, H, W\)"
    yield "square p_init", lambda: square(model, x, y, eps=0.1, p_init=2.0), "p_init"
    yield "square queries", lambda: square(model, x, y, eps=0.1, queries=0), "queries must be"
    yield "square noise", lambda: square(model, x, y, eps=0.1, queries=5,
                                         noise=square_noise(x, queries=4)), "noise must be"
    yield "square no logits", lambda: square(lambda t: t.flatten(1).sum(1), x, y, eps=0.1), "logits"


@pytest.mark.parametrize("case", list(_bad_calls()), ids=lambda case: case[0])
def test_bad_input_raises_a_value_error_that_says_what_to_do(case) -> None:
    _, call, message = case
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- sentences and the exercise


def test_describe_masking_says_what_the_numbers_show_in_both_directions() -> None:
    from advcore.evaluate import describe_masking

    collapsed = describe_masking("FGSM-trained CNN", fgsm=0.9, iterative=0.02, gradient_free=0.01)
    assert "falls to 2%" in collapsed and "90%" in collapsed and "88 points" in collapsed
    assert "does better than the gradient attacks" in collapsed
    healthy = describe_masking("PGD-trained CNN", fgsm=0.95, iterative=0.9, gradient_free=0.93)
    assert "no collapse" in healthy and "falls to" not in healthy
    assert "weaker (93% accurate)" in healthy
    merely_weak = describe_masking("model", fgsm=0.4, iterative=0.15)
    assert "no collapse" in merely_weak and "25 points" in merely_weak
    weak = describe_masking("model", fgsm=0.4, iterative=0.6)
    assert "too weak" in weak and "Square" not in weak
    tie = describe_masking("model", fgsm=0.5, iterative=0.5, gradient_free=0.5)
    assert "as accurate under iterative attacks as under FGSM" in tie and "stronger" not in tie
    assert "does as well as the gradient attacks" in tie and "weaker" not in tie
    with pytest.raises(ValueError, match="accuracy in"):
        describe_masking("model", fgsm=90.0, iterative=0.1)


def test_overfitting_is_read_from_the_pgd_accuracy_over_epochs() -> None:
    from advcore.evaluate import describe_overfitting, overfit_catastrophically

    assert overfit_catastrophically([0.1, 0.001]) and overfit_catastrophically([0.3, 0.5, 0.02])
    assert not overfit_catastrophically([0.19, 0.25]) and not overfit_catastrophically([0.4])
    assert not overfit_catastrophically([0.03, 0.0])  # a drop of 3 points from nearly nothing is not a collapse
    assert "catastrophic overfitting." in describe_overfitting("zero-start CNN", [0.1, 0.001])
    rising = describe_overfitting("random-start CNN", [0.19, 0.25])
    assert "rose from 19% to 25%" in rising and "no catastrophic" in rising
    assert "too short" in describe_overfitting("model", [0.4])
    with pytest.raises(ValueError, match="accuracies"):
        overfit_catastrophically([])


def test_the_masking_exercise_passes_its_reference_and_fails_the_blind_attacks() -> None:
    from advcore import exercises

    assert exercises.check_breaks_gradient_masking(exercises.reference_breaks_gradient_masking).passed
    square_attack = lambda m, x, y, eps: square(m, x, y, eps=eps, queries=200)  # noqa: E731
    assert exercises.check_breaks_gradient_masking(square_attack).passed
    for blind in (lambda m, x, y, eps: fgsm(m, x, y, eps=eps),
                  lambda m, x, y, eps: pgd(m, x, y, eps=eps, step_size=eps / 4, steps=10)):
        result = exercises.check_breaks_gradient_masking(blind)
        assert not result.passed and "gradient" in str(result)
    too_far = lambda m, x, y, eps: (x + 2 * eps).clamp(0, 1)  # noqa: E731
    assert "threat model" in str(exercises.check_breaks_gradient_masking(too_far))

    def stub(m, x, y, eps):
        raise NotImplementedError

    assert str(exercises.check_breaks_gradient_masking(stub)).endswith(exercises.NOT_ATTEMPTED)
    # The defence changes no prediction: it is as robust as the network inside it.
    net = smooth_mlp()
    x, _ = batch(8)
    with torch.no_grad():
        assert torch.equal(exercises.SaturatedSoftmax(net)(x).argmax(1), net(x).argmax(1))


# --------------------------------------------------------------------------- FGSM training (Wong et al. 2020)


def test_fast_fgsm_objective_trains_on_fgsm_examples_from_a_zero_or_random_start() -> None:
    model, (x, y) = smooth_mlp(), batch(16)
    zero = train.make_objective("fast_fgsm", eps=0.2, step_size=0.2, random_start=False)
    assert isinstance(zero, train.FastFGSMObjective)
    out = zero(model, x, y, torch.Generator().manual_seed(0))
    expected = F.cross_entropy(model(fgsm(model, x, y, eps=0.2)), y)
    torch.testing.assert_close(out.loss, expected)  # zero start, step eps: exactly FGSM training
    assert out.loss.requires_grad and all(p.grad is None for p in model.parameters())

    rand = train.FastFGSMObjective(eps=0.2, step_size=0.25, random_start=True)
    first = rand(model, x, y, torch.Generator().manual_seed(1)).loss
    again = rand(model, x, y, torch.Generator().manual_seed(1)).loss
    other = rand(model, x, y, torch.Generator().manual_seed(2)).loss
    assert torch.equal(first, again) and not torch.equal(first, other)
    start = random_start_noise(x, eps=0.2, generator=torch.Generator().manual_seed(1))[0]
    by_hand = pgd(model, x, y, eps=0.2, step_size=0.25, steps=1, start=start)
    torch.testing.assert_close(first, F.cross_entropy(model(by_hand), y))

    warm = train.FastFGSMObjective(eps=0.3, step_size=0.375, warmup=0.5)
    assert warm.at(0.25).eps == pytest.approx(0.15) and warm.at(0.25).step_size == pytest.approx(0.1875)
    assert warm.at(0.5) is warm
    assert warm.monitor().kind == "pgd"  # FGSM cannot see a catastrophic overfit
    with pytest.raises(ValueError, match="step_size"):
        train.FastFGSMObjective(step_size=0.0)
    with pytest.raises(ValueError, match="warmup"):
        train.FastFGSMObjective(warmup=1.0)
