"""advcore.train on small real MNIST: objectives do what the lecture says, runs resume exactly.

The robustness tests assert orderings (FGSM training beats standard training and the
noise control under FGSM; PGD training raises PGD accuracy), never golden numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from advcore import attacks, data, train
from advcore.models import HiddenPerturbMLP, MaxoutMLP, SoftmaxRegression
from advcore.train import (
    EPOCH_FIELDS,
    STEP_FIELDS,
    CheckpointError,
    FGSMAttack,
    FGSMObjective,
    HiddenFGSMObjective,
    NoiseObjective,
    PGDAttack,
    PGDObjective,
    RotationObjective,
    ScaledGradientObjective,
    StandardObjective,
)

EPS = 0.25


@pytest.fixture(scope="module")
def mnist() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """2,000 training, 500 validation (the tail of the training set) and 500 test images."""
    full = data.load_mnist("train")
    x, y = full.tensors
    test = data.load_mnist("test", limit=500)
    return TensorDataset(x[:2000], y[:2000]), TensorDataset(x[-500:], y[-500:]), test


def accuracy(model, dataset: TensorDataset, attack=None) -> float:
    x, y = dataset.tensors
    if attack is not None:
        x = attack(model, x, y)
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def fresh_mlp(seed: int = 0) -> HiddenPerturbMLP:
    torch.manual_seed(seed)
    return HiddenPerturbMLP((128,), activation="relu")


def fit(model, train_set, objective, **options) -> train.History:
    options = {"epochs": 3, "batch_size": 50, "lr": 2e-3, "progress": False, "seed": 0,
               "eval_train_examples": 200, **options}
    return train.train(model, train_set, objective=objective, monitor=FGSMAttack(EPS), **options)


def test_the_progress_bar_shows_only_what_an_epoch_measured(mnist, capsys) -> None:
    """Without validation data the bar has no ``val_acc=nan`` (zoo's surrogate_mlp had one)."""
    train_set, val_set, _ = mnist
    for val, expected in ((None, set()), (val_set, {"val_acc", "val_adv_acc"})):
        fit(fresh_mlp(), train_set, StandardObjective(), epochs=1, progress=True, val_set=val)
        bar = capsys.readouterr().err
        assert "nan" not in bar and {key for key in ("val_acc", "val_adv_acc") if f"{key}=" in bar} == expected, bar


# --------------------------------------------------------------------------- robustness orderings


@pytest.fixture(scope="module")
def fgsm_errors(mnist) -> dict[str, float]:
    """FGSM test error of the same MLP trained three ways on the same data and budget."""
    train_set, val_set, test = mnist
    fgsm = lambda model, x, y: attacks.fgsm(model, x, y, eps=EPS)  # noqa: E731
    errors = {}
    for name, objective in [("standard", StandardObjective()), ("fgsm", FGSMObjective(eps=EPS)),
                            ("noise", NoiseObjective(eps=EPS))]:
        model = fresh_mlp()
        fit(model, train_set, objective, val_set=val_set)
        errors[name] = 1 - accuracy(model, test, fgsm)
        errors[name + "_clean"] = 1 - accuracy(model, test)
    return errors


def test_fgsm_training_lowers_fgsm_error(fgsm_errors: dict[str, float]) -> None:
    assert fgsm_errors["fgsm"] < fgsm_errors["standard"] - 0.2, fgsm_errors
    assert fgsm_errors["fgsm_clean"] < 0.3, fgsm_errors  # it still classifies clean digits


def test_noise_control_does_not_buy_the_same_robustness(fgsm_errors: dict[str, float]) -> None:
    assert fgsm_errors["fgsm"] < fgsm_errors["noise"] - 0.2, fgsm_errors


def test_pgd_training_raises_pgd_accuracy(mnist) -> None:
    train_set, _, test = mnist
    pgd_attack = PGDAttack(eps=0.2, step_size=0.05, steps=10)
    generator = torch.Generator().manual_seed(0)
    attack = lambda model, x, y: pgd_attack(model, x, y, generator)  # noqa: E731
    results = {}
    for name, objective in [("standard", StandardObjective()),
                            ("pgd", PGDObjective(eps=0.2, step_size=0.1, steps=3))]:
        model = fresh_mlp()
        history = train.train(model, train_set, objective=objective, epochs=3, batch_size=50, lr=2e-3,
                              monitor=None, eval_train_examples=0, progress=False)
        results[name] = accuracy(model, test, attack)
        if name == "pgd":  # the per-step records hold the training batch's PGD accuracy
            assert not any(math.isnan(v) for v in history.steps["adv_acc"])
    assert results["pgd"] > results["standard"] + 0.2, results


# --------------------------------------------------------------------------- history


def test_history_records_steps_and_epochs(mnist) -> None:
    train_set, val_set, _ = mnist
    small = TensorDataset(*(t[:300] for t in train_set.tensors))
    model = fresh_mlp()
    history = fit(model, small, FGSMObjective(eps=EPS), val_set=val_set, epochs=2, batch_size=100)
    assert set(history.steps) == set(STEP_FIELDS) and set(history.epochs) == set(EPOCH_FIELDS)
    assert len(history.steps["step"]) == 6 and history.steps["step"] == [1, 2, 3, 4, 5, 6]
    assert history.epochs["epoch"] == [1, 2] and len(history) == 2
    for column in ("clean_loss", "clean_acc", "adv_loss", "adv_acc"):
        assert all(math.isfinite(v) for v in history.steps[column]), column
    for split in ("train", "val"):
        for column in ("clean_loss", "clean_acc", "adv_loss", "adv_acc"):
            assert all(math.isfinite(v) for v in history.epochs[f"{split}_{column}"])
    # The monitor is an attack: adversarial accuracy is below clean accuracy.
    assert history.epochs["val_adv_acc"][-1] < history.epochs["val_clean_acc"][-1]
    frame = history.epochs_frame()
    assert {"val_adv_err", "train_clean_err"} <= set(frame.columns) and len(frame) == 2
    assert len(history.steps_frame()) == 6
    assert history.config["objective"] == {"name": "fgsm", "eps": EPS, "alpha": 0.5}
    assert train.History.from_json(history.to_json()).epochs == history.epochs
    # The standard objective makes no adversarial batch: NaN per step, but the epoch
    # records still measure robustness with the monitor attack.
    plain = fit(fresh_mlp(), small, StandardObjective(), val_set=val_set, epochs=1, batch_size=100)
    assert all(math.isnan(v) for v in plain.steps["adv_acc"])
    assert math.isfinite(plain.epochs["val_adv_acc"][0])


# --------------------------------------------------------------------------- determinism, checkpoints


def tiny_run(train_set, checkpoint=None, objective=None, epochs: int = 3, **options) -> tuple[MaxoutMLP, train.History]:
    """A run that uses every source of randomness: shuffling, dropout and noise."""
    torch.manual_seed(1)
    model = MaxoutMLP(16, pieces=2)
    history = train.train(model, train_set, objective=objective or NoiseObjective(eps=0.2), epochs=epochs,
                          batch_size=50, lr=1e-2, seed=3, checkpoint=checkpoint, progress=False,
                          monitor=FGSMAttack(0.1), eval_train_examples=100, **options)
    return model, history


def same_history(a: train.History, b: train.History) -> bool:
    strip = lambda h: {k: v for k, v in h.epochs.items() if k != "seconds"}  # noqa: E731
    nan_equal = lambda u, v: all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(u, v))  # noqa: E731
    return all(nan_equal(a.steps[k], b.steps[k]) for k in a.steps) and all(
        nan_equal(strip(a)[k], strip(b)[k]) for k in strip(a))


def assert_same_model(a, b) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.fixture(scope="module")
def small_train(mnist) -> TensorDataset:
    return TensorDataset(*(t[:300] for t in mnist[0].tensors))


def test_training_is_deterministic_and_leaves_the_global_rng_alone(small_train) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    model_a, history_a = tiny_run(small_train, epochs=2)
    torch.manual_seed(123)  # tiny_run seeds the model's initialization itself
    assert torch.equal(state, torch.get_rng_state())
    model_b, history_b = tiny_run(small_train, epochs=2)
    assert_same_model(model_a, model_b)
    assert same_history(history_a, history_b)


class InterruptAt:
    """Wraps an objective and raises KeyboardInterrupt at the n-th step (mid-epoch)."""

    def __init__(self, objective, at_step: int) -> None:
        self.objective, self.at_step, self.calls = objective, at_step, 0
        self.name = objective.name

    def __call__(self, model, x, y, generator):
        self.calls += 1
        if self.calls == self.at_step:
            raise KeyboardInterrupt
        return self.objective(model, x, y, generator)

    def monitor(self):
        return self.objective.monitor()

    def config(self):
        return self.objective.config()


def test_resume_after_interrupt_equals_uninterrupted_run(small_train, tmp_path) -> None:
    reference_model, reference_history = tiny_run(small_train)  # 3 epochs of 6 steps, no checkpoint

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        tiny_run(small_train, ckpt, objective=InterruptAt(NoiseObjective(eps=0.2), at_step=9))  # in epoch 2
    saved = train.load_checkpoint(ckpt)  # the last checkpoint survived the interrupt intact
    assert saved["epoch"] == 1 and not saved["finished"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind

    resumed_model, resumed_history = tiny_run(small_train, ckpt)
    assert_same_model(resumed_model, reference_model)
    assert same_history(resumed_history, reference_history)

    # A finished run is not retrained: calling again returns the same model and history.
    again_model, again_history = tiny_run(small_train, ckpt)
    assert_same_model(again_model, reference_model)
    assert same_history(again_history, reference_history)


def test_truncated_or_corrupted_checkpoint_is_rejected(small_train, tmp_path) -> None:
    ckpt = tmp_path / "run.ckpt"
    tiny_run(small_train, ckpt, epochs=1)
    content = ckpt.read_bytes()

    ckpt.write_bytes(content[: len(content) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        train.load_checkpoint(ckpt)
    with pytest.raises(CheckpointError):
        tiny_run(small_train, ckpt, epochs=2)  # never silently resumed from, never overwritten

    flipped = bytearray(content)
    flipped[-100] ^= 0xFF
    ckpt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupted"):
        train.load_checkpoint(ckpt)

    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        train.load_checkpoint(ckpt)


def test_checkpoint_of_another_configuration_is_refused(small_train, tmp_path) -> None:
    ckpt = tmp_path / "run.ckpt"
    tiny_run(small_train, ckpt, epochs=1)
    with pytest.raises(ValueError, match="different training configuration"):
        tiny_run(small_train, ckpt, epochs=1, objective=FGSMObjective(eps=0.2))


def test_early_stopping_keeps_the_best_adversarial_validation_epoch(mnist) -> None:
    train_set, val_set, _ = mnist
    small = TensorDataset(*(t[:500] for t in train_set.tensors))
    torch.manual_seed(0)
    model = SoftmaxRegression()
    history = train.train(model, small, objective=StandardObjective(), val_set=val_set, epochs=4,
                          batch_size=50, lr=0.05, early_stopping=True, monitor=FGSMAttack(0.1),
                          progress=False, eval_train_examples=0)
    val_adv_err = [1 - a for a in history.epochs["val_adv_acc"]]
    assert history.best_epoch == 1 + min(range(len(val_adv_err)), key=val_adv_err.__getitem__)
    # The model holds the best epoch's weights: its adversarial validation accuracy is the recorded one.
    best = history.epochs["val_adv_acc"][history.best_epoch - 1]
    assert accuracy(model, val_set, FGSMAttack(0.1)) == pytest.approx(best, abs=1e-6)

    torch.manual_seed(0)
    stopped = train.train(SoftmaxRegression(), small, objective=StandardObjective(), val_set=val_set,
                          epochs=30, batch_size=50, lr=0.05, early_stopping=True, patience=1,
                          monitor=FGSMAttack(0.1), progress=False, eval_train_examples=0)
    assert stopped.stopped_early and len(stopped) < 30


def test_early_stopping_needs_validation_data(small_train) -> None:
    with pytest.raises(ValueError, match="val_set"):
        train.train(SoftmaxRegression(), small_train, early_stopping=True, progress=False)


# --------------------------------------------------------------------------- the control objectives


def test_every_objective_takes_a_finite_step(small_train) -> None:
    x, y = (t[:20] for t in small_train.tensors)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = HiddenPerturbMLP((32, 32), activation="sigmoid")
    for objective in [StandardObjective(), FGSMObjective(), NoiseObjective(), RotationObjective(),
                      ScaledGradientObjective(), HiddenFGSMObjective(), PGDObjective(steps=2, step_size=0.2)]:
        out = objective(mlp, x, y, generator)
        assert out.loss.requires_grad and torch.isfinite(out.loss), objective.name
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in mlp.parameters())
        mlp.zero_grad()
    with pytest.raises(TypeError, match="forward_hidden"):
        HiddenFGSMObjective()(SoftmaxRegression(), x, y, generator)
    with pytest.raises(ValueError, match="alpha"):
        FGSMObjective(alpha=1.5)
    with pytest.raises(ValueError, match="Unknown objective"):
        train.make_objective("magic")


def test_the_sign_noise_control_mixes_with_plus_minus_eps_noise(small_train) -> None:
    x, y = (t[:8] for t in small_train.tensors)
    objective = NoiseObjective(eps=0.1, distribution="sign")
    perturbed = objective.perturb(SoftmaxRegression(), x, y, torch.Generator().manual_seed(0))
    moved = (perturbed - x).abs()
    inside = (x >= 0.1) & (x <= 0.9)  # pixels the clip to [0, 1] cannot touch
    assert torch.allclose(moved[inside], torch.full_like(moved[inside], 0.1))
    uniform = NoiseObjective(eps=0.1).perturb(SoftmaxRegression(), x, y, torch.Generator().manual_seed(0))
    assert (uniform - x)[inside].abs().mean() < 0.07  # U(-eps, eps): mean |u| = eps / 2
    assert train.make_objective("noise", eps=0.1, distribution="sign") == objective
    with pytest.raises(ValueError, match="distribution"):
        NoiseObjective(distribution="gaussian")


def test_training_applies_the_max_norm_constraint(small_train) -> None:
    """MaxoutMLP(max_norm=c): after every step each unit's incoming weights have norm <= c (pylearn2's max_col_norm)."""
    torch.manual_seed(0)
    constrained, free = MaxoutMLP(16, max_norm=0.5), MaxoutMLP(16)
    for model in (constrained, free):
        train.train(model, small_train, epochs=1, batch_size=50, optimizer="sgd", lr=0.5, monitor=None,
                    progress=False)
    def row_norms(model):
        return torch.cat([m.weight.norm(dim=1) for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert row_norms(constrained).max() <= 0.5 + 1e-5
    assert row_norms(free).max() > 0.5  # without the constraint the same training leaves the ball
    with pytest.raises(ValueError, match="max_norm"):
        MaxoutMLP(16, max_norm=0.0)


def test_control_perturbations(small_train) -> None:
    x, y = (t[:8] for t in small_train.tensors)
    torch.manual_seed(0)
    model = SoftmaxRegression()
    generator = torch.Generator().manual_seed(0)
    # Scaled gradient: the same L-inf size as FGSM, along the gradient rather than its sign.
    x_sg = ScaledGradientObjective(eps=0.25).perturb(model, x, y, generator)
    grad = attacks.input_gradient(model, x, y)
    step = x_sg - x
    assert step.abs().max() <= 0.25 + 1e-6
    inside = (x_sg > 0) & (x_sg < 1)
    assert torch.all(step[inside] * grad[inside] > 0)  # moves up the loss
    assert step[inside].abs().unique().numel() > 10  # not a sign step: many different sizes
    # Rotation: 0 degrees is the identity, 90 degrees a quarter turn.
    torch.testing.assert_close(attacks.rotate(x, torch.zeros(8)), x, atol=1e-5, rtol=0)
    quarter = attacks.rotate(x, torch.full((8,), 90.0))
    assert min((quarter - torch.rot90(x, k, dims=(2, 3))).abs().max() for k in (1, -1)) < 1e-4
    rotated = RotationObjective(degrees=15).perturb(model, x, y, generator)
    assert rotated.shape == x.shape and 0 <= rotated.min() and rotated.max() <= 1
    # The rotation adversary moves each image towards its loss gradient: the loss goes up.
    with torch.no_grad():
        assert F.cross_entropy(model(rotated), y) > F.cross_entropy(model(x), y)


def test_rotate_towards_is_a_rotation_by_the_angle() -> None:
    generator = torch.Generator().manual_seed(0)
    x = 0.4 + 0.2 * torch.rand(4, 1, 28, 28, generator=generator)  # far from 0 and 1: no clipping
    direction = torch.randn(4, 1, 28, 28, generator=generator)
    torch.testing.assert_close(train.rotate_towards(x, direction, 0.0), x)
    rotated = train.rotate_towards(x, direction, 5.0)
    v, r = x.flatten(1), rotated.flatten(1)
    torch.testing.assert_close(r.norm(dim=1), v.norm(dim=1))  # a rotation keeps the norm
    cos = (v * r).sum(1) / (v.norm(dim=1) * r.norm(dim=1))
    torch.testing.assert_close(torch.rad2deg(torch.acos(cos)), torch.full((4,), 5.0), atol=1e-2, rtol=0)
    assert torch.all(((r - v) * direction.flatten(1)).sum(1) > 0)  # towards the direction
    with pytest.raises(ValueError, match="same shape"):
        train.rotate_towards(x, direction[:2], 5.0)


@pytest.mark.parametrize("objective", [RotationObjective(degrees=15), ScaledGradientObjective(eps=0.25)])
def test_smooth_controls_differentiate_through_the_adversary(small_train, objective) -> None:
    """Goodfellow et al. (Sec. 6): with rotations or the scaled gradient "the perturbation process
    is itself differentiable and the learning can take the reaction of the adversary into
    account": the parameter gradient is not the one of a fixed (detached) perturbed input."""
    x, y = (t[:16] for t in small_train.tensors)
    torch.manual_seed(0)
    model = HiddenPerturbMLP((16,), activation="relu")
    generator = torch.Generator().manual_seed(0)
    through = torch.autograd.grad(objective(model, x, y, generator).loss, list(model.parameters()))
    fixed_input = objective.perturb(model, x, y, generator).detach()
    logits = model(torch.cat([x, fixed_input]))
    fixed_loss = (objective.alpha * F.cross_entropy(logits[:16], y)
                  + (1 - objective.alpha) * F.cross_entropy(logits[16:], y))
    fixed = torch.autograd.grad(fixed_loss, list(model.parameters()))
    difference = max((a - b).abs().max().item() for a, b in zip(through, fixed))
    assert difference > 1e-6, "no gradient flowed through the perturbation"
    torch.testing.assert_close(objective(model, x, y, generator).loss, fixed_loss)  # same value


def test_the_differentiable_adversary_sees_the_network_in_the_chosen_mode(small_train) -> None:
    """``mode="eval"``: the gradient of the eval-mode network (as an attack's), modes restored;
    ``"train"``: of the network as it trains (dropout on: a fresh mask each call)."""
    x, y = (t[:16] for t in small_train.tensors)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(64, 10)).train()
    evaluated = [train.differentiable_input_gradient(model, x, y, mode="eval") for _ in range(2)]
    assert model.training and all(m.training for m in model.modules())  # restored
    torch.testing.assert_close(evaluated[0], evaluated[1])  # no dropout: deterministic
    torch.testing.assert_close(evaluated[0].detach(), attacks.input_gradient(model, x, y))  # an attack's gradient
    trained = [train.differentiable_input_gradient(model, x, y, mode="train") for _ in range(2)]
    assert all(g.requires_grad for g in trained)  # keeps its graph: double backpropagation
    assert (trained[0] - trained[1]).abs().max() > 1e-6  # two dropout masks, two gradients
    assert (trained[0] - evaluated[0]).abs().max() > 1e-6
    for objective in (RotationObjective, ScaledGradientObjective):
        with pytest.raises(ValueError, match="adversary_mode"):
            objective(adversary_mode="test")


def test_hidden_fgsm_perturbs_hidden_activations_by_eps(small_train) -> None:
    x, y = (t[:8] for t in small_train.tensors)
    torch.manual_seed(0)
    model = HiddenPerturbMLP((16, 16), activation="sigmoid")
    seen = []
    original = model.forward_hidden

    def spy(inputs, perturbations=None):
        seen.append(perturbations)
        return original(inputs, perturbations)

    model.forward_hidden = spy  # type: ignore[method-assign]
    out = HiddenFGSMObjective(eps_hidden=0.1)(model, x, y, torch.Generator())
    clean, adversarial = seen
    assert clean is None and len(adversarial) == 2  # one perturbation per hidden layer, none on the output
    assert all(torch.allclose(p.abs(), torch.full_like(p, 0.1)) for p in adversarial)
    assert out.adv_loss > out.clean_loss  # the perturbation increases the loss


def test_pgd_warmup_ramps_eps_and_step_size() -> None:
    objective = PGDObjective(eps=0.3, step_size=0.1, steps=7, warmup=0.5)
    early = objective.at(0.25)
    assert early.eps == pytest.approx(0.15) and early.step_size == pytest.approx(0.05) and early.warmup == 0
    assert objective.at(0.5) is objective and objective.at(0.9) is objective
    assert PGDObjective().at(0.0) == PGDObjective()  # Madry et al.: no warm-up
    with pytest.raises(ValueError, match="warmup"):
        PGDObjective(warmup=1.0)


def test_pgd_fast_start_trains_on_one_step_fgsm_first_then_pgd(small_train) -> None:
    # Issue 12: a warm start of Wong et al.'s one-step FGSM (random start, step 1.25 eps), then PGD.
    objective = PGDObjective(eps=0.3, step_size=0.01, steps=40, fast_start=0.5)
    early = objective.at(0.2)
    assert isinstance(early, train.FastFGSMObjective)
    assert early.random_start and early.eps == 0.3 and early.step_size == pytest.approx(train.FAST_FGSM_STEP * 0.3)
    assert objective.at(0.5) is objective
    assert "fast_start" not in PGDObjective().config()  # keys of runs made before the option are unchanged
    assert objective.config()["fast_start"] == 0.5
    with pytest.raises(ValueError, match="fast_start"):
        PGDObjective(fast_start=1.0)
    with pytest.raises(ValueError, match="alpha = 0"):  # the fast phase has no clean-loss term
        PGDObjective(fast_start=0.5, alpha=0.5)
    # In train(): the first of two epochs costs one attack step per batch instead of five
    # (forward passes counted on the model: a PGD-5 step makes 4 more than a one-step one).
    def forwards(fast_start: float) -> int:
        calls: list[int] = []
        model = sequential()
        model.register_forward_hook(lambda *_: calls.append(1))
        quick(model, small_train, objective=PGDObjective(eps=0.3, step_size=0.1, steps=5, fast_start=fast_start),
              epochs=2)
        return len(calls)

    assert forwards(0.0) - forwards(0.5) == 4 * math.ceil(len(small_train) / 100)


# --------------------------------------------------------------------------- issue 15: no silent wrong answers


def sequential(activation: type[torch.nn.Module] = torch.nn.ReLU, hidden: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, hidden), activation(),
                               torch.nn.Linear(hidden, 10))


def quick(model, train_set, **options) -> train.History:
    options = {"epochs": 1, "batch_size": 100, "progress": False, "monitor": None, "eval_train_examples": 0,
               **options}
    return train.train(model, train_set, **options)


@pytest.mark.parametrize("changed", [
    lambda: sequential(torch.nn.Sigmoid),  # same class, same parameter count: only the activation differs
    lambda: sequential(lambda: torch.nn.LeakyReLU(0.2)),  # a hyperparameter of a layer
    lambda: torch.nn.Sequential(*list(sequential())[:2], torch.nn.Dropout(0.5), *list(sequential())[2:]),
])
def test_a_checkpoint_never_resumes_a_model_of_another_structure(small_train, tmp_path, changed) -> None:
    # Issue 15, item 2: the key held only the class name and parameter count, so a ReLU -> Sigmoid
    # change silently returned the old weights and history.
    ckpt = tmp_path / "run.ckpt"
    quick(sequential(), small_train, checkpoint=ckpt)
    with pytest.raises(ValueError, match="different training configuration"):
        quick(changed(), small_train, checkpoint=ckpt)
    quick(sequential(), small_train, checkpoint=ckpt)  # the same structure still resumes


def test_model_structure_sees_layers_hyperparameters_and_shapes() -> None:
    base = train.model_structure(sequential())
    assert base == train.model_structure(sequential())  # weights do not matter
    for other in (sequential(torch.nn.Sigmoid), sequential(hidden=17), HiddenPerturbMLP((16,), activation="relu")):
        assert train.model_structure(other) != base
    relu, sigmoid = HiddenPerturbMLP((16,), activation="relu"), HiddenPerturbMLP((16,), activation="sigmoid")
    assert train.model_structure(relu) != train.model_structure(sigmoid)  # an attribute, not a module


def bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(4 * 26 * 26, 10))


def test_a_frozen_batch_norm_layer_stays_frozen_and_every_mode_is_restored(small_train) -> None:
    # Issue 15, item 7: train() called model.train() on everything (the frozen layer's running
    # statistics changed) and left the model in another mode than the caller's.
    model = bn_model()
    model[1].eval()  # frozen by the caller; the rest of the model is in training mode
    statistics = model[1].running_mean.clone()
    quick(model, small_train)
    assert torch.equal(model[1].running_mean, statistics)
    assert [m.training for m in model.modules()] == [True, True, False, True, True, True, True]

    model = bn_model().eval()  # everything in eval: nothing singled out, everything trains
    quick(model, small_train)
    assert not torch.equal(model[1].running_mean, statistics)
    assert not any(m.training for m in model.modules())  # and it comes back in eval


def test_modes_are_restored_after_an_interrupt(small_train) -> None:
    model = bn_model().eval()
    with pytest.raises(KeyboardInterrupt):
        quick(model, small_train, objective=InterruptAt(StandardObjective(), at_step=2))
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("change, message", [
    (lambda x, y: (x * float("nan"), y), "NaN present: True"),
    (lambda x, y: ((x - 0.1307) / 0.3081, y), r"\[0, 1\]"),  # normalized outside the model
    (lambda x, y: (x, y + 1), "1-based"),
    (lambda x, y: (x, y.float()), "integer class indices"),
])
def test_training_data_that_is_certainly_wrong_is_refused(small_train, change, message) -> None:
    x, y = change(*small_train.tensors)
    with pytest.raises(ValueError, match=message):
        quick(sequential(), TensorDataset(x, y))


@pytest.mark.parametrize("options, message", [
    ({"epochs": 1.5}, "epochs must be an integer"),
    ({"batch_size": "100"}, "batch_size must be an integer"),
    ({"lr": "1e-3"}, "lr must be a real number"),
])
def test_options_of_the_wrong_type_get_a_value_error(small_train, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        quick(sequential(), small_train, **options)


def test_objective_options_of_the_wrong_type_get_a_value_error() -> None:
    with pytest.raises(ValueError, match="alpha must be a real number"):
        FGSMObjective(eps=0.25, alpha="0.5")
    with pytest.raises(ValueError, match="steps must be an integer"):
        PGDObjective(steps=2.5)


def test_probabilities_eps_on_the_255_scale_and_a_diverging_loss_warn(small_train) -> None:
    with pytest.warns(UserWarning, match="probabilities"):
        quick(torch.nn.Sequential(sequential(), torch.nn.Softmax(dim=1)), small_train)
    with pytest.warns(UserWarning, match="8/255"):
        FGSMObjective(eps=8)
    with pytest.warns(UserWarning, match="Lower the learning rate"):
        quick(sequential(), small_train, epochs=3, lr=5.0, optimizer="sgd")


def test_every_mixing_objective_mixes_with_alpha_mix(small_train) -> None:
    """J~ = alpha J(x) + (1 - alpha) J(x_adv) (Goodfellow et al. 2015, Sec. 6), from the records of one step."""
    x, y = (t[:16] for t in small_train.tensors)
    torch.manual_seed(0)
    model = SoftmaxRegression()
    for objective in (FGSMObjective(eps=0.25, alpha=0.3), PGDObjective(eps=0.3, step_size=0.1, steps=2, alpha=0.3),
                      NoiseObjective(eps=0.25, alpha=0.3)):
        out = objective(model, x, y, torch.Generator().manual_seed(0))
        torch.testing.assert_close(out.loss.detach(), train.alpha_mix(out.clean_loss, out.adv_loss, 0.3))
        torch.testing.assert_close(out.loss.detach(), 0.3 * out.clean_loss + 0.7 * out.adv_loss)


def test_train_config_is_the_one_list_of_options(small_train) -> None:
    """Keywords and a TrainConfig are the same run; the config is checked once and cannot change."""
    import dataclasses

    x, y = (t[:200] for t in small_train.tensors)
    config = train.TrainConfig(objective="fgsm", epochs=1, batch_size=50, eval_train_examples=50)
    assert isinstance(config.objective, FGSMObjective) and config.monitor == FGSMAttack(0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    histories = []
    for options in ({"config": config, "lr": 0.01},
                    {"objective": "fgsm", "epochs": 1, "batch_size": 50, "eval_train_examples": 50, "lr": 0.01}):
        torch.manual_seed(0)
        histories.append(train.train(SoftmaxRegression(), TensorDataset(x, y), progress=False, device="cpu",
                                     **options))
    assert histories[0].config == histories[1].config and histories[0].config["lr"] == 0.01
    assert histories[0].steps["loss"] == histories[1].steps["loss"]
    for bad in ({"objective": "nope"}, {"epochs": 1.5}, {"lr": "0.1"}, {"precision": "float8"},
                {"early_stopping": True, "monitor": None}):
        with pytest.raises(ValueError):
            train.TrainConfig(**bad)
    with pytest.raises(TypeError, match="epoch"):
        train.train(SoftmaxRegression(), TensorDataset(x, y), epoch=1, progress=False)  # a misspelt option
