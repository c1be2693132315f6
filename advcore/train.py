"""One training loop with pluggable objectives, a history, and checkpoints that resume.

Objectives (what one step minimizes; ``alpha = 0.5`` as in the lecture):

* :class:`StandardObjective` -- cross-entropy ``J(x, y)``.
* :class:`FGSMObjective` -- Goodfellow et al. (2015), Eq. 6:
  ``J~ = alpha J(x, y) + (1 - alpha) J(x + eps sign(grad_x J(x, y)), y)``.
* :class:`NoiseObjective` -- the control: the same mix with uniform ``+-eps`` noise.
* :class:`RotationObjective` -- the control: the same mix with ``x`` rotated by a small
  angle towards its loss gradient (Goodfellow et al. 2015, Sec. 4 and 6).
* :class:`ScaledGradientObjective` -- the control: the same mix with
  ``x + eps grad / ||grad||_inf`` (the gradient itself, not its sign).

  Both controls are differentiable adversaries: the loss is differentiated *through* the
  construction of the perturbation, so "the learning can take the reaction of the adversary
  into account" (Goodfellow et al. 2015, Sec. 6).
* :class:`HiddenFGSMObjective` -- the mix with FGSM perturbations of the *hidden*
  activations of a :class:`~advcore.models.HiddenPerturbMLP` (never the output layer).
* :class:`PGDObjective` -- Madry et al. (2018), Sec. 2-4: ``J(x + delta_PGD, y)`` (the box
  "Algorithm 1: PGD adversarial training" of the lecture is Wong, Rice & Kolter 2020).
* :class:`FastFGSMObjective` -- Wong, Rice & Kolter (2020): ``J(x + delta_FGSM, y)``, from a
  zero or a random start (catastrophic overfitting, and how a random start avoids it).

:func:`train` runs any of them; it records a :class:`History` (per step: the training
batch's clean and perturbed loss and accuracy; per epoch: clean and adversarial loss and
accuracy on a fixed training subset and on the validation set, under a *monitor* attack),
can stop early on the adversarial validation error, shows a ``tqdm`` progress bar, is
deterministic for a seed on CPU, and -- given ``checkpoint`` -- saves an atomic checkpoint
after every epoch and resumes an interrupted run to exactly the uninterrupted result.

Example::

    from advcore import models, train
    model = models.MaxoutMLP()
    history = train.train(model, train_set, val_set=val_set, epochs=5,
                          objective=train.FGSMObjective(eps=0.25),
                          checkpoint="runs/maxout_fgsm.ckpt")
    history.epochs_frame()[["epoch", "val_clean_acc", "val_adv_acc"]]
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from advcore import attacks
from advcore.models import apply_constraints
from advcore.storage import atomic_write_bytes

if TYPE_CHECKING:  # pandas is imported lazily: only the frames need it
    import pandas as pd

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "FGSMAttack",
    "FGSMObjective",
    "FastFGSMObjective",
    "HiddenFGSMObjective",
    "History",
    "NoiseObjective",
    "Objective",
    "PGDAttack",
    "PGDObjective",
    "RotationObjective",
    "ScaledGradientObjective",
    "StandardObjective",
    "StepOutput",
    "load_checkpoint",
    "model_structure",
    "save_checkpoint",
    "train",
]


# =========================================================================== attacks used to monitor


@dataclass(frozen=True)
class FGSMAttack:
    """FGSM at ``eps`` as a ``(model, x, y, generator) -> x_adv`` callable (for monitoring)."""

    eps: float

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return attacks.fgsm(model, x, y, eps=self.eps)

    def describe(self) -> str:
        return f"FGSM eps={self.eps:g}"


@dataclass(frozen=True)
class PGDAttack:
    """PGD (Madry et al.) as a ``(model, x, y, generator) -> x_adv`` callable (for monitoring)."""

    eps: float
    step_size: float
    steps: int
    random_start: bool = True

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                           random_start=self.random_start, generator=generator)

    def describe(self) -> str:
        return f"PGD eps={self.eps:g}, {self.steps} steps of {self.step_size:.3g}"


MonitorAttack = Callable[[nn.Module, Tensor, Tensor, "torch.Generator | None"], Tensor]


# =========================================================================== objectives


@dataclass
class StepOutput:
    """What one objective step returns: the loss to minimize and what the history records.

    ``adv_loss``/``adv_correct`` refer to the objective's own perturbed inputs (FGSM, noise,
    rotation, ... examples); they are ``None`` for the standard objective. All are tensors,
    so recording them needs no host synchronization.
    """

    loss: Tensor
    clean_loss: Tensor
    clean_correct: Tensor  # fraction of the batch classified correctly, a 0-d tensor
    adv_loss: Tensor | None = None
    adv_correct: Tensor | None = None


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.detach().argmax(1) == y).float().mean()


class Objective:
    """Base class: ``objective(model, x, y, generator) -> StepOutput``.

    Subclasses are frozen dataclasses; their fields are the objective's configuration
    (recorded in the history and hashed into checkpoints and the zoo's cache keys).
    """

    name = "objective"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> StepOutput:
        raise NotImplementedError

    def monitor(self) -> MonitorAttack | None:
        """The attack the epoch records use by default (``None``: no adversarial columns)."""
        return None

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in self.config().items() if k != "name")
        return f"{self.name}({fields})"


@dataclass(frozen=True)
class StandardObjective(Objective):
    """Plain cross-entropy ``J(theta, x, y)``."""

    name = "standard"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> StepOutput:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return StepOutput(loss=loss, clean_loss=loss.detach(), clean_correct=_accuracy(logits, y))


def _check_alpha(alpha: float) -> None:
    if attacks._check_number(alpha, "alpha", minimum=0.0) > 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")


def _check_eps(eps: float, name: str = "eps") -> None:
    """A finite ``eps >= 0``; ``eps > 1`` warns (probably meant on the 0..255 scale)."""
    attacks._check_number(eps, name, minimum=0.0)


class _MixObjective(Objective):
    """``alpha J(x, y) + (1 - alpha) J(perturb(x), y)``, both halves in one forward pass.

    The perturbed input is a constant for the parameter gradient (FGSM, noise) unless the
    subclass sets ``differentiable = True`` (rotation, scaled gradient): then the gradient
    also flows through the perturbation's construction.
    """

    alpha: float
    differentiable = False

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> StepOutput:
        x_perturbed = self.perturb(model, x, y, generator)
        if not self.differentiable:
            x_perturbed = x_perturbed.detach()
        logits = model(torch.cat([x, x_perturbed]))
        clean_logits, adv_logits = logits[: len(x)], logits[len(x):]
        clean_loss = F.cross_entropy(clean_logits, y)
        adv_loss = F.cross_entropy(adv_logits, y)
        loss = self.alpha * clean_loss + (1.0 - self.alpha) * adv_loss
        return StepOutput(loss=loss, clean_loss=clean_loss.detach(), clean_correct=_accuracy(clean_logits, y),
                          adv_loss=adv_loss.detach(), adv_correct=_accuracy(adv_logits, y))


@dataclass(frozen=True)
class FGSMObjective(_MixObjective):
    """Goodfellow et al.'s adversarial objective (Eq. 6), with :func:`advcore.attacks.fgsm`.

    ``J~ = alpha J(x, y) + (1 - alpha) J(x + eps sign(grad_x J(x, y)), y)``. The FGSM
    example is recomputed for the current parameters at every step and treated as a
    constant (no gradient flows through its construction), as in the paper.
    """

    eps: float = 0.25
    alpha: float = 0.5
    name = "fgsm"

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_alpha(self.alpha)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return attacks.fgsm(model, x, y, eps=self.eps)

    def monitor(self) -> MonitorAttack:
        return FGSMAttack(self.eps)


@dataclass(frozen=True)
class NoiseObjective(_MixObjective):
    """The controls of Goodfellow et al. (2015), Sec. 6: the mix with noise instead of FGSM.

    ``distribution="uniform"``: ``x + U(-eps, eps)``; ``"sign"``: ``x`` plus ``+-eps`` per
    pixel with random signs (:func:`advcore.attacks.sign_noise`), FGSM's step without its direction.
    """

    eps: float = 0.25
    alpha: float = 0.5
    distribution: Literal["uniform", "sign"] = "uniform"
    name = "noise"

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_alpha(self.alpha)
        if self.distribution not in ("uniform", "sign"):
            raise ValueError(f"distribution must be 'uniform' or 'sign', got {self.distribution!r}.")

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        noise = attacks.uniform_noise if self.distribution == "uniform" else attacks.sign_noise
        return noise(x, eps=self.eps, generator=generator)

    def monitor(self) -> MonitorAttack:
        return FGSMAttack(self.eps)


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image of ``x`` (N, C, H, W) about its centre by ``degrees[i]`` (bilinear, zero fill)."""
    radians = degrees.to(x) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0.0, 1.0)


def differentiable_input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``grad_x J(model(x), y)`` (summed cross-entropy) as a function of the parameters.

    Unlike :func:`input_gradient` the result keeps its graph (``create_graph=True``), so a
    loss computed from it can be differentiated with respect to the parameters (double
    backpropagation). The model is in eval mode for this forward pass (dropout off), as in
    every attack; its mode is restored afterwards. Shape: ``x.shape``.
    """
    with attacks.eval_mode(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    return grad


def rotate_towards(x: Tensor, direction: Tensor, degrees: float) -> Tensor:
    """Rotate each example ``x[i]``, as a vector, by ``degrees`` towards ``direction[i]``.

    Goodfellow et al. (2015, Sec. 4): "rotating x by a small angle in the direction of the
    gradient reliably produces adversarial examples". The rotation is in the plane spanned
    by ``x[i]`` and ``direction[i]``: with ``u`` the unit part of ``direction[i]`` orthogonal
    to ``x[i]``, the result is ``cos(a) x[i] + sin(a) ||x[i]|| u``. It keeps the norm
    ``||x[i]||`` (so scaling the input up does not make it smaller) and is differentiable in
    ``direction``. The result is clipped to [0, 1] to stay an image.

    Shapes: ``x`` and ``direction`` (N, ...), any trailing shape; returns ``x.shape``.
    """
    if x.shape != direction.shape:
        raise ValueError(f"x {tuple(x.shape)} and direction {tuple(direction.shape)} must have the same shape.")
    v, d = x.flatten(1), direction.flatten(1)
    v_norm = v.norm(dim=1, keepdim=True)
    v_unit = v / v_norm.clamp_min(1e-12)
    ortho = d - (d * v_unit).sum(1, keepdim=True) * v_unit
    u = ortho / ortho.norm(dim=1, keepdim=True).clamp_min(1e-12)
    angle = math.radians(degrees)
    rotated = math.cos(angle) * v + math.sin(angle) * v_norm * u
    return rotated.view_as(x).clamp(0.0, 1.0)


@dataclass(frozen=True)
class RotationObjective(_MixObjective):
    """The control of Goodfellow et al. (2015, Sec. 6): the mix with a rotation adversary.

    The paper: "If we instead [use] adversarial examples based on small rotations or addition
    of the scaled gradient, then the perturbation process is itself differentiable and the
    learning can take the reaction of the adversary into account." It gives no angle and no
    further detail; Sec. 4 says "rotating x by a small angle in the direction of the
    gradient". Our reading: each example, as a vector, is rotated by ``degrees`` towards its
    input gradient (:func:`rotate_towards`), and the loss is differentiated through the
    gradient (:func:`differentiable_input_gradient`). ``degrees`` is our choice.
    """

    degrees: float = 15.0
    alpha: float = 0.5
    monitor_eps: float = 0.25  # only for the history's adversarial columns
    name = "rotation"
    differentiable = True

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        if attacks._check_number(self.degrees, "degrees", minimum=0.0) > 90:
            raise ValueError(f"degrees must be in [0, 90] (a small angle), got {self.degrees}.")

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return rotate_towards(x, differentiable_input_gradient(model, x, y), self.degrees)

    def monitor(self) -> MonitorAttack:
        return FGSMAttack(self.monitor_eps)


def input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``grad_x J(model(x), y)`` (summed cross-entropy), model in eval mode, parameters untouched."""
    with attacks.attack_mode(model):
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def scaled_gradient_step(x: Tensor, grad: Tensor, eps: float) -> Tensor:
    """``clip(x + eps grad / ||grad||_inf, 0, 1)`` per example: FGSM's L-inf size, the gradient's shape."""
    scale = grad.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return (x + eps * grad / scale).clamp(0.0, 1.0)


@dataclass(frozen=True)
class ScaledGradientObjective(_MixObjective):
    """The control of Goodfellow et al. (2015, Sec. 6): the mix with ``x + eps grad / ||grad||_inf``.

    The paper says only "addition of the scaled gradient"; the scale is our choice: each
    example's input gradient is scaled so its largest entry is ``eps`` -- the same
    L-infinity size as FGSM, but along the gradient rather than its sign. The loss is
    differentiated through the gradient (double backpropagation), so "the learning can take
    the reaction of the adversary into account".
    """

    eps: float = 0.25
    alpha: float = 0.5
    name = "scaled_gradient"
    differentiable = True

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_alpha(self.alpha)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return scaled_gradient_step(x, differentiable_input_gradient(model, x, y), self.eps)

    def monitor(self) -> MonitorAttack:
        return FGSMAttack(self.eps)


@dataclass(frozen=True)
class HiddenFGSMObjective(Objective):
    """The mix with FGSM perturbations of the hidden activations (Goodfellow et al., Sec. 6).

    ``J~ = alpha J(x, y) + (1 - alpha) J(x; h_i + eps_hidden sign(grad_{h_i} J))`` for every
    hidden layer ``i`` of a model with ``forward_hidden`` (:class:`~advcore.models.HiddenPerturbMLP`).
    The output layer is never perturbed. The input is not perturbed.
    """

    eps_hidden: float = 0.1
    alpha: float = 0.5
    monitor_eps: float = 0.25  # only for the history's adversarial columns (input FGSM)
    name = "hidden_fgsm"

    def __post_init__(self) -> None:
        _check_eps(self.eps_hidden, "eps_hidden")
        _check_alpha(self.alpha)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> StepOutput:
        if not hasattr(model, "forward_hidden"):
            raise TypeError(
                f"HiddenFGSMObjective needs a model with forward_hidden(x, perturbations) "
                f"(advcore.models.HiddenPerturbMLP), got {type(model).__name__}."
            )
        logits, hidden = model.forward_hidden(x)
        clean_loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(clean_loss, hidden, retain_graph=True)
        perturbations = [self.eps_hidden * g.sign() for g in grads]
        adv_logits, _ = model.forward_hidden(x, perturbations)
        adv_loss = F.cross_entropy(adv_logits, y)
        loss = self.alpha * clean_loss + (1.0 - self.alpha) * adv_loss
        return StepOutput(loss=loss, clean_loss=clean_loss.detach(), clean_correct=_accuracy(logits, y),
                          adv_loss=adv_loss.detach(), adv_correct=_accuracy(adv_logits, y))

    def monitor(self) -> MonitorAttack:
        return FGSMAttack(self.monitor_eps)


@dataclass(frozen=True)
class PGDObjective(Objective):
    """Madry et al.'s adversarial training (Sec. 2-4): minimize ``J(x + delta_PGD, y)``.

    (The lecture's box "Algorithm 1: PGD adversarial training" is Algorithm 1 of Wong, Rice &
    Kolter 2020; Madry et al. write PGD as an update rule, Sec. 3.)

    ``delta_PGD`` comes from :func:`advcore.attacks.pgd` (``steps`` signed-gradient steps of
    ``step_size``, projected onto the eps-ball, from a random start). ``alpha > 0`` mixes in
    the clean loss (``alpha = 0``, Madry et al.'s choice, trains on adversarial examples only).
    The clean loss and accuracy are still recorded, from one extra forward pass without gradients.
    """

    eps: float = 0.3
    step_size: float = 0.01
    steps: int = 40
    random_start: bool = True
    alpha: float = 0.0
    warmup: float = 0.0
    name = "pgd"

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_alpha(self.alpha)
        attacks._check_int(self.steps, "steps", minimum=1)
        attacks._check_number(self.step_size, "step_size", minimum=0.0, strict=True)
        _check_warmup(self.warmup)

    def at(self, progress: float) -> "PGDObjective":
        """The objective at ``progress`` (fraction of training steps done).

        With ``warmup > 0``, eps and the step size grow linearly from 0 to their values over
        the first ``warmup`` of training (a curriculum; Madry et al. use none). Short CPU
        budgets may need it: PGD training at eps = 0.3 from scratch can sit on the constant
        classifier (loss ln 10) for a long stretch of training.
        """
        return _warmed_up(self, progress)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> StepOutput:
        x_adv = attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                            random_start=self.random_start, generator=generator)
        if self.alpha > 0:
            logits = model(torch.cat([x, x_adv]))
            clean_logits, adv_logits = logits[: len(x)], logits[len(x):]
            clean_loss = F.cross_entropy(clean_logits, y)
            adv_loss = F.cross_entropy(adv_logits, y)
            loss = self.alpha * clean_loss + (1 - self.alpha) * adv_loss
        else:
            adv_logits = model(x_adv)
            adv_loss = loss = F.cross_entropy(adv_logits, y)
            # The monitoring pass must not touch batch-norm statistics; every submodule's own
            # mode comes back afterwards (a frozen layer stays frozen).
            with torch.no_grad(), attacks.eval_mode(model):
                clean_logits = model(x)
                clean_loss = F.cross_entropy(clean_logits, y)
        return StepOutput(loss=loss, clean_loss=clean_loss.detach(), clean_correct=_accuracy(clean_logits, y),
                          adv_loss=adv_loss.detach(), adv_correct=_accuracy(adv_logits, y))

    def monitor(self) -> MonitorAttack:
        return PGDAttack(self.eps, self.step_size, self.steps, self.random_start)


@dataclass(frozen=True)
class FastFGSMObjective(Objective):
    """FGSM adversarial training as in Wong, Rice & Kolter (2020), "Fast is better than free".

    Minimize ``J(x + delta, y)`` (adversarial examples only, like Madry et al.) with one
    signed-gradient step from a start::

        delta_0 = U(-eps, eps)   (random_start)   or   0   (the classic FGSM example)
        delta   = clip(delta_0 + step_size * sign(grad_x J(x + delta_0, y)), -eps, eps)

    and ``x + delta`` kept in [0, 1] -- one step of :func:`advcore.attacks.pgd`. With a
    zero start and ``step_size = eps`` this is FGSM training; Wong et al. find it can
    overfit *catastrophically* (robust to FGSM, not to PGD) and that a random start with
    ``step_size`` of ``1.25 eps`` avoids it.
    """

    eps: float = 0.3
    step_size: float = 0.375
    random_start: bool = True
    warmup: float = 0.0
    name = "fast_fgsm"

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        attacks._check_number(self.step_size, "step_size", minimum=0.0, strict=True)
        _check_warmup(self.warmup)

    def at(self, progress: float) -> "FastFGSMObjective":
        """The objective at ``progress``: eps and the step grow from 0 over the first ``warmup``
        of training, as in :meth:`PGDObjective.at` (from eps = 0.3 at once, a short run sits on
        the constant classifier; Wong et al. warm up the learning rate instead)."""
        return _warmed_up(self, progress)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> StepOutput:
        x_adv = attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=1,
                            random_start=self.random_start, generator=generator)
        adv_logits = model(x_adv)
        loss = F.cross_entropy(adv_logits, y)
        with torch.no_grad(), attacks.eval_mode(model):  # the clean record only, as in PGDObjective
            clean_logits = model(x)
        return StepOutput(loss=loss, clean_loss=F.cross_entropy(clean_logits, y).detach(),
                          clean_correct=_accuracy(clean_logits, y), adv_loss=loss.detach(),
                          adv_correct=_accuracy(adv_logits, y))

    def monitor(self) -> MonitorAttack:
        # PGD, not the training attack: catastrophic overfitting is invisible to FGSM.
        return PGDAttack(self.eps, 2.5 * self.eps / 10, 10)


def _check_warmup(warmup: object) -> None:
    if attacks._check_number(warmup, "warmup", minimum=0.0) >= 1.0:
        raise ValueError(f"warmup is a fraction of training in [0, 1), got {warmup}.")


def _warmed_up(objective: Any, progress: float) -> Any:
    """``objective`` with eps and its step size scaled by ``progress / warmup`` during the warm-up."""
    if progress >= objective.warmup:
        return objective
    ramp = max(progress / objective.warmup, 1e-3)
    return dataclasses.replace(objective, eps=objective.eps * ramp, step_size=objective.step_size * ramp, warmup=0.0)


OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (StandardObjective, FGSMObjective, NoiseObjective, RotationObjective,
                ScaledGradientObjective, HiddenFGSMObjective, PGDObjective, FastFGSMObjective)
}


def make_objective(name: str, **options: Any) -> Objective:
    """An objective by name (``standard``, ``fgsm``, ``noise``, ``rotation``,
    ``scaled_gradient``, ``hidden_fgsm``, ``pgd``, ``fast_fgsm``) with its options."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name](**options)


# =========================================================================== history


STEP_FIELDS = ("epoch", "step", "lr", "loss", "clean_loss", "clean_acc", "adv_loss", "adv_acc")
EPOCH_FIELDS = (
    "epoch", "step", "lr",
    "train_clean_loss", "train_clean_acc", "train_adv_loss", "train_adv_acc",
    "val_clean_loss", "val_clean_acc", "val_adv_loss", "val_adv_acc",
    "seconds",
)


def _columns(names: Sequence[str]) -> dict[str, list[float]]:
    return {name: [] for name in names}


@dataclass
class History:
    """What a training run recorded, as columns (``dict`` of equal-length lists).

    ``steps``: one row per optimizer step -- ``epoch``, ``step`` (1-based, global), ``lr``,
    ``loss`` (the objective), ``clean_loss``/``clean_acc`` and ``adv_loss``/``adv_acc`` on
    the training batch, where "adv" is the objective's own perturbed batch (FGSM, PGD,
    noise, rotation, ...; NaN for the standard objective).

    ``epochs``: one row per epoch -- clean and adversarial loss and accuracy on a fixed
    training subset (``train_*``) and on the validation set (``val_*``, NaN without one),
    where "adversarial" means the ``monitor`` attack (see ``config["monitor"]``), and the
    epoch's wall time ``seconds`` (the only field that is not reproducible).

    ``best_epoch``: the epoch whose weights the model holds after early stopping
    (``None`` without early stopping); ``stopped_early``: the patience ran out.
    """

    steps: dict[str, list[float]] = field(default_factory=lambda: _columns(STEP_FIELDS))
    epochs: dict[str, list[float]] = field(default_factory=lambda: _columns(EPOCH_FIELDS))
    config: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    stopped_early: bool = False

    def __len__(self) -> int:
        """Number of completed epochs."""
        return len(self.epochs["epoch"])

    def steps_frame(self) -> "pd.DataFrame":
        """The per-step records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.steps)

    def epochs_frame(self) -> "pd.DataFrame":
        """The per-epoch records as a pandas DataFrame (plus ``*_err = 1 - *_acc`` columns)."""
        import pandas as pd

        frame = pd.DataFrame(self.epochs)
        for column in [c for c in frame.columns if c.endswith("_acc")]:
            frame[column[:-4] + "_err"] = 1.0 - frame[column]
        return frame

    @property
    def last(self) -> dict[str, float]:
        """The last epoch's record (empty before the first epoch)."""
        return {k: v[-1] for k, v in self.epochs.items() if v}

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "epochs": self.epochs, "config": self.config,
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        return cls(steps={k: list(v) for k, v in data["steps"].items()},
                   epochs={k: list(v) for k, v in data["epochs"].items()},
                   config=dict(data.get("config", {})), best_epoch=data.get("best_epoch"),
                   stopped_early=bool(data.get("stopped_early", False)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "History":
        return cls.from_dict(json.loads(text))


# =========================================================================== checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint file is truncated, corrupted, or not one of ours."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by another training configuration (model structure, data,
    objective, optimizer, ...): resuming from it would silently return another model."""


_MAGIC = b"ADVCORE-CKPT-1\n"
_HEADER = len(_MAGIC) + 32 + 8  # magic, sha256 of the payload, payload length


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` with a checksum header, written atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = _MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "little")
    atomic_write_bytes(Path(path), header + payload)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verifying length and checksum.

    Raises:
        CheckpointError: the file is truncated, corrupted or not a checkpoint.
        FileNotFoundError: there is no file.
    """
    data = Path(path).read_bytes()
    if len(data) < _HEADER or not data.startswith(_MAGIC):
        raise CheckpointError(f"{path} is not an advcore checkpoint or is truncated (header missing).")
    digest, length = data[len(_MAGIC): len(_MAGIC) + 32], int.from_bytes(data[len(_MAGIC) + 32: _HEADER], "little")
    payload = data[_HEADER:]
    if len(payload) != length:
        raise CheckpointError(f"{path} is truncated: {len(payload)} of {length} payload bytes.")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is corrupted: its checksum does not match.")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


# =========================================================================== the loop


def _dataset_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a TensorDataset (fast path) or of any map-style dataset of pairs."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[0], dataset.tensors[1]
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def _fingerprint(x: Tensor, y: Tensor) -> str:
    """A cheap content hash of a dataset, so a checkpoint is never resumed on other data."""
    digest = hashlib.sha256()
    digest.update(str((tuple(x.shape), str(x.dtype))).encode())
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


_SIMPLE = (bool, int, float, str, type(None))


def _plain_attribute(value: Any) -> Any:
    """A module attribute as JSON-able data when it configures the module, else ``None``."""
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, _SIMPLE) for v in value):
        return list(value)
    if callable(value) and hasattr(value, "__qualname__") and not isinstance(value, nn.Module):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"  # e.g. self.act = torch.sigmoid
    return None


def model_structure(model: nn.Module) -> dict[str, Any]:
    """What a model *is*, apart from its weights: the module tree, parameters and buffers.

    For every submodule: its path, its class (module and qualified name), its
    ``extra_repr()`` (the hyperparameters PyTorch layers print: sizes, ``p`` of dropout,
    ``negative_slope``, ...) and its public plain attributes (e.g. an ``activation`` name);
    then every parameter's and buffer's name, shape and dtype. Two models with the same
    structure differ only in their weights, so a checkpoint of one may resume the other.
    """
    modules = []
    for name, module in model.named_modules():
        cls = type(module)
        attributes = {key: _plain_attribute(value) for key, value in sorted(vars(module).items())
                      if not key.startswith("_") and key != "training"}
        modules.append([name, f"{cls.__module__}.{cls.__qualname__}", module.extra_repr(),
                        {k: v for k, v in attributes.items() if v is not None}])
    return {
        "modules": modules,
        "parameters": [[n, list(p.shape), str(p.dtype)] for n, p in model.named_parameters()],
        "buffers": [[n, list(b.shape), str(b.dtype)] for n, b in model.named_buffers()],
    }


def _structure_digest(model: nn.Module) -> str:
    return hashlib.sha256(json.dumps(model_structure(model), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _training_modes(model: nn.Module) -> list[bool]:
    """Each submodule's mode while training: all ``True``, except that a submodule the user
    put in ``eval()`` inside a model in training mode (a frozen batch-norm layer) stays in eval."""
    modules = list(model.modules())
    if not model.training:  # the whole model in eval: nothing singled out, train everything
        return [True] * len(modules)
    return [module.training for module in modules]


def _set_modes(model: nn.Module, modes: list[bool]) -> None:
    for module, mode in zip(model.modules(), modes):
        module.training = mode


@contextlib.contextmanager
def _restoring_modes(model: nn.Module) -> Iterator[list[bool]]:
    """Yield the training modes (:func:`_training_modes`); on exit, also on an interrupt or an
    error, every submodule gets back its own mode from before (as :func:`attacks.eval_mode`)."""
    before = [module.training for module in model.modules()]
    training_modes = _training_modes(model)
    try:
        yield training_modes
    finally:
        _set_modes(model, before)


def _check_arguments(**values: Any) -> None:
    """The numeric options of :func:`train`, each with a message that names it."""
    check_int, check_number = attacks._check_int, attacks._check_number
    check_int(values["epochs"], "epochs", minimum=0)
    check_int(values["batch_size"], "batch_size", minimum=1)
    check_int(values["eval_batch_size"], "eval_batch_size", minimum=1)
    check_int(values["seed"], "seed", minimum=0)
    check_number(values["lr"], "lr", minimum=0.0, strict=True)
    check_number(values["momentum"], "momentum", minimum=0.0)
    check_number(values["weight_decay"], "weight_decay", minimum=0.0)
    check_number(values["lr_gamma"], "lr_gamma", minimum=0.0, strict=True)
    for milestone in values["lr_milestones"]:
        if check_number(milestone, "an lr_milestones entry", minimum=0.0) > 1:
            raise ValueError(f"lr_milestones are fractions of training in [0, 1], got {milestone!r}.")
    if values["patience"] is not None:
        check_int(values["patience"], "patience", minimum=1)
    if values["eval_train_examples"] is not None:
        check_int(values["eval_train_examples"], "eval_train_examples", minimum=0)


def _check_model_on_data(model: nn.Module, x: Tensor, y: Tensor, largest_label: int) -> None:
    """One forward pass on a few training images (eval mode, no gradient, no RNG drawn by
    standard layers): the model returns finite logits ``(N, C)`` with ``C > largest_label``."""
    with torch.no_grad(), attacks.eval_mode(model):
        logits = model(x[:2])
    # The batch's labels, with the largest label of all the data in their place: checked as
    # the attacks check theirs (shape, number of classes, NaN, probabilities instead of logits).
    labels = y[:2].clone()
    labels[0] = largest_label
    attacks._check_logits(logits, labels, grad_needed=False)


#: A training loss this many times its value over the first steps counts as diverging.
DIVERGENCE_FACTOR = 4.0


def _warn_if_diverging(history: "History") -> bool:
    """Warn (and return True) when the training loss became NaN/infinite or grew far above its start."""
    losses = history.steps["loss"]
    if not losses:
        return False
    first_epoch = sum(1 for e in history.steps["epoch"] if e == history.steps["epoch"][0])
    head = losses[:max(1, min(10, first_epoch // 4))]  # the loss of the model training started from
    start = sum(head) / len(head)
    epoch = history.steps["epoch"][-1]
    recent = [loss for loss, e in zip(losses, history.steps["epoch"]) if e == epoch]
    bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    if bad is not None:
        what = f"became {losses[bad]} at step {bad + 1}: the weights are no longer numbers"
    elif recent and math.isfinite(start) and sum(recent) / len(recent) > DIVERGENCE_FACTOR * max(start, 0.1):
        what = (f"diverges: its mean in epoch {epoch} is {sum(recent) / len(recent):.3g}, more than "
                f"{DIVERGENCE_FACTOR:g} times its {start:.3g} at the start")
    else:
        return False
    attacks._warn(f"The training loss {what}. Lower the learning rate (e.g. lr / 10), check that the "
                  "inputs are images in [0, 1] and the labels class indices, then train again from a "
                  "fresh model.")
    return True


def _lr_at(epoch: int, epochs: int, lr: float, milestones: Sequence[float], gamma: float) -> float:
    """Piecewise-constant schedule: ``lr * gamma^k`` after ``k`` milestones (fractions of training)."""
    return lr * gamma ** sum(epoch >= round(m * epochs) for m in milestones)


def _make_optimizer(name: str, params: Any, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', not {name!r}.")


@torch.no_grad()
def _evaluate(
    model: nn.Module, x: Tensor, y: Tensor, *, attack: MonitorAttack | None, batch_size: int,
    generator: torch.Generator, device: torch.device, precision: str | None = None,
) -> tuple[float, float, float, float]:
    """Clean and adversarial (mean loss, accuracy) of ``model`` on ``(x, y)``; one host sync."""
    with attacks.autocast(precision, device):
        return _evaluate_sums(model, x, y, attack=attack, batch_size=batch_size, generator=generator,
                              device=device)


def _evaluate_sums(
    model: nn.Module, x: Tensor, y: Tensor, *, attack: MonitorAttack | None, batch_size: int,
    generator: torch.Generator, device: torch.device,
) -> tuple[float, float, float, float]:
    model.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        yb = y[start:start + batch_size].to(device, non_blocking=True)
        logits = model(xb)
        sums[0] += F.cross_entropy(logits.float(), yb, reduction="sum")
        sums[1] += (logits.argmax(1) == yb).sum()
        if attack is not None:
            x_adv = attack(model, xb, yb, generator)
            adv_logits = model(x_adv)
            sums[2] += F.cross_entropy(adv_logits.float(), yb, reduction="sum")
            sums[3] += (adv_logits.argmax(1) == yb).sum()
    values = (sums / max(len(x), 1)).tolist()
    if attack is None:
        values[2] = values[3] = math.nan
    return values[0], values[1], values[2], values[3]


def _attack_name(attack: MonitorAttack | None) -> str | None:
    if attack is None:
        return None
    return attack.describe() if hasattr(attack, "describe") else repr(attack)


def train(
    model: nn.Module,
    train_set: Dataset,
    *,
    objective: Objective | str = "standard",
    val_set: Dataset | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    optimizer: Literal["adam", "sgd"] = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    lr_milestones: Sequence[float] = (),
    lr_gamma: float = 0.1,
    monitor: MonitorAttack | None | Literal["default"] = "default",
    eval_train_examples: int | None = 1000,
    eval_batch_size: int = 1000,
    early_stopping: bool = False,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    until_epoch: int | None = None,
    precision: attacks.Precision | None = None,
    progress: bool = True,
    description: str | None = None,
) -> History:
    """Train ``model`` in place on ``train_set`` with ``objective``; return its :class:`History`.

    Args:
        model: any ``nn.Module`` mapping [0, 1] images to logits (moved to ``device``).
        train_set: a ``TensorDataset`` ``(x, y)`` (any map-style dataset of pairs works).
        objective: an :class:`Objective` or its name (``"standard"``, ``"fgsm"``, ...).
        val_set: validation data for the epoch records and early stopping.
        epochs: passes over ``train_set``; each is shuffled by a generator seeded from ``seed``.
        batch_size, optimizer, lr, momentum, weight_decay: the optimizer (Adam or SGD).
        lr_milestones, lr_gamma: multiply the learning rate by ``lr_gamma`` at these
            fractions of training (e.g. ``(0.5, 0.75)``: Madry et al.'s CIFAR schedule).
        monitor: the attack behind the epoch records' adversarial columns,
            ``(model, x, y, generator) -> x_adv`` (:class:`FGSMAttack`, :class:`PGDAttack`);
            ``"default"``: the objective's own attack; ``None``: none (NaN columns).
        eval_train_examples: the first this-many training examples are evaluated after each
            epoch (``None``: all; ``0``: none, NaN columns).
        early_stopping: keep the weights of the epoch with the lowest adversarial validation
            error (needs ``val_set`` and a monitor); ``patience``: stop after this many
            epochs without improvement (``None``: run all epochs, then restore the best).
        seed: seeds shuffling, random starts, noise and dropout; on CPU the same seed gives
            the same result, bit for bit. The caller's global RNG state is left untouched.
        device: where to train (default: CUDA when available). The data is moved there once.
        checkpoint: a file path. After each epoch the full state (model, optimizer, RNG
            states, history, best weights) is written there atomically; if the file exists,
            training resumes from it -- an interrupted run (e.g. ``KeyboardInterrupt``)
            continues to exactly the result of an uninterrupted one. A truncated or
            corrupted file raises :class:`CheckpointError`; a checkpoint of another
            configuration raises ``ValueError``. A checkpoint without optimizer state
            (rebuilt from committed weights, see :mod:`advcore.longrun`) resumes with a
            fresh optimizer.
        until_epoch: stop after this epoch (checkpointed) instead of ``epochs``: one piece of
            a long run; calling again with the same arguments continues. The schedule (and
            the history's config) is still the one of ``epochs``.
        precision: arithmetic of the objective's forward passes (its attack included) and
            of the epoch evaluations, see :func:`advcore.attacks.autocast`: ``None``
            (float32), ``"bfloat16"`` (CPU with AVX-512 BF16/AMX, or CUDA) or ``"float16"``
            (CUDA, with a gradient scaler). Recorded in the history's config.
        progress: show a ``tqdm`` progress bar; ``description`` labels it.

    Speed: a conv net trains channels-last where that pays (:data:`advcore.attacks.CHANNELS_LAST`:
    CUDA and AVX-512 CPUs; :func:`advcore.attacks.fast_memory_format` hands the model back in
    its own layout).

    Modes: while training, every submodule is in training mode, except that in a model in
    training mode a submodule the caller put in ``eval()`` (a frozen batch-norm layer) stays
    in eval. On return, and after an interrupt or an error, every submodule has its own mode
    from before the call back (evaluate with :func:`advcore.evaluate.evaluate`, which uses
    eval mode, or call ``model.eval()``).

    Bad input: images outside [0, 1] or NaN, labels that are not class indices below the
    model's number of classes, NaN logits, and non-numeric options raise ``ValueError``;
    outputs that look like probabilities, ``eps > 1`` and a diverging loss warn.

    Returns:
        The :class:`History`. The model holds the final weights, or the best epoch's
        weights with ``early_stopping``.
    """
    if isinstance(objective, str):
        objective = make_objective(objective)
    if until_epoch is not None:
        attacks._check_int(until_epoch, "until_epoch", minimum=1)
    _check_arguments(epochs=epochs, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, lr_gamma=lr_gamma, lr_milestones=lr_milestones,
                     patience=patience, eval_train_examples=eval_train_examples)
    if monitor == "default":
        monitor = objective.monitor()
    if early_stopping and (val_set is None or monitor is None):
        raise ValueError("early_stopping needs val_set and a monitor attack (the adversarial validation error).")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    x_train, y_train = _dataset_tensors(train_set)
    if len(x_train) == 0:
        raise ValueError("train_set is empty.")
    x_val, y_val = _dataset_tensors(val_set) if val_set is not None else (None, None)
    # The conventions of the attacks: images in [0, 1] (not normalized, no NaN), labels (N,) of class indices.
    y_train = attacks._check_labels(y_train, attacks._check_images(x_train))
    if x_val is not None:
        y_val = attacks._check_labels(y_val, attacks._check_images(x_val))
    n_eval = len(x_train) if eval_train_examples is None else min(eval_train_examples, len(x_train))

    config: dict[str, Any] = {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "structure": _structure_digest(model),  # layers, activations, hyperparameters, shapes
        "objective": objective.config(),
        "monitor": _attack_name(monitor),
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum if optimizer == "sgd" else None,
        "weight_decay": weight_decay,
        "lr_milestones": list(lr_milestones),
        "lr_gamma": lr_gamma,
        "early_stopping": early_stopping,
        "patience": patience,
        "seed": seed,
        "train_examples": len(x_train),
        "val_examples": 0 if x_val is None else len(x_val),
        "eval_train_examples": n_eval,
        "data": _fingerprint(x_train, y_train) + ("" if x_val is None else "/" + _fingerprint(x_val, y_val)),
    }
    if precision is not None:  # absent for float32, so float32 checkpoints of older runs still resume
        config["precision"] = attacks.check_precision(precision)
        if precision == "float16" and device.type != "cuda":
            raise ValueError("precision='float16' needs CUDA; on the CPU use 'bfloat16' or None (float32).")
    config_key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()

    model.to(device)
    x_train, y_train = x_train.to(device), y_train.to(device)
    if x_val is not None:
        x_val, y_val = x_val.to(device), y_val.to(device)
    opt = _make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    shuffle_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)  # random starts, noise, rotations

    # float16 gradients underflow without loss scaling; a disabled scaler passes everything through.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "float16")
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), _restoring_modes(model) as training_modes, \
            attacks.fast_memory_format(model, x_train[:1]):
        _check_model_on_data(model, x_train, y_train, int(max(y_train.max(), -1 if y_val is None else y_val.max())))
        torch.manual_seed(seed)  # dropout masks
        diverging = False
        history = History(config=config)
        best_metric, best_state, bad_epochs, start_epoch = math.inf, None, 0, 0
        if checkpoint is not None and Path(checkpoint).exists():
            state = load_checkpoint(checkpoint, map_location=device)
            # config_key None: rebuilt by advcore.longrun, which has checked the run's recipe itself.
            if state.get("config_key") is not None and state["config_key"] != config_key:
                raise CheckpointMismatchError(
                    f"The checkpoint {checkpoint} was written by a different training configuration "
                    "(model structure, data, objective or optimizer settings); "
                    "delete it or pass another `checkpoint` path to start afresh."
                )
            model.load_state_dict(state["model"])
            if state.get("optimizer") is not None:
                opt.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            shuffle_gen.set_state(state["shuffle_rng"].cpu())
            noise_gen.set_state(state["noise_rng"].cpu())
            torch.set_rng_state(state["torch_rng"].cpu())
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
            history = History.from_dict(state["history"])
            best_metric, bad_epochs, start_epoch = state["best_metric"], state["bad_epochs"], state["epoch"]
            best_state = state.get("best_model")
            if state.get("finished"):
                start_epoch = epochs

        steps_per_epoch = math.ceil(len(x_train) / batch_size)
        total_steps = max(epochs * steps_per_epoch, 1)
        scheduled = hasattr(objective, "at")
        from tqdm.auto import tqdm

        last_epoch = epochs if until_epoch is None else min(until_epoch, epochs)
        # The bar (and its ETA) covers what this call trains: a piece of a long run, or all of it.
        with tqdm(total=last_epoch * steps_per_epoch, initial=start_epoch * steps_per_epoch, disable=not progress,
                  desc=description or f"{type(model).__name__} ({objective.name})", unit="step",
                  leave=False, dynamic_ncols=True) as bar:
            for epoch in range(start_epoch, last_epoch):
                started = time.perf_counter()
                epoch_lr = _lr_at(epoch, epochs, lr, lr_milestones, lr_gamma)
                for group in opt.param_groups:
                    group["lr"] = epoch_lr
                first_step = epoch * steps_per_epoch
                order = torch.randperm(len(x_train), generator=shuffle_gen).to(device)
                records: list[Tensor] = []
                nan = torch.tensor(math.nan, device=device)
                _set_modes(model, training_modes)  # train(), but a layer the caller froze stays frozen
                for step in range(steps_per_epoch):
                    index = order[step * batch_size:(step + 1) * batch_size]
                    xb, yb = x_train[index], y_train[index]
                    # An objective with a schedule (PGD's eps warm-up) is asked for this step's version.
                    step_objective = objective.at((first_step + step) / total_steps) if scheduled else objective
                    with attacks.autocast(precision, device):
                        out = step_objective(model, xb, yb, noise_gen)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(out.loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    apply_constraints(model)  # e.g. the maxout networks' max-norm (Goodfellow et al. 2013)
                    # Stay on the device: the records are copied to the host once per epoch.
                    records.append(torch.stack([
                        out.loss.detach().float(), out.clean_loss.float(), out.clean_correct.float(),
                        nan if out.adv_loss is None else out.adv_loss.float(),
                        nan if out.adv_correct is None else out.adv_correct.float(),
                    ]))
                    bar.update(1)

                for i, (loss, c_loss, c_acc, a_loss, a_acc) in enumerate(torch.stack(records).cpu().tolist()):
                    row = {"epoch": epoch + 1, "step": first_step + i + 1, "lr": epoch_lr, "loss": loss,
                           "clean_loss": c_loss, "clean_acc": c_acc, "adv_loss": a_loss, "adv_acc": a_acc}
                    for key, value in row.items():
                        history.steps[key].append(value)

                # The epoch's evaluations draw from their own generator, seeded by epoch, so they
                # never shift the training stream of random numbers.
                eval_gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch + 17)
                train_metrics = (math.nan,) * 4
                if n_eval > 0:
                    train_metrics = _evaluate(model, x_train[:n_eval], y_train[:n_eval], attack=monitor,
                                              batch_size=eval_batch_size, generator=eval_gen, device=device,
                                              precision=precision)
                val_metrics = (math.nan,) * 4
                if x_val is not None:
                    val_metrics = _evaluate(model, x_val, y_val, attack=monitor, batch_size=eval_batch_size,
                                            generator=eval_gen, device=device, precision=precision)
                row = {"epoch": epoch + 1, "step": first_step + steps_per_epoch, "lr": epoch_lr,
                       "train_clean_loss": train_metrics[0], "train_clean_acc": train_metrics[1],
                       "train_adv_loss": train_metrics[2], "train_adv_acc": train_metrics[3],
                       "val_clean_loss": val_metrics[0], "val_clean_acc": val_metrics[1],
                       "val_adv_loss": val_metrics[2], "val_adv_acc": val_metrics[3],
                       "seconds": time.perf_counter() - started}
                for key, value in row.items():
                    history.epochs[key].append(value)
                diverging = diverging or _warn_if_diverging(history)
                bar.set_postfix(epoch=epoch + 1, train_adv_acc=f"{train_metrics[3]:.3f}",
                                val_acc=f"{val_metrics[1]:.3f}", val_adv_acc=f"{val_metrics[3]:.3f}")

                stop = False
                if early_stopping:
                    metric = 1.0 - val_metrics[3]  # adversarial validation error
                    if metric < best_metric:
                        best_metric, bad_epochs, history.best_epoch = metric, 0, epoch + 1
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        bad_epochs += 1
                        stop = patience is not None and bad_epochs >= patience
                    history.stopped_early = stop
                finished = stop or epoch + 1 == epochs
                if checkpoint is not None:
                    save_checkpoint(checkpoint, {
                        "format": 1, "config_key": config_key, "epoch": epoch + 1, "finished": finished,
                        "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "shuffle_rng": shuffle_gen.get_state(), "noise_rng": noise_gen.get_state(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "history": history.to_dict(), "best_metric": best_metric, "bad_epochs": bad_epochs,
                        "best_model": best_state,
                    })
                if stop:
                    break

    if early_stopping and best_state is not None and (history.stopped_early or len(history) == epochs):
        model.load_state_dict(best_state)
    return history
