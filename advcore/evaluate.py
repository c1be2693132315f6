"""Evaluation: error and confidence, clean or under attack; epsilon sweeps; transfer matrices.

* :func:`evaluate` -- error rate, accuracy, mean confidence and mean confidence on the
  misclassified examples, over a dataset, clean or under any attack. (Goodfellow et al.
  2015, Sec. 4, report for softmax regression "an error rate of 99.9% with an average
  confidence of 79.3% on the MNIST test set".)
* :func:`epsilon_sweep` -- the logits of every class along ``x + eps * sign(grad)`` for a
  range of ``eps`` (Goodfellow et al. 2015, Fig. 4).
* :func:`transfer_matrix` -- adversarial examples made on each source model, error of
  each target model on them, and how often the wrong labels agree (Goodfellow et al.
  2015, Sec. 8).

Data may be a ``Dataset`` (e.g. the ``TensorDataset`` of ``advcore.data``), a
``DataLoader``, or a pair of tensors ``(x, y)``; images ``(N, C, H, W)`` in [0, 1], labels
``(N,)``. An attack is any callable ``(model, x, y) -> x_adv``, e.g.
``functools.partial(fgsm, eps=0.25)``. The model is in ``eval()`` during evaluation and
every submodule's mode is restored afterwards. Results are on the CPU.

Example::

    from functools import partial
    from advcore.attacks import fgsm
    from advcore.evaluate import evaluate
    clean = evaluate(model, test_set)
    adversarial = evaluate(model, test_set, attack=partial(fgsm, eps=0.25))
    print(f"error {adversarial.error_rate:.1%}, "
          f"confidence on mistakes {adversarial.mean_confidence_misclassified:.1%}")
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from advcore.attacks import LossFn, eval_mode, gradient_sign
from advcore.checks import check_images, check_labels, check_logits, describe

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Attack", "EvalResult", "TransferResult", "epsilon_sweep", "evaluate", "transfer_matrix"]

#: ``attack(model, x, y) -> x_adv``, e.g. ``functools.partial(advcore.attacks.pgd, eps=0.3, ...)``.
Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]
#: A ``Dataset`` of ``(image, label)``, a ``DataLoader`` of ``(images, labels)``, or ``(x, y)``.
Data = Union[Dataset, DataLoader, "tuple[Tensor, Tensor]"]


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured over ``n`` examples.

    Attributes:
        error_rate: fraction misclassified, in [0, 1].
        accuracy: ``1 - error_rate``.
        mean_confidence: mean over all examples of the softmax probability of the
            predicted class (its "confidence"), in [0, 1].
        mean_confidence_misclassified: the same over the misclassified examples only
            (NaN when none is misclassified).
        n: number of examples.
        predictions: ``(n,)`` predicted classes (int64).
        confidences: ``(n,)`` softmax probability of the predicted class.
        labels: ``(n,)`` true labels.
    """

    error_rate: float
    accuracy: float
    mean_confidence: float
    mean_confidence_misclassified: float
    n: int
    predictions: Tensor
    confidences: Tensor
    labels: Tensor

    @classmethod
    def from_predictions(cls, predictions: Tensor, confidences: Tensor, labels: Tensor) -> "EvalResult":
        """The summary of ``(n,)`` predicted classes, their softmax probabilities and the true labels."""
        wrong = predictions != labels
        error_rate = wrong.double().mean().item()
        return cls(
            error_rate=error_rate,
            accuracy=1.0 - error_rate,
            mean_confidence=confidences.double().mean().item(),
            mean_confidence_misclassified=confidences[wrong].double().mean().item() if wrong.any() else math.nan,
            n=labels.numel(),
            predictions=predictions,
            confidences=confidences,
            labels=labels,
        )

    def __str__(self) -> str:
        return (f"error {self.error_rate:.2%} (accuracy {self.accuracy:.2%}) on {self.n} examples; "
                f"mean confidence {self.mean_confidence:.1%}, "
                f"on misclassified {self.mean_confidence_misclassified:.1%}")


def evaluate(
    model: nn.Module,
    data: Data,
    *,
    attack: Attack | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Error rate, accuracy and confidences of ``model`` on ``data``, clean or under ``attack``.

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        data: a ``Dataset``, a ``DataLoader`` (its own batch size is used) or ``(x, y)``.
        attack: ``attack(model, x, y) -> x_adv`` applied to every batch, or ``None`` (clean).
        batch_size: examples per batch (ignored for a ``DataLoader``).
        device: where to run; default the device of the model's parameters.
        progress: show a tqdm progress bar.

    Returns:
        An :class:`EvalResult` (CPU tensors).
    """
    device = _resolve_device(model, device)
    predictions, confidences, labels = [], [], []
    batches = _batches(data, batch_size)
    with eval_mode(model):
        for x, y in tqdm(batches, total=_num_batches(data, batch_size), disable=not progress,
                         desc="evaluate" + ("" if attack is None else " under attack"), unit="batch"):
            x, y = _checked_batch(x, y, device)
            if attack is not None:
                x = _run_attack(attack, model, x, y)
            predicted, confidence = _predict(model, x, y)
            predictions.append(predicted.cpu())
            confidences.append(confidence.cpu())
            labels.append(y.cpu())
    return EvalResult.from_predictions(torch.cat(predictions), torch.cat(confidences), torch.cat(labels))


def epsilon_sweep(
    model: nn.Module,
    x: Tensor,
    y: Tensor | int,
    eps_values: Sequence[float] | Tensor,
    *,
    clip: bool = True,
    loss_fn: LossFn | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Logits of every class along ``x + eps * sign(grad_x loss(model(x), y))`` (Goodfellow et al. 2015, Fig. 4).

    The direction is computed once, at ``x``; ``eps`` may be negative (the paper sweeps
    both ways). For a ReLU or maxout network the logits are piecewise linear in ``eps``.

    Args:
        model: maps images in [0, 1] to logits.
        x: ONE image, ``(C, H, W)`` or ``(1, C, H, W)``, in [0, 1].
        y: its label (int, 0-d or ``(1,)`` tensor).
        eps_values: the ``K`` values of eps.
        clip: clip ``x + eps * sign(grad)`` to [0, 1] (valid images); ``False`` follows the
            straight line, as in the paper's plot of the unbounded direction.
        loss_fn: per-example loss ``(logits, y) -> (N,)``; default cross-entropy.
        batch_size: inputs per forward pass.

    Returns:
        Logits ``(K, num_classes)`` on the CPU; row ``k`` belongs to ``eps_values[k]``.
    """
    if isinstance(x, Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)  # a single (C, H, W) image
    if isinstance(x, Tensor) and x.dim() >= 2 and x.shape[0] != 1:
        raise ValueError(
            f"epsilon_sweep takes one example, got a batch of {x.shape[0]}; "
            "loop over x[i:i + 1], y[i:i + 1]."
        )
    x = check_images(x)
    y = check_labels(torch.as_tensor(y).reshape(-1) if isinstance(y, int) or (
        isinstance(y, Tensor) and y.dim() == 0) else y, x)
    try:
        eps = torch.as_tensor(eps_values, dtype=x.dtype).reshape(-1).to(x.device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"eps_values must be a sequence of numbers, e.g. torch.linspace(-0.5, 0.5, 41), got "
            f"{describe(eps_values)} ({error})."
        ) from None
    if eps.numel() == 0 or not bool(eps.isfinite().all()):
        raise ValueError("eps_values must be a non-empty sequence of finite numbers.")
    direction = gradient_sign(model, x, y, loss_fn=loss_fn)
    logits = []
    with eval_mode(model), torch.no_grad():
        for part in eps.split(batch_size):
            inputs = x + part.view(-1, *[1] * (x.dim() - 1)) * direction
            logits.append(model(inputs.clamp(0.0, 1.0) if clip else inputs).cpu())
    return torch.cat(logits)


@dataclass(frozen=True)
class TransferResult:
    """What :func:`transfer_matrix` measured; rows are source models, columns target models.

    Attributes:
        error: error rate of the target on adversarial examples made on the source
            (the diagonal is the white-box error).
        wrong_label_agreement: among the examples that both the source (on its own
            adversarial example) and the target misclassify, the fraction where both
            predict the same wrong class (NaN where there are none; 1 on the diagonal).
        both_wrong: the number of such examples.
        clean_error: error rate of each model on the clean examples.
        n: number of examples.
    """

    error: "pd.DataFrame"
    wrong_label_agreement: "pd.DataFrame"
    both_wrong: "pd.DataFrame"
    clean_error: "pd.Series"
    n: int

    def renamed(self, names: Mapping[str, str]) -> "TransferResult":
        """The same result with the models renamed by ``names`` (old name -> new; others kept)."""
        return TransferResult(
            error=self.error.rename(index=names, columns=names),
            wrong_label_agreement=self.wrong_label_agreement.rename(index=names, columns=names),
            both_wrong=self.both_wrong.rename(index=names, columns=names),
            clean_error=self.clean_error.rename(index=names),
            n=self.n,
        )


def transfer_matrix(
    models: Mapping[str, nn.Module],
    data: Data,
    *,
    attack: Attack,
    batch_size: int = 256,
    progress: bool = True,
) -> TransferResult:
    """Transferability (Goodfellow et al. 2015, Sec. 8): attack each source, test every target.

    For every batch and every source model, ``x_adv = attack(source, x, y)``; every target
    model then classifies ``x_adv``. Each model runs on the device of its parameters.

    Args:
        models: named models, each mapping images in [0, 1] to logits (same classes).
        data: a ``Dataset``, a ``DataLoader`` or ``(x, y)``.
        attack: ``attack(model, x, y) -> x_adv``, e.g. ``partial(fgsm, eps=0.25)``.
        batch_size: examples per batch (ignored for a ``DataLoader``).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`TransferResult` of pandas tables indexed by the model names.
    """
    import pandas as pd

    names = list(models)
    if not names:
        raise ValueError("models must name at least one model, e.g. {'plain': model}.")
    k = len(names)
    wrong = torch.zeros(k, k, dtype=torch.long)
    both_wrong = torch.zeros(k, k, dtype=torch.long)
    agree = torch.zeros(k, k, dtype=torch.long)
    clean_wrong = torch.zeros(k, dtype=torch.long)
    n = 0
    devices = [_resolve_device(models[name], None) for name in names]
    with _all_in_eval_mode(models.values()):
        for x, y in tqdm(_batches(data, batch_size), total=_num_batches(data, batch_size),
                         disable=not progress, desc="transfer matrix", unit="batch"):
            x, y = _checked_batch(x, y, torch.device("cpu"))
            n += y.numel()
            for t, name in enumerate(names):
                clean_wrong[t] += (_predict(models[name], x.to(devices[t]), y.to(devices[t]))[0].cpu() != y).sum()
            for s, source in enumerate(names):
                x_adv = _run_attack(attack, models[source], x.to(devices[s]), y.to(devices[s]))
                predicted = [_predict(models[t], x_adv.to(devices[i]), y.to(devices[i]))[0].cpu()
                             for i, t in enumerate(names)]
                for t in range(k):
                    misled = predicted[t] != y
                    both = misled & (predicted[s] != y)
                    wrong[s, t] += misled.sum()
                    both_wrong[s, t] += both.sum()
                    agree[s, t] += (both & (predicted[t] == predicted[s])).sum()
    agreement = agree.double() / both_wrong.double()  # 0/0 -> NaN: nothing to compare
    table = lambda values: pd.DataFrame(values.numpy(), index=pd.Index(names, name="source"),  # noqa: E731
                                        columns=pd.Index(names, name="target"))
    return TransferResult(
        error=table(wrong.double() / max(n, 1)),
        wrong_label_agreement=table(agreement),
        both_wrong=table(both_wrong),
        clean_error=pd.Series((clean_wrong.double() / max(n, 1)).numpy(), index=names, name="clean error"),
        n=n,
    )


# --------------------------------------------------------------------------- helpers


def _checked_batch(x: object, y: object, device: torch.device) -> tuple[Tensor, Tensor]:
    """A batch checked as every attack checks it: images in [0, 1], labels ``(N,)`` of class indices."""
    if not isinstance(x, Tensor):
        x = check_images(x)  # raises the attacks' error for a list, array, ...
    x = check_images(x.to(device))
    return x, check_labels(y, x)


def _predict(model: nn.Module, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Predicted class and its softmax probability, without gradients; given the labels ``y``,
    the logits are checked against them (shape, number of classes, NaN, probabilities)."""
    with torch.no_grad():
        logits = model(x)
        if y is not None:
            check_logits(logits, y, grad_needed=False)
        probabilities = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probabilities.max(dim=1)
    return predicted, confidence


def _run_attack(attack: Attack, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``attack(model, x, y)``, checked: same shape as ``x`` and values in [0, 1]."""
    x_adv = attack(model, x, y)
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
        raise ValueError(
            f"attack must return adversarial images of shape {tuple(x.shape)}, got "
            f"{type(x_adv).__name__} {getattr(x_adv, 'shape', '')}; pass e.g. partial(fgsm, eps=0.25)."
        )
    if not bool(((x_adv >= 0) & (x_adv <= 1)).all()):
        raise ValueError("attack returned images outside [0, 1]; clip them (x_adv.clamp(0, 1)).")
    return x_adv.detach()


@contextmanager
def _all_in_eval_mode(models: Iterable[nn.Module]) -> Iterator[None]:
    """``eval_mode`` for several models at once (restored in reverse order)."""
    with ExitStack() as stack:
        for model in models:
            stack.enter_context(eval_mode(model))
        yield


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    parameter = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")


def _as_tensors(data: Data) -> tuple[Tensor, Tensor] | None:
    """``(x, y)`` when the data are (or wrap) two tensors, else None."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return data
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        return data.tensors[0], data.tensors[1]
    return None


def _batches(data: Data, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` batches of any supported data, in order."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    tensors = _as_tensors(data)
    if tensors is not None:
        x, y = tensors
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}.")
        return zip(x.split(batch_size), y.split(batch_size))
    if isinstance(data, DataLoader):
        return ((batch[0], batch[1]) for batch in data)
    if isinstance(data, Dataset):
        return ((batch[0], batch[1]) for batch in DataLoader(data, batch_size=batch_size, shuffle=False))
    raise ValueError(
        f"data must be a Dataset, a DataLoader or a pair (x, y) of tensors, got {type(data).__name__}."
    )


def _num_batches(data: Data, batch_size: int) -> int | None:
    tensors = _as_tensors(data)
    if tensors is not None:
        return math.ceil(tensors[0].shape[0] / batch_size)
    try:
        return len(data) if isinstance(data, DataLoader) else math.ceil(len(data) / batch_size)
    except TypeError:  # iterable datasets have no length
        return None


# =========================================================================== worst case over attacks


@dataclass(frozen=True)
class WorstCaseResult:
    """What :func:`worst_case` measured: every attack's verdict on every example.

    The number to report for a defence is :attr:`robust_accuracy`: an example counts as
    robust only if it is classified correctly clean *and* under every attack of the suite
    (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Croce &
    Hein 2020 report AutoAttack this way). The mean of the attacks' accuracies is never
    that number: two attacks that each break a different half of the examples have a mean
    accuracy of 50% and a worst case of 0%.

    Attributes:
        attack_names: the suite's names, in the order they were run.
        clean_correct: ``(n,)`` bool, classified correctly without attack.
        correct: ``(n, k)`` bool, classified correctly under attack ``j`` (column ``j``).
        labels: ``(n,)`` true labels.
    """

    attack_names: tuple[str, ...]
    clean_correct: Tensor
    correct: Tensor
    labels: Tensor

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    @property
    def robust(self) -> Tensor:
        """``(n,)`` bool: correct clean and under every attack (the per-example worst case)."""
        return self.clean_correct & self.correct.all(dim=1)

    @property
    def robust_accuracy(self) -> float:
        return self.robust.double().mean().item()

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct.double().mean().item()

    def accuracy(self, attack: str) -> float:
        """Accuracy under one attack alone."""
        return self.correct[:, self._index(attack)].double().mean().item()

    @property
    def broken_by(self) -> list[str | None]:
        """Per example: ``"clean"`` (misclassified without attack), the first attack of the suite
        that fooled it, or ``None`` (robust)."""
        first = []
        for clean, row in zip(self.clean_correct.tolist(), self.correct.tolist()):
            if not clean:
                first.append("clean")
                continue
            first.append(next((name for name, ok in zip(self.attack_names, row) if not ok), None))
        return first

    def only_broken_by(self, attack: str) -> Tensor:
        """``(n,)`` bool: correct clean, fooled by ``attack`` and by no other attack of the suite."""
        j = self._index(attack)
        others = torch.cat([self.correct[:, :j], self.correct[:, j + 1:]], dim=1).all(dim=1)
        return self.clean_correct & ~self.correct[:, j] & others

    def summary(self) -> "pd.DataFrame":
        """One row per attack: its accuracy alone, the worst case over it and the attacks before
        it, and how many examples it alone fooled; then the row ``worst case`` over all."""
        import pandas as pd

        rows, running = [], self.clean_correct.clone()
        for j, name in enumerate(self.attack_names):
            running &= self.correct[:, j]
            rows.append({"attack": name, "accuracy": self.accuracy(name),
                         "worst case so far": running.double().mean().item(),
                         "only this attack fooled": int(self.only_broken_by(name).sum())})
        rows.append({"attack": "worst case", "accuracy": self.robust_accuracy,
                     "worst case so far": self.robust_accuracy, "only this attack fooled": None})
        return pd.DataFrame(rows).set_index("attack")

    def per_example(self) -> "pd.DataFrame":
        """One row per example: label, clean correct, correct under each attack, first broken by."""
        import pandas as pd

        frame = pd.DataFrame(self.correct.numpy(), columns=list(self.attack_names))
        frame.insert(0, "clean", self.clean_correct.numpy())
        frame.insert(0, "label", self.labels.numpy())
        frame["robust"] = self.robust.numpy()
        frame["broken by"] = self.broken_by
        return frame

    def _index(self, attack: str) -> int:
        if attack not in self.attack_names:
            raise KeyError(f"No attack named {attack!r}; the suite ran {', '.join(self.attack_names)}.")
        return self.attack_names.index(attack)


def worst_case(
    model: nn.Module,
    data: Data,
    attacks: Mapping[str, Attack],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> WorstCaseResult:
    """Run a suite of attacks on every example and keep every verdict (the per-example worst case).

    Every attack attacks every example (also the ones an earlier attack already fooled),
    so each attack's own accuracy is measured too, and :meth:`WorstCaseResult.summary`
    shows what each attack adds to the worst case.

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        data: a ``Dataset``, a ``DataLoader`` or ``(x, y)``.
        attacks: named attacks ``attack(model, x, y) -> x_adv``, e.g.
            ``{"FGSM": partial(fgsm, eps=0.3), "APGD-CE": partial(apgd, eps=0.3)}``; the
            order is the order of :attr:`WorstCaseResult.broken_by`.
        batch_size: examples per batch (ignored for a ``DataLoader``).
        device: where to run; default the device of the model's parameters.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`WorstCaseResult` (CPU tensors).
    """
    if not isinstance(attacks, Mapping) or not attacks:
        raise ValueError("attacks must name at least one attack, e.g. {'FGSM': partial(fgsm, eps=0.3)}.")
    names = tuple(attacks)
    device = _resolve_device(model, device)
    clean, correct, labels = [], [], []
    with eval_mode(model):
        for x, y in tqdm(_batches(data, batch_size), total=_num_batches(data, batch_size), disable=not progress,
                         desc="worst case over attacks", unit="batch"):
            x, y = _checked_batch(x, y, device)
            clean.append((_predict(model, x, y)[0] == y).cpu())
            verdicts = [(_predict(model, _run_attack(attacks[name], model, x, y))[0] == y).cpu() for name in names]
            correct.append(torch.stack(verdicts, dim=1))
            labels.append(y.cpu())
    return WorstCaseResult(attack_names=names, clean_correct=torch.cat(clean), correct=torch.cat(correct),
                           labels=torch.cat(labels))


__all__ += ["WorstCaseResult", "worst_case"]


def is_collapse(fgsm: float, iterative: float, *, collapse: float = 0.25) -> bool:
    """Did robustness collapse from FGSM to iterative attacks? (accuracies in [0, 1])

    Yes when FGSM's accuracy exceeds the iterative attacks' by at least ``collapse`` *and*
    the iterative attacks leave at most a quarter of it: a model that is merely weak (40%
    under FGSM, 15% under PGD) has not collapsed; one at 90% and 2% has.
    """
    return fgsm - iterative >= collapse and iterative <= 0.25 * fgsm


def describe_masking(
    name: str,
    *,
    fgsm: float,
    iterative: float,
    gradient_free: float | None = None,
    collapse: float = 0.25,
) -> str:
    """Sentences that say what a model's accuracies under three kinds of attack show.

    The checks are two of Carlini et al.'s (2019) signs of gradient masking: a single-step
    attack that does much better *for the model* than iterative ones (here: FGSM accuracy
    above the iterative attacks' by at least ``collapse``; Wong, Rice & Kolter 2020 call
    the training failure behind it catastrophic overfitting), and a gradient-free attack
    that beats the gradient attacks. The direction of every sentence is computed.

    Args:
        name: the model, as the sentence should name it.
        fgsm, iterative, gradient_free: accuracies in [0, 1] under FGSM, under the best
            iterative gradient attack (PGD / APGD), and under a gradient-free attack (or None).
        collapse: the gap (in accuracy) that counts as a collapse.

    Returns:
        One or two sentences of markdown.
    """
    for label, value in (("fgsm", fgsm), ("iterative", iterative), ("gradient_free", gradient_free)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{label} must be an accuracy in [0, 1], got {value!r}.")
    gap = fgsm - iterative
    if is_collapse(fgsm, iterative, collapse=collapse):
        text = (f"The {name} looks robust under FGSM ({fgsm:.0%} accurate) and falls to {iterative:.0%} under "
                f"iterative attacks: the single step over-states its robustness by {100 * gap:.0f} points, the "
                "first warning sign of gradient masking on Carlini et al.'s list.")
    elif round(100 * gap) == 0:
        text = (f"The {name} is as accurate under iterative attacks as under FGSM ({iterative:.0%}): "
                "no collapse, and the extra steps find nothing more.")
    elif gap > 0:
        text = (f"The {name} keeps {iterative:.0%} under iterative attacks against {fgsm:.0%} under FGSM: "
                f"iterative attacks are stronger, by {100 * gap:.0f} points, but there is no collapse.")
    else:
        text = (f"The {name} is *less* accurate under FGSM ({fgsm:.0%}) than under the iterative attacks "
                f"({iterative:.0%}): the iterative attacks are too weak here (too few steps or a bad step size).")
    if gradient_free is None:
        return text
    if round(100 * gradient_free) == round(100 * iterative):
        return text + (f" The gradient-free Square Attack does as well as the gradient attacks ({gradient_free:.0%} "
                       "accurate).")
    if gradient_free < iterative:
        return text + (f" The gradient-free Square Attack does better than the gradient attacks "
                       f"({gradient_free:.0%} accurate): the gradients mislead the attacks that follow them.")
    return text + (f" The gradient-free Square Attack is weaker ({gradient_free:.0%} accurate), as expected "
                   "when the gradients are informative.")


def overfit_catastrophically(pgd_accuracy: Sequence[float], *, drop: float = 0.05) -> bool:
    """Did PGD accuracy collapse *during training* (Wong, Rice & Kolter 2020's catastrophic overfitting)?

    ``pgd_accuracy``: held-out accuracy under PGD after each epoch, in [0, 1]. Yes when the
    last value is at most a quarter of the best one and at least ``drop`` below it.
    """
    values = [float(v) for v in pgd_accuracy]
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"pgd_accuracy must be a non-empty sequence of accuracies in [0, 1], got {values!r}.")
    peak, last = max(values), values[-1]
    return last <= 0.25 * peak and peak - last >= drop


def describe_overfitting(name: str, pgd_accuracy: Sequence[float]) -> str:
    """One sentence on the PGD accuracy of ``name`` over its training epochs (see :func:`overfit_catastrophically`)."""
    values = [float(v) for v in pgd_accuracy]
    if overfit_catastrophically(values):
        return (f"During training, the {name}'s PGD accuracy on held-out images rose to {max(values):.0%} and then "
                f"fell to {values[-1]:.0%}: catastrophic overfitting.")
    if len(values) == 1:
        return (f"The {name} trained for one epoch, ending at {values[-1]:.0%} PGD accuracy on held-out images: too "
                "short a run to see how it changes.")
    direction = "rose" if values[-1] > values[0] else "fell" if values[-1] < values[0] else "stayed"
    return (f"During training, the {name}'s PGD accuracy on held-out images {direction} from {values[0]:.0%} to "
            f"{values[-1]:.0%}: no catastrophic overfitting in this run.")


__all__ += ["describe_masking", "describe_overfitting", "is_collapse", "overfit_catastrophically"]
