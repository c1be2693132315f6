"""Properties of advcore.evaluate: errors and confidences, epsilon sweeps, transfer matrices."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advcore.attacks import fgsm, gradient_sign
from advcore.evaluate import epsilon_sweep, evaluate, transfer_matrix

CLASSES = 5


def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, CLASSES))


def softmax_regression(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, CLASSES))


def data(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def test_evaluate_matches_the_definitions() -> None:
    model, (x, y) = mlp(), data()
    with torch.no_grad():
        probabilities = torch.softmax(model(x), 1)
    confidence, predicted = probabilities.max(1)
    wrong = predicted != y
    result = evaluate(model, (x, y), progress=False)
    assert result.n == 50
    assert result.error_rate == pytest.approx(wrong.float().mean().item())
    assert result.accuracy == pytest.approx(1 - result.error_rate)
    assert result.mean_confidence == pytest.approx(confidence.mean().item(), abs=1e-6)
    assert result.mean_confidence_misclassified == pytest.approx(confidence[wrong].mean().item(), abs=1e-6)
    assert torch.equal(result.predictions, predicted) and torch.equal(result.labels, y)
    assert "error" in str(result)


def test_evaluate_gives_the_same_answer_for_every_kind_of_data_and_batch_size() -> None:
    model, (x, y) = mlp(), data()
    reference = evaluate(model, (x, y), batch_size=7, progress=False)
    for source in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=13), (x, y)):
        result = evaluate(model, source, batch_size=50, progress=True)
        assert result.error_rate == reference.error_rate and torch.equal(result.predictions, reference.predictions)
        assert result.mean_confidence == pytest.approx(reference.mean_confidence)


def test_no_mistakes_gives_nan_confidence_on_misclassified() -> None:
    model, (x, _) = mlp(), data()
    with torch.no_grad():
        y = model(x).argmax(1)
    result = evaluate(model, (x, y), progress=False)
    assert result.error_rate == 0 and math.isnan(result.mean_confidence_misclassified)


def test_evaluate_under_attack() -> None:
    model, (x, _) = softmax_regression(), data(100)
    with torch.no_grad():
        y = model(x).argmax(1)
    identity = evaluate(model, (x, y), attack=lambda m, images, labels: images, progress=False)
    attacked = evaluate(model, (x, y), attack=functools.partial(fgsm, eps=0.3), progress=False)
    assert identity.error_rate == 0
    assert attacked.error_rate > 0.5
    assert 0 < attacked.mean_confidence_misclassified <= 1


def test_evaluate_uses_eval_mode_and_restores_the_mode() -> None:
    model, (x, y) = mlp(dropout=0.5), data()
    model.train()
    first = evaluate(model, (x, y), attack=functools.partial(fgsm, eps=0.1), progress=False)
    second = evaluate(model, (x, y), attack=functools.partial(fgsm, eps=0.1), progress=False)
    assert torch.equal(first.predictions, second.predictions)  # dropout was off
    assert all(module.training for module in model.modules())


def test_evaluate_rejects_bad_attacks_and_data() -> None:
    model, (x, y) = mlp(), data()
    with pytest.raises(ValueError, match="attack must return"):
        evaluate(model, (x, y), attack=lambda m, images, labels: images[:1], progress=False)
    with pytest.raises(ValueError, match="data must be"):
        evaluate(model, [x, y], progress=False)
    with pytest.raises(ValueError, match="same length"):
        evaluate(model, (x, y[:3]), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, (x, y), batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        evaluate(model, (x, y), attack=lambda m, images, labels: images + 1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # normalized data: the model normalizes
        evaluate(model, ((x - 0.5) / 0.25, y), progress=False)


# --------------------------------------------------------------------------- epsilon sweeps


def test_epsilon_sweep_follows_the_sign_of_the_gradient() -> None:
    model, (x, y) = mlp(), data(1)
    eps = torch.linspace(-0.5, 0.5, 11)
    logits = epsilon_sweep(model, x, y, eps)
    assert logits.shape == (11, CLASSES)
    direction = gradient_sign(model, x, y)
    with torch.no_grad():
        torch.testing.assert_close(logits[5], model(x)[0])  # eps = 0
        torch.testing.assert_close(logits[8], model((x + eps[8] * direction).clamp(0, 1))[0])
    # a single (C, H, W) image and an int label are accepted
    torch.testing.assert_close(epsilon_sweep(model, x[0], int(y), eps), logits)


def test_epsilon_sweep_of_a_linear_model_is_linear_in_eps() -> None:
    # Goodfellow et al. (2015), Fig. 4: logits are (piecewise) linear along the sign direction.
    model, (x, y) = softmax_regression(), data(1)
    logits = epsilon_sweep(model, x, y, torch.linspace(-2, 2, 41), clip=False).double()
    second_difference = logits[2:] - 2 * logits[1:-1] + logits[:-2]
    assert second_difference.abs().max() < 1e-4


def test_epsilon_sweep_takes_one_example() -> None:
    model, (x, y) = mlp(), data(3)
    with pytest.raises(ValueError, match="one example"):
        epsilon_sweep(model, x, y, [0.1])
    with pytest.raises(ValueError, match="finite"):
        epsilon_sweep(model, x[:1], y[:1], [float("nan")])


# --------------------------------------------------------------------------- transfer


def test_transfer_matrix_diagonal_is_the_white_box_error() -> None:
    models = {"linear": softmax_regression(1), "mlp": mlp(2)}
    x, y = data(60)
    attack = functools.partial(fgsm, eps=0.2)
    result = transfer_matrix(models, (x, y), attack=attack, batch_size=25, progress=False)
    assert result.n == 60
    assert list(result.error.index) == ["linear", "mlp"] and list(result.error.columns) == ["linear", "mlp"]
    for name, model in models.items():
        white_box = evaluate(model, (x, y), attack=attack, progress=False).error_rate
        assert result.error.loc[name, name] == pytest.approx(white_box)
        assert result.clean_error[name] == pytest.approx(evaluate(model, (x, y), progress=False).error_rate)
        if result.both_wrong.loc[name, name] > 0:
            assert result.wrong_label_agreement.loc[name, name] == 1.0
    assert ((result.error.values >= 0) & (result.error.values <= 1)).all()
    assert (result.both_wrong.values <= 60).all()


def test_transfer_between_a_model_and_itself_is_total() -> None:
    model, (x, y) = softmax_regression(), data(40)
    result = transfer_matrix({"a": model, "b": model}, (x, y), attack=functools.partial(fgsm, eps=0.3),
                             progress=False)
    assert (result.error.values == result.error.values[0, 0]).all()
    assert (result.wrong_label_agreement.values == 1.0).all()


def test_transfer_matrix_needs_models() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        transfer_matrix({}, data(), attack=functools.partial(fgsm, eps=0.1), progress=False)


@pytest.mark.parametrize("labels, message", [
    (lambda y: y + 1, "1-based"),  # labels 1..10 for 10 classes: was "error 80%" on the clean path
    (lambda y: torch.nn.functional.one_hot(y, CLASSES), "shape"),
    (lambda y: y[:, None], "shape"),
    (lambda y: y.float(), "integer class indices"),
])
def test_clean_evaluation_checks_labels_as_the_attacks_do(labels, message) -> None:
    # Issue 15, item 3: the clean path checked nothing (wrong numbers, or raw tracebacks).
    x, y = data()
    with pytest.raises(ValueError, match=message):
        evaluate(mlp(), (x, labels(y)), progress=False)
    with pytest.raises(ValueError, match=message):
        transfer_matrix({"a": mlp()}, (x, labels(y)), attack=functools.partial(fgsm, eps=0.1), progress=False)


def test_a_model_that_returns_probabilities_is_flagged_and_nan_is_an_error() -> None:
    x, y = data()
    with pytest.warns(UserWarning, match="probabilities"):
        evaluate(nn.Sequential(mlp(), nn.Softmax(dim=1)), (x, y), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda t: mlp()(t) * float("nan"), (x, y), progress=False)


def test_epsilon_sweep_rejects_eps_values_that_are_not_numbers() -> None:
    x, y = data(1)
    with pytest.raises(ValueError, match="eps_values must be a sequence of numbers"):
        epsilon_sweep(mlp(), x, y, [0.0, "0.1"])
