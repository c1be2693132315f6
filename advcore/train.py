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

from advcore import attacks, checks, storage
from advcore.models import apply_constraints
from advcore.storage import atomic_write_bytes

if TYPE_CHECKING:  # pandas is imported lazily: only the frames need it
    import pandas as pd

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "FGSMAttack",
    "FAST_FGSM_STEP",
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
    "TrainConfig",
    "alpha_mix",
    "load_checkpoint",
    "model_structure",
    "save_checkpoint",
    "train",
]


# =========================================================================== attacks used to monitor


def FGSMAttack(eps: float) -> attacks.AttackSpec:  # noqa: N802 -- the name of the monitor it makes
    """FGSM at ``eps`` as a training monitor: an :class:`advcore.attacks.AttackSpec`."""
    return attacks.AttackSpec("fgsm", eps)


def PGDAttack(eps: float, step_size: float, steps: int, random_start: bool = True) -> attacks.AttackSpec:  # noqa: N802
    """PGD (Madry et al.) as a training monitor: an :class:`advcore.attacks.AttackSpec`."""
    return attacks.AttackSpec("pgd", eps, step_size, steps, random_start=random_start)


#: A monitor: ``(model, x, y, generator) -> x_adv``, e.g. an :class:`advcore.attacks.AttackSpec`.
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
    if checks.check_number(alpha, "alpha", minimum=0.0) > 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")


def _check_adversary_mode(mode: str) -> None:
    if mode not in ("eval", "train"):
        raise ValueError(f"adversary_mode must be 'eval' (the adversary sees the eval-mode network, as an "
                         f"attack does) or 'train' (the network as it trains, dropout on), got {mode!r}.")


def _check_eps(eps: float, name: str = "eps") -> None:
    """A finite ``eps >= 0``; ``eps > 1`` warns (probably meant on the 0..255 scale)."""
    checks.check_number(eps, name, minimum=0.0)


def alpha_mix(clean_loss: Tensor, adv_loss: Tensor, alpha: float) -> Tensor:
    """Goodfellow et al. 2015, Sec. 6: ``J~ = alpha J(x, y) + (1 - alpha) J(x_adv, y)`` (the paper: alpha = 0.5).

    The one place the clean and the perturbed loss are mixed: the FGSM objective, its
    controls (noise, rotation, scaled gradient, hidden layers) and PGD training with a clean
    term (``alpha > 0``) all use it. Scalars in, a scalar out.
    """
    return alpha * clean_loss + (1.0 - alpha) * adv_loss


def _mixed_step(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, alpha: float) -> StepOutput:
    """The clean and the perturbed batch in one forward pass, their losses mixed by :func:`alpha_mix`."""
    logits = model(torch.cat([x, x_adv]))
    clean_logits, adv_logits = logits[: len(x)], logits[len(x):]
    clean_loss = F.cross_entropy(clean_logits, y)
    adv_loss = F.cross_entropy(adv_logits, y)
    return StepOutput(loss=alpha_mix(clean_loss, adv_loss, alpha), clean_loss=clean_loss.detach(),
                      clean_correct=_accuracy(clean_logits, y), adv_loss=adv_loss.detach(),
                      adv_correct=_accuracy(adv_logits, y))


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
        return _mixed_step(model, x, x_perturbed, y, self.alpha)


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


AdversaryMode = Literal["eval", "train"]


def differentiable_input_gradient(model: nn.Module, x: Tensor, y: Tensor, *,
                                  mode: AdversaryMode = "eval") -> Tensor:
    """``grad_x J(model(x), y)`` (summed cross-entropy) as a function of the parameters.

    Unlike :func:`advcore.attacks.input_gradient` the result keeps its graph (``create_graph=True``), so a
    loss computed from it can be differentiated with respect to the parameters (double
    backpropagation). ``mode="eval"``: the forward pass is in eval mode (dropout off), as in
    every attack, and the model's modes are restored afterwards. ``mode="train"``: in the mode
    the model is in, i.e. the training pass's (dropout on, a fresh mask). Why it matters: the
    training loss never scores the eval-mode network's predictions, only its gradient, so
    with ``"eval"`` the optimizer may bend the eval-mode network (the one that is tested) to
    steer the adversary. Measured at the paper-scale SGD recipe (rotation control, dropout
    maxout network): validation accuracy 92% after one epoch, 32% after four, when the test
    images scored 28% in eval mode and 93% in train mode; with ``"train"``, 96.6% after one
    epoch and 98.0% after four. Shape: ``x.shape``.
    """
    _check_adversary_mode(mode)
    with (attacks.eval_mode(model) if mode == "eval" else contextlib.nullcontext()), torch.enable_grad():
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
    adversary_mode: AdversaryMode = "eval"  # see differentiable_input_gradient
    name = "rotation"
    differentiable = True

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        _check_adversary_mode(self.adversary_mode)
        if checks.check_number(self.degrees, "degrees", minimum=0.0) > 90:
            raise ValueError(f"degrees must be in [0, 90] (a small angle), got {self.degrees}.")

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return rotate_towards(x, differentiable_input_gradient(model, x, y, mode=self.adversary_mode), self.degrees)

    def monitor(self) -> MonitorAttack:
        return FGSMAttack(self.monitor_eps)


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
    adversary_mode: AdversaryMode = "eval"  # see differentiable_input_gradient
    name = "scaled_gradient"
    differentiable = True

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_alpha(self.alpha)
        _check_adversary_mode(self.adversary_mode)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return scaled_gradient_step(x, differentiable_input_gradient(model, x, y, mode=self.adversary_mode), self.eps)

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
        loss = alpha_mix(clean_loss, adv_loss, self.alpha)
        return StepOutput(loss=loss, clean_loss=clean_loss.detach(), clean_correct=_accuracy(logits, y),
                          adv_loss=adv_loss.detach(), adv_correct=_accuracy(adv_logits, y))

    def monitor(self) -> MonitorAttack:
        return FGSMAttack(self.monitor_eps)


#: Wong, Rice & Kolter (2020)'s FGSM-training step from a random start, as a multiple of eps
#: (1.25 eps; a step of eps from a zero start overfits catastrophically).
FAST_FGSM_STEP: float = 1.25


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
    fast_start: float = 0.0
    name = "pgd"

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_alpha(self.alpha)
        checks.check_int(self.steps, "steps", minimum=1)
        checks.check_number(self.step_size, "step_size", minimum=0.0, strict=True)
        _check_fraction(self.warmup, "warmup")
        _check_fraction(self.fast_start, "fast_start")
        if self.fast_start and self.alpha:
            raise ValueError("fast_start trains on one-step FGSM examples only (Wong et al. 2020), which has no "
                             f"clean-loss term; use alpha = 0 with it (got alpha = {self.alpha}).")

    def at(self, progress: float) -> "PGDObjective | FastFGSMObjective":
        """The objective at ``progress`` (fraction of training steps done).

        With ``warmup > 0``, eps and the step size grow linearly from 0 to their values over
        the first ``warmup`` of training (a curriculum; Madry et al. use none). Short CPU
        budgets may need it: PGD training at eps = 0.3 from scratch can sit on the constant
        classifier (loss ln 10) for a long stretch of training.

        With ``fast_start > 0``, the first ``fast_start`` of training is a warm start with Wong,
        Rice & Kolter (2020)'s one-step FGSM from a random start (:class:`FastFGSMObjective`,
        step ``FAST_FGSM_STEP * eps``: one gradient step per example instead of ``steps``);
        PGD takes over after it. (Not Madry et al.'s recipe: a way to afford PGD training on
        a CPU, see :mod:`advcore.longrun`.)
        """
        if progress < self.fast_start:
            return FastFGSMObjective(eps=self.eps, step_size=FAST_FGSM_STEP * self.eps, random_start=True,
                                     warmup=self.warmup).at(progress)
        return _warmed_up(self, progress)

    def config(self) -> dict[str, Any]:
        config = super().config()
        if not self.fast_start:  # runs recorded before the option existed keep their keys
            del config["fast_start"]
        return config

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> StepOutput:
        x_adv = attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                            random_start=self.random_start, generator=generator)
        if self.alpha > 0:
            return _mixed_step(model, x, x_adv, y, self.alpha)
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
    ``step_size`` of ``1.25 eps`` (``FAST_FGSM_STEP``) avoids it.
    """

    eps: float = 0.3
    step_size: float = 0.375  # FAST_FGSM_STEP * eps
    random_start: bool = True
    warmup: float = 0.0
    name = "fast_fgsm"

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        checks.check_number(self.step_size, "step_size", minimum=0.0, strict=True)
        _check_fraction(self.warmup, "warmup")

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
        return PGDAttack(self.eps, attacks.pgd_step_size(self.eps, 10), 10)


def _check_fraction(value: object, name: str) -> None:
    if checks.check_number(value, name, minimum=0.0) >= 1.0:
        raise ValueError(f"{name} is a fraction of training in [0, 1), got {value}.")


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
    return storage.json_digest(model_structure(model))[:16]


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
    check_int, check_number = checks.check_int, checks.check_number
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
    checks.check_logits(logits, labels, grad_needed=False)


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
    checks.warn(f"The training loss {what}. Lower the learning rate (e.g. lr / 10), check that the "
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
    """Clean and adversarial (mean loss, accuracy) of ``model`` on ``(x, y)``, in eval mode; one host sync."""
    with attacks.autocast(precision, device), attacks.eval_mode(model):
        return _evaluate_sums(model, x, y, attack=attack, batch_size=batch_size, generator=generator,
                              device=device)


def _evaluate_sums(
    model: nn.Module, x: Tensor, y: Tensor, *, attack: MonitorAttack | None, batch_size: int,
    generator: torch.Generator, device: torch.device,
) -> tuple[float, float, float, float]:
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




# --------------------------------------------------------------------------- the configuration


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does: every option of :func:`train` that changes its result, checked once.

    The one list of training options: :func:`train` takes them as keywords (or a whole
    ``config=``), the history records them and the checkpoint's key is computed from them
    (:meth:`record`), so a checkpoint resumes only the run that wrote it. The zoo's recipes
    become a training call in one place, :func:`advcore.zoo.training_options`.

    Attributes:
        objective: an :class:`Objective` or its name (``"standard"``, ``"fgsm"``, ...).
        epochs: passes over the training set; each is shuffled by a generator seeded from ``seed``.
        batch_size, optimizer, lr, momentum, weight_decay: the optimizer (Adam or SGD; ``momentum``
            is SGD's).
        lr_milestones, lr_gamma: multiply the learning rate by ``lr_gamma`` at these
            fractions of training (e.g. ``(0.5, 0.75)``: Madry et al.'s CIFAR schedule).
        monitor: the attack behind the epoch records' adversarial columns,
            ``(model, x, y, generator) -> x_adv`` (an :class:`advcore.attacks.AttackSpec`, e.g. :func:`FGSMAttack`);
            ``"default"``: the objective's own attack; ``None``: none (NaN columns).
        eval_train_examples: the first this-many training examples are evaluated after each
            epoch (``None``: all; ``0``: none, NaN columns); ``eval_batch_size``: their batches.
        early_stopping: keep the weights of the epoch with the lowest adversarial validation
            error (needs a validation set and a monitor); ``patience``: stop after this many
            epochs without improvement (``None``: run all epochs, then restore the best).
        seed: seeds shuffling, random starts, noise and dropout; on CPU the same seed gives
            the same result, bit for bit.
        precision: arithmetic of the objective's forward passes (its attack included) and
            of the epoch evaluations, see :func:`advcore.attacks.autocast`: ``None``
            (float32), ``"bfloat16"`` (CPU with AVX-512 BF16/AMX, or CUDA) or ``"float16"``
            (CUDA, with a gradient scaler).
    """

    objective: Objective | str = "standard"
    epochs: int = 1
    batch_size: int = 128
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: Sequence[float] = ()
    lr_gamma: float = 0.1
    monitor: MonitorAttack | None | Literal["default"] = "default"
    eval_train_examples: int | None = 1000
    eval_batch_size: int = 1000
    early_stopping: bool = False
    patience: int | None = None
    seed: int = 0
    precision: attacks.Precision | None = None

    def __post_init__(self) -> None:
        if isinstance(self.objective, str):
            object.__setattr__(self, "objective", make_objective(self.objective))
        _check_arguments(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        if isinstance(self.monitor, str) and self.monitor == "default":
            object.__setattr__(self, "monitor", self.objective.monitor())
        if self.early_stopping and self.monitor is None:
            raise ValueError("early_stopping needs val_set and a monitor attack (the adversarial validation error).")
        attacks.check_precision(self.precision)

    def record(self, model: nn.Module, data: "_Data") -> dict[str, Any]:
        """The run as the history records it and the checkpoint key hashes it (do not change the layout:
        it keys every checkpoint, the committed long runs' included)."""
        record: dict[str, Any] = {
            "model": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "structure": _structure_digest(model),  # layers, activations, hyperparameters, shapes
            "objective": self.objective.config(),
            "monitor": _attack_name(self.monitor),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum if self.optimizer == "sgd" else None,
            "weight_decay": self.weight_decay,
            "lr_milestones": list(self.lr_milestones),
            "lr_gamma": self.lr_gamma,
            "early_stopping": self.early_stopping,
            "patience": self.patience,
            "seed": self.seed,
            "train_examples": len(data.x_train),
            "val_examples": 0 if data.x_val is None else len(data.x_val),
            "eval_train_examples": data.n_eval,
            "data": data.fingerprint,
        }
        if self.precision is not None:  # absent for float32, so float32 checkpoints of older runs still resume
            record["precision"] = self.precision
        return record


@dataclass
class _Data:
    """The training (and validation) tensors, checked, with the evaluated subset and a fingerprint."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor | None
    y_val: Tensor | None
    n_eval: int  # the training examples evaluated after each epoch
    fingerprint: str  # of the content, so a checkpoint is never resumed on other data

    @classmethod
    def of(cls, train_set: Dataset, val_set: Dataset | None, eval_train_examples: int | None) -> "_Data":
        x_train, y_train = _dataset_tensors(train_set)
        if len(x_train) == 0:
            raise ValueError("train_set is empty.")
        x_val, y_val = _dataset_tensors(val_set) if val_set is not None else (None, None)
        # The conventions of the attacks: images in [0, 1] (not normalized, no NaN), labels (N,) of class indices.
        y_train = checks.check_labels(y_train, checks.check_images(x_train))
        if x_val is not None:
            y_val = checks.check_labels(y_val, checks.check_images(x_val))
        n_eval = len(x_train) if eval_train_examples is None else min(eval_train_examples, len(x_train))
        fingerprint = _fingerprint(x_train, y_train) + ("" if x_val is None else "/" + _fingerprint(x_val, y_val))
        return cls(x_train, y_train, x_val, y_val, n_eval, fingerprint)

    def to(self, device: torch.device) -> "_Data":
        moved = [None if t is None else t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val)]
        return _Data(*moved, self.n_eval, self.fingerprint)

    @property
    def largest_label(self) -> int:
        return int(max(self.y_train.max(), -1 if self.y_val is None else self.y_val.max()))


# --------------------------------------------------------------------------- the state of a run


@dataclass
class _Run:
    """Everything a training run carries from epoch to epoch: what a checkpoint saves and restores."""

    model: nn.Module
    config: TrainConfig
    data: _Data
    device: torch.device
    key: str  # of the configuration (:meth:`TrainConfig.record`): a checkpoint of another run is refused
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    shuffle_gen: torch.Generator
    noise_gen: torch.Generator  # random starts, noise, rotations
    history: History
    best_metric: float = math.inf
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0
    epoch: int = 0  # epochs done
    diverging: bool = False  # warned once

    @classmethod
    def start(cls, model: nn.Module, config: TrainConfig, data: _Data, device: torch.device,
              record: dict[str, Any]) -> "_Run":
        """A fresh run of ``model`` (already on ``device``) whose configuration is ``record``."""
        optimizer = _make_optimizer(config.optimizer, model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        # float16 gradients underflow without loss scaling; a disabled scaler passes everything through.
        scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "float16")
        return cls(model, config, data, device, storage.json_digest(record), optimizer, scaler,
                   shuffle_gen=torch.Generator().manual_seed(config.seed),
                   noise_gen=torch.Generator(device=device).manual_seed(config.seed + 1),
                   history=History(config=record))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.x_train) / self.config.batch_size)


def _checkpoint_state(run: _Run, *, finished: bool) -> dict[str, Any]:
    """The full state after ``run.epoch`` epochs: resuming from it continues bit for bit (on CPU)."""
    cuda = run.device.type == "cuda"
    return {
        "format": 1, "config_key": run.key, "epoch": run.epoch, "finished": finished,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "shuffle_rng": run.shuffle_gen.get_state(), "noise_rng": run.noise_gen.get_state(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(run.device) if cuda else None,
        "history": run.history.to_dict(), "best_metric": run.best_metric, "bad_epochs": run.bad_epochs,
        "best_model": run.best_state,
    }


def _resume(run: _Run, checkpoint: Path) -> None:
    """Restore ``run`` from the checkpoint file (written by :func:`_checkpoint_state` of the same run)."""
    state = load_checkpoint(checkpoint, map_location=run.device)
    # config_key None: rebuilt by advcore.longrun, which has checked the run's recipe itself.
    if state.get("config_key") is not None and state["config_key"] != run.key:
        raise CheckpointMismatchError(
            f"The checkpoint {checkpoint} was written by a different training configuration "
            "(model structure, data, objective or optimizer settings); "
            "delete it or pass another `checkpoint` path to start afresh."
        )
    run.model.load_state_dict(state["model"])
    if state.get("optimizer") is not None:  # None: rebuilt from committed weights, a fresh optimizer
        run.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.shuffle_gen.set_state(state["shuffle_rng"].cpu())
    run.noise_gen.set_state(state["noise_rng"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if run.device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), run.device)
    run.history = History.from_dict(state["history"])
    run.best_metric, run.bad_epochs, run.epoch = state["best_metric"], state["bad_epochs"], state["epoch"]
    run.best_state = state.get("best_model")
    if state.get("finished"):
        run.epoch = run.config.epochs


# --------------------------------------------------------------------------- one epoch


def _fit_epoch(run: _Run, training_modes: list[bool], bar: Any) -> None:
    """One pass over the shuffled training set: for each batch, the objective and an optimizer step."""
    config, data, epoch = run.config, run.data, run.epoch
    epoch_lr = _lr_at(epoch, config.epochs, config.lr, config.lr_milestones, config.lr_gamma)
    for group in run.optimizer.param_groups:
        group["lr"] = epoch_lr
    first_step, total_steps = epoch * run.steps_per_epoch, max(config.epochs * run.steps_per_epoch, 1)
    order = torch.randperm(len(data.x_train), generator=run.shuffle_gen).to(run.device)
    records: list[Tensor] = []
    _set_modes(run.model, training_modes)  # train(), but a layer the caller froze stays frozen
    for step in range(run.steps_per_epoch):
        index = order[step * config.batch_size:(step + 1) * config.batch_size]
        # An objective with a schedule (PGD's eps warm-up) is asked for this step's version.
        objective = config.objective.at((first_step + step) / total_steps) if hasattr(config.objective, "at") \
            else config.objective
        records.append(_train_step(run, objective, data.x_train[index], data.y_train[index]))
        bar.update(1)
    _record_steps(run.history, epoch, first_step, epoch_lr, records)


def _train_step(run: _Run, objective: Objective, xb: Tensor, yb: Tensor) -> Tensor:
    """One optimizer step on the objective's loss; returns the step's record (stays on the device)."""
    with attacks.autocast(run.config.precision, run.device):
        out = objective(run.model, xb, yb, run.noise_gen)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(out.loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    apply_constraints(run.model)  # e.g. the maxout networks' max-norm (Goodfellow et al. 2013)
    loss = out.loss.detach().float()
    nan = loss.new_full((), math.nan)  # the standard objective has no perturbed batch
    return torch.stack([
        loss, out.clean_loss.float(), out.clean_correct.float(),
        nan if out.adv_loss is None else out.adv_loss.float(),
        nan if out.adv_correct is None else out.adv_correct.float(),
    ])


def _record_steps(history: History, epoch: int, first_step: int, lr: float, records: list[Tensor]) -> None:
    """Append an epoch's step records to the history (copied to the host once per epoch)."""
    for i, (loss, c_loss, c_acc, a_loss, a_acc) in enumerate(torch.stack(records).cpu().tolist()):
        row = {"epoch": epoch + 1, "step": first_step + i + 1, "lr": lr, "loss": loss,
               "clean_loss": c_loss, "clean_acc": c_acc, "adv_loss": a_loss, "adv_acc": a_acc}
        for key, value in row.items():
            history.steps[key].append(value)


def _evaluate_epoch(run: _Run, started: float, bar: Any) -> None:
    """The epoch's record: clean and monitored (adversarial) loss and accuracy, training subset and validation."""
    config, data, epoch = run.config, run.data, run.epoch
    # The epoch's evaluations draw from their own generator, seeded by epoch, so they
    # never shift the training stream of random numbers.
    generator = torch.Generator(device=run.device).manual_seed(config.seed * 1_000_003 + epoch + 17)
    options = dict(attack=config.monitor, batch_size=config.eval_batch_size, generator=generator, device=run.device,
                   precision=config.precision)
    train_metrics = val_metrics = (math.nan,) * 4
    if data.n_eval > 0:
        train_metrics = _evaluate(run.model, data.x_train[:data.n_eval], data.y_train[:data.n_eval], **options)
    if data.x_val is not None:
        val_metrics = _evaluate(run.model, data.x_val, data.y_val, **options)
    lr = _lr_at(epoch, config.epochs, config.lr, config.lr_milestones, config.lr_gamma)
    row = {"epoch": epoch + 1, "step": (epoch + 1) * run.steps_per_epoch, "lr": lr,
           "train_clean_loss": train_metrics[0], "train_clean_acc": train_metrics[1],
           "train_adv_loss": train_metrics[2], "train_adv_acc": train_metrics[3],
           "val_clean_loss": val_metrics[0], "val_clean_acc": val_metrics[1],
           "val_adv_loss": val_metrics[2], "val_adv_acc": val_metrics[3],
           "seconds": time.perf_counter() - started}
    for key, value in row.items():
        run.history.epochs[key].append(value)
    run.diverging = run.diverging or _warn_if_diverging(run.history)
    # Only what this epoch measured: a run without validation data (e.g. a surrogate trained on
    # the validation tail) or without a monitor attack shows no "nan" columns.
    shown = {"train_adv_acc": train_metrics[3], "val_acc": val_metrics[1], "val_adv_acc": val_metrics[3]}
    bar.set_postfix(epoch=epoch + 1, **{key: f"{value:.3f}" for key, value in shown.items() if not math.isnan(value)})


def _early_stopping(run: _Run) -> bool:
    """Keep the best epoch's weights (lowest adversarial validation error); True when the patience ran out."""
    if not run.config.early_stopping:
        return False
    metric = 1.0 - run.history.epochs["val_adv_acc"][-1]  # adversarial validation error
    stop = False
    if metric < run.best_metric:
        run.best_metric, run.bad_epochs, run.history.best_epoch = metric, 0, run.epoch + 1
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    else:
        run.bad_epochs += 1
        stop = run.config.patience is not None and run.bad_epochs >= run.config.patience
    run.history.stopped_early = stop
    return stop


# --------------------------------------------------------------------------- the loop


def train(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig | None = None,
    *,
    val_set: Dataset | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    until_epoch: int | None = None,
    progress: bool = True,
    description: str | None = None,
    **options: Any,
) -> History:
    """Train ``model`` in place on ``train_set``; return its :class:`History`.

    For each epoch: for each shuffled batch, the objective's loss and an optimizer step
    (:func:`_fit_epoch`); then the epoch's evaluation (:func:`_evaluate_epoch`), early
    stopping (:func:`_early_stopping`) and a checkpoint (:func:`_checkpoint_state`).

    Args:
        model: any ``nn.Module`` mapping [0, 1] images to logits (moved to ``device``).
        train_set: a ``TensorDataset`` ``(x, y)`` (any map-style dataset of pairs works).
        config, **options: what to train: a :class:`TrainConfig`, or its fields as keywords
            (``objective=``, ``epochs=``, ``lr=``, ...; keywords replace fields of ``config``).
        val_set: validation data for the epoch records and early stopping.
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
        progress: show a ``tqdm`` progress bar; ``description`` labels it.

    The seed makes a run reproducible (on CPU bit for bit); the caller's global RNG state is
    left untouched. Speed: a conv net trains channels-last where that pays
    (:data:`advcore.attacks.CHANNELS_LAST`: CUDA, AVX-512 and AVX2 CPUs;
    :func:`advcore.attacks.fast_memory_format` hands the model back in its own layout).

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
    config = TrainConfig(**options) if config is None else dataclasses.replace(config, **options)
    run = _start(model, train_set, val_set, config, device, until_epoch)
    last_epoch = config.epochs if until_epoch is None else min(until_epoch, config.epochs)
    fork_devices = [run.device.index or 0] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), _restoring_modes(model) as training_modes, \
            attacks.fast_memory_format(model, run.data.x_train[:1]):
        _check_model_on_data(model, run.data.x_train, run.data.y_train, run.data.largest_label)
        torch.manual_seed(config.seed)  # dropout masks
        if checkpoint is not None and Path(checkpoint).exists():
            _resume(run, Path(checkpoint))
        with _progress_bar(run, last_epoch, progress, description) as bar:
            for epoch in range(run.epoch, last_epoch):
                started = time.perf_counter()
                _fit_epoch(run, training_modes, bar)
                _evaluate_epoch(run, started, bar)
                stop = _early_stopping(run)
                run.epoch = epoch + 1
                if checkpoint is not None:
                    save_checkpoint(checkpoint, _checkpoint_state(run, finished=stop or run.epoch == config.epochs))
                if stop:
                    break
    if config.early_stopping and run.best_state is not None and (
            run.history.stopped_early or len(run.history) == config.epochs):
        model.load_state_dict(run.best_state)
    return run.history


def _start(model: nn.Module, train_set: Dataset, val_set: Dataset | None, config: TrainConfig,
           device: str | torch.device | None, until_epoch: int | None) -> _Run:
    """Check the arguments and the data, move both to the device, and set up a fresh run."""
    if until_epoch is not None:
        checks.check_int(until_epoch, "until_epoch", minimum=1)
    if config.early_stopping and val_set is None:
        raise ValueError("early_stopping needs val_set and a monitor attack (the adversarial validation error).")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device is None else torch.device(device)
    if config.precision == "float16" and device.type != "cuda":
        raise ValueError("precision='float16' needs CUDA; on the CPU use 'bfloat16' or None (float32).")
    data = _Data.of(train_set, val_set, config.eval_train_examples)
    record = config.record(model, data)
    model.to(device)
    return _Run.start(model, config, data.to(device), device, record)


def _progress_bar(run: _Run, last_epoch: int, progress: bool, description: str | None) -> Any:
    """A ``tqdm`` bar over what this call trains (a piece of a long run, or all of it), with its ETA."""
    from tqdm.auto import tqdm

    return tqdm(total=last_epoch * run.steps_per_epoch, initial=run.epoch * run.steps_per_epoch,
                disable=not progress, desc=description or f"{type(run.model).__name__} ({run.config.objective.name})",
                unit="step", leave=False, dynamic_ncols=True)
