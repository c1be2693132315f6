"""L-infinity attacks: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018).

Every attack here is a function of ``(model, x, y)`` that returns adversarial images:

* ``model`` maps images in [0, 1] to logits ``(N, num_classes)`` (normalization lives
  inside the model, see ``advcore.models.Normalize``);
* ``x`` is a float batch ``(N, C, H, W)`` (any ``(N, ...)`` works) with values in [0, 1];
* ``y`` holds integer class indices ``(N,)``: the true labels, or the *target* labels
  when ``targeted=True``.

The result has the shape, dtype and device of ``x``, lies in [0, 1] and within
``eps`` of ``x`` in the L-infinity norm. FGSM and PGD share one iterative core,
:func:`pgd_iterate` (advertorch's design): FGSM *is* one PGD step of size ``eps`` from
``delta = 0``.

Conventions (the ones torchattacks, foolbox and ART users trip over):

* the model is put in ``eval()`` during the attack and every submodule's mode is
  restored afterwards, also when the attack raises (:func:`attack_mode`);
* parameters get no gradients: their ``requires_grad`` flags are switched off during
  the attack and restored, and gradients are taken with ``torch.autograd.grad`` with
  respect to the input only, so ``.grad`` of the parameters is never touched;
* the caller's tensors are never modified, and the result is detached;
* attacks work inside an outer ``torch.no_grad()`` (they re-enable gradients locally);
* bad arguments raise ``ValueError`` with a message that says what to do;
* CPU and CUDA run the same code; a ``torch.Generator`` on either device may drive the
  random starts (numbers are drawn on the generator's device, then moved to ``x``'s).

Example::

    from advcore.attacks import fgsm, pgd
    x_adv = fgsm(model, x, y, eps=0.25)
    x_adv = pgd(model, x, y, eps=0.3, step_size=0.01, steps=40, restarts=20,
                generator=torch.Generator().manual_seed(0))

References:
    Goodfellow, Shlens, Szegedy (2015). Explaining and Harnessing Adversarial Examples.
    Madry, Makelov, Schmidt, Tsipras, Vladu (2018). Towards Deep Learning Models
    Resistant to Adversarial Attacks. ICLR 2018 (the book cites this text's numbering).
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advcore import papers
from advcore.checks import (
    check_images,
    check_int,
    check_labels,
    check_logits,
    check_number,
    check_pgd_inputs,
    describe,
)

__all__ = [
    "AttackSpec",
    "LossFn",
    "PRECISIONS",
    "Precision",
    "attack_mode",
    "autocast",
    "bfloat16_is_native",
    "check_precision",
    "CHANNELS_LAST",
    "COMPILE_ENV",
    "RESTART_ROWS",
    "compile_enabled",
    "compiled",
    "eval_mode",
    "fast_memory_format",
    "fgsm",
    "gradient_sign",
    "input_gradient",
    "linf_box",
    "logits_and_loss",
    "margin_loss",
    "pgd",
    "pgd_iterate",
    "pgd_step_size",
    "preferred_memory_format",
    "project_linf",
    "random_start_noise",
    "rotate",
    "uniform_noise",
]

#: ``loss_fn(logits (N, C), y (N,)) -> per-example losses (N,)``; the default is
#: ``F.cross_entropy(logits, y, reduction="none")``.
LossFn = Callable[[Tensor, Tensor], Tensor]

#: Arithmetic of the model's forward and backward passes: ``None`` (float32, unless the caller
#: already runs inside ``torch.autocast``), ``"float32"`` (float32 even inside an autocast
#: region), ``"bfloat16"`` (autocast to bfloat16 on CPU or CUDA) or ``"float16"`` (CUDA only).
Precision = Literal["float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16")


def margin_loss(logits: Tensor, y: Tensor, *, confidence: float = 0.0) -> Tensor:
    """The Carlini-Wagner margin loss, per example, for an untargeted attack to *maximize*.

    ``-max(z_y - max_{j != y} z_j + confidence, 0)`` on the logits ``z``: it rises as the best
    wrong class closes in on the true one and is 0 once some wrong class leads by at least
    ``confidence`` (Carlini & Wagner 2017; the "CW" rows of Madry et al. 2018, Table 1, use
    this loss in PGD, and "CW+" "a high confidence parameter (kappa = 50)", Sec. 4).
    Pass it as ``loss_fn=`` to :func:`pgd` or :func:`fgsm`.

    Shapes: ``logits`` (N, C), ``y`` (N,) class indices; returns (N,).
    """
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -(true_logit - others.amax(1) + confidence).clamp_min(0.0)


# --------------------------------------------------------------------------- projection


def project_linf(delta: Tensor, eps: float) -> Tensor:
    """Project a perturbation onto the L-infinity ball of radius ``eps``.

    This is the projection of the PGD update (Madry et al. 2018, Sec. 3; the clip in
    Algorithm 1 of Wong, Rice & Kolter 2020), ``delta = max(min(delta, eps), -eps)``,
    element-wise.

    Args:
        delta: perturbation of any shape.
        eps: radius, ``eps >= 0``.

    Returns:
        A new tensor (``delta`` is not modified) with values in ``[-eps, eps]``.
    """
    eps = check_number(eps, "eps", minimum=0.0)
    if not isinstance(delta, Tensor) or not delta.is_floating_point():
        raise ValueError(f"delta must be a float tensor, got {describe(delta)}.")
    return delta.clamp(-eps, eps)


# --------------------------------------------------------------------------- step size


def pgd_step_size(eps: float, steps: int) -> float:
    """The PGD step size ``2.5 * eps / steps``: the one place this rule is computed.

    With this step, ``steps`` signed-gradient steps travel ``2.5 * eps``: every run can
    cross the eps-ball (diameter ``2 * eps``) and still turn around, however few steps the
    budget allows. The rule is stated in the documentation of MadryLab's ``robustness``
    library (Engstrom et al. 2019, README, "Pretrained models"; ``papers.number(
    "robustness.step_size_factor")``), *not* in Madry et al. 2018, whose MNIST runs use
    steps of 0.01 (40 steps in training, 100 in evaluation; ``mnist_challenge/config.json``)
    and whose CIFAR-10 training uses 7 steps of 2/255 (Sec. 4).

    Args:
        eps: L-infinity budget, ``eps >= 0``.
        steps: number of PGD iterations, ``>= 1``.

    Returns:
        ``2.5 * eps / steps`` (e.g. 0.25 for eps 0.3 and 3 steps).
    """
    eps = check_number(eps, "eps", minimum=0.0)
    steps = check_int(steps, "steps", minimum=1)
    return papers.number("robustness.step_size_factor").value * eps / steps


# --------------------------------------------------------------------------- random starts


def uniform_noise(x: Tensor, *, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """The control experiment of Goodfellow et al. (2015): ``x + U(-eps, eps)`` per pixel.

    Args:
        x: images ``(N, ...)`` in [0, 1].
        eps: noise amplitude, ``eps >= 0``.
        generator: optional ``torch.Generator`` (CPU or CUDA) for reproducible noise.

    Returns:
        ``clip(x + u, 0, 1)`` with ``u`` uniform in ``[-eps, eps]``, same shape, dtype and
        device as ``x``. The noise of example ``i`` depends on the batch it is drawn with
        (it is one draw of shape ``x.shape``), exactly as PGD's random start.
    """
    x = check_images(x)
    eps = check_number(eps, "eps", minimum=0.0)
    if eps == 0:
        return x.clone()
    return (x + _uniform_like(x, eps, generator)).clamp_(0.0, 1.0)


def sign_noise(x: Tensor, *, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """The other noise control of Goodfellow et al. (2015), Sec. 6: "randomly adding +-eps to each pixel".

    Args:
        x: images ``(N, ...)`` in [0, 1].
        eps: noise amplitude, ``eps >= 0``.
        generator: optional ``torch.Generator`` (CPU or CUDA) for reproducible noise.

    Returns:
        ``clip(x + eps * s, 0, 1)`` with each ``s`` independently -1 or +1 with probability
        1/2: the same size and sign structure as FGSM's step, with a random direction.
    """
    x = check_images(x)
    eps = check_number(eps, "eps", minimum=0.0)
    if eps == 0:
        return x.clone()
    return (x + _uniform_like(x, 1.0, generator).sign_().mul_(eps)).clamp_(0.0, 1.0)


def random_start_noise(
    x: Tensor, *, eps: float, restarts: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """The random starting perturbations that :func:`pgd` draws, shape ``(restarts, *x.shape)``.

    ``pgd(..., random_start=True, generator=g)`` draws, for restart ``r = 0, 1, ...`` in
    turn, one tensor of shape ``x.shape`` uniform in ``[-eps, eps]`` (Madry et al. 2018).
    Calling this function with a generator in the same state returns the same numbers,
    so ``pgd(..., start=random_start_noise(x, eps=eps, restarts=R, generator=g))`` equals
    ``pgd(..., restarts=R, generator=g)``. Slice the result (``start[:, i:i + 1]``) to
    attack examples one by one with the starts they got in the batch.
    """
    x = check_images(x)
    eps = check_number(eps, "eps", minimum=0.0)
    restarts = check_int(restarts, "restarts", minimum=1)
    return torch.stack([_uniform_like(x, eps, generator) for _ in range(restarts)])


def _uniform_like(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """``U(-eps, eps)`` of ``x``'s shape, drawn on the generator's device, moved to ``x``'s."""
    device = generator.device if generator is not None else x.device
    noise = torch.empty(x.shape, dtype=x.dtype, device=device)
    noise.uniform_(-eps, eps, generator=generator)
    return noise.to(x.device)


# --------------------------------------------------------------------------- the attacks


def fgsm(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    targeted: bool = False,
    loss_fn: LossFn | None = None,
    precision: Precision | None = None,
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015, Sec. 4).

    Untargeted: ``x_adv = clip(x + eps * sign(grad_x loss(model(x), y)), 0, 1)``.
    Targeted (``y`` = target classes): ``x_adv = clip(x - eps * sign(grad_x loss(model(x), y)), 0, 1)``,
    a step *down* the loss of the target class (the panda -> "gibbon" demo).

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        x: float images ``(N, C, H, W)`` in [0, 1].
        y: class indices ``(N,)``: true labels, or targets when ``targeted``.
        eps: L-infinity budget, ``eps >= 0`` (``0`` returns a copy of ``x``).
        targeted: step towards class ``y`` instead of away from it.
        loss_fn: per-example loss ``(logits, y) -> (N,)``; default cross-entropy.
        precision: arithmetic of the gradient computation (see :func:`autocast`):
            ``None``/``"float32"`` exact, ``"bfloat16"`` faster where the hardware has it.

    Returns:
        Adversarial images, same shape/dtype/device (and memory layout) as ``x``, in [0, 1],
        ``|x_adv - x| <= eps``. Pixels whose gradient is exactly zero do not move.
    """
    x = check_images(x)
    y = check_labels(y, x)
    eps = check_number(eps, "eps", minimum=0.0)
    if eps == 0:
        return x.clone()
    # One PGD step of size eps from delta = 0 is exactly FGSM.
    return _attack(model, x, y, eps=eps, step_size=eps, steps=1, starts=None, restarts=1,
                   targeted=targeted, loss_fn=loss_fn, precision=check_precision(precision))


def input_gradient(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """``grad_x sum_i loss(model(x_i), y_i)``: the input gradient every attack here steps along.

    The gradient of the *summed* per-example loss, so row ``i`` is example ``i``'s own gradient
    ``grad_x J(theta, x_i, y_i)`` (Goodfellow et al. 2015, Sec. 3: the direction of FGSM's
    ``sign(grad_x J)``), whatever the batch. As in every attack, the model runs in ``eval()``
    and its parameters get no gradients (:func:`attack_mode`); the caller's tensors are not
    modified and the result is detached.

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        x: float images ``(N, C, H, W)`` in [0, 1].
        y: class indices ``(N,)``.
        loss_fn: per-example loss ``(logits, y) -> (N,)``; default cross-entropy.

    Returns:
        A float tensor of ``x``'s shape; exactly zero where the loss does not depend on a pixel.
    """
    x = check_images(x)
    y = check_labels(y, x)
    with attack_mode(model):
        x_in = x.clone().requires_grad_(True)
        loss = _per_example_loss(model, x_in, y, loss_fn, check=True)
        (grad,) = torch.autograd.grad(loss.sum(), x_in, allow_unused=True, materialize_grads=True)
    return grad


def gradient_sign(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """``sign(grad_x loss(model(x), y))``: the middle image of the panda figure (Goodfellow et al. 2015, Fig. 1).

    Arguments as :func:`input_gradient`.

    Returns:
        A tensor of ``x``'s shape with values in ``{-1, 0, 1}``; ``fgsm(model, x, y, eps=e)``
        equals ``clip(x + e * gradient_sign(model, x, y), 0, 1)``.
    """
    return input_gradient(model, x, y, loss_fn=loss_fn).sign()


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image of ``x`` about its centre by ``degrees[i]`` (bilinear, zero fill, clipped to [0, 1]).

    The "small rotations" of Goodfellow et al. 2015 (Sec. 6's controls; chapter 10's
    rotation threat model): a perturbation that is not in any L-infinity ball.

    Shapes: ``x`` (N, C, H, W) in [0, 1], ``degrees`` (N,); returns ``x.shape``.
    """
    radians = degrees.to(x) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0.0, 1.0)


def pgd(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
    start: Tensor | None = None,
    precision: Precision | None = None,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Projected gradient descent on the L-infinity ball (Madry et al. 2018, Sec. 3).

    For each restart::

        delta = 0, or uniform in [-eps, eps]           (random_start)
        repeat `steps` times:
            delta = delta + step_size * sign(grad_delta loss(model(x + delta), y))
            delta = clip(delta, -eps, eps)              (project_linf)
            x + delta is kept in [0, 1]

    The two clips are applied as one clip of ``x + delta`` to the box
    ``[max(x - eps, 0), min(x + eps, 1)]``, the same set. With ``targeted=True`` the
    step goes *down* the loss of the target class ``y``. With ``restarts > 1`` the
    restart whose final iterate has the highest loss (untargeted) or the lowest target
    loss (targeted) is returned, per example; restart 0 uses the same random start as a
    single-restart run with the same generator, so restarts never do worse than one start.

    Randomness and batches: restart ``r`` draws one uniform tensor of shape ``x.shape``
    (see :func:`random_start_noise`), so example ``i``'s start depends on its batch.
    What is guaranteed: with ``random_start=False``, or with the same per-example
    ``start``, attacking a batch gives each example the result it gets alone (up to
    floating-point differences of batched kernels).

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        x: float images ``(N, C, H, W)`` in [0, 1].
        y: class indices ``(N,)``: true labels, or targets when ``targeted``.
        eps: L-infinity budget, ``eps >= 0`` (``0`` returns a copy of ``x``).
        step_size: the step ``alpha`` of the update, ``> 0`` (Madry et al., MNIST: 0.01 for eps 0.3).
        steps: number of PGD iterations, ``>= 1`` (MNIST: 40 for training, 100 for evaluation).
        random_start: start from a uniform point of the eps-ball instead of ``x``.
        restarts: independent random starts; keep the worst case per example.
        targeted: step towards class ``y``.
        loss_fn: per-example loss ``(logits, y) -> (N,)``; default cross-entropy.
        generator: ``torch.Generator`` (CPU or CUDA) for reproducible random starts.
        start: explicit starting perturbations ``(N, ...)`` or ``(restarts, N, ...)`` within
            the eps-ball; replaces the random draw (``random_start`` and ``generator`` are
            then not used).
        precision: arithmetic of the forward and backward passes (see :func:`autocast`):
            ``None``/``"float32"`` exact, ``"bfloat16"`` faster where the hardware has it
            (a different but equally valid adversarial example; the projection and the
            clip stay exact).
        on_step: ``on_step(t, losses, x_t)`` is called with the per-example losses ``(N,)``
            and the iterate ``x_t = x + delta_t`` ``(N, ...)`` (detached; read it, do not
            modify it) of iterate ``t = 0 .. steps - 1`` (before step ``t``; the returned
            images are the iterate after the last step), e.g. to trace the loss curve of
            Madry et al.'s landscape figure or the probabilities along a targeted attack;
            with ``restarts > 1``, once per restart group with all its rows ``(g * N, ...)``.

    Speed: conv nets run channels-last (:func:`fast_memory_format`); several restarts run
    as one batch of up to :data:`RESTART_ROWS` rows (the same starts and results as one
    restart after the other, up to float rounding of batched kernels); with
    ``ADVCORE_COMPILE=1`` the model is ``torch.compile``-d (:func:`compile_enabled`). None of
    these changes the attack.

    Returns:
        Adversarial images, same shape/dtype/device (and memory layout) as ``x``, in [0, 1],
        ``|x_adv - x| <= eps`` (up to float rounding of ``x + delta``).
    """
    x, y, eps, step_size, steps, restarts = check_pgd_inputs(x, y, eps=eps, step_size=step_size, steps=steps,
                                                             restarts=restarts)
    starts = _check_starts(start, x, eps, restarts, random_start)
    if eps == 0:
        return x.clone()
    if starts is None and random_start:
        starts = (_uniform_like(x, eps, generator) for _ in range(restarts))
    return _attack(model, x, y, eps=eps, step_size=step_size, steps=steps, starts=starts,
                   restarts=restarts, targeted=targeted, loss_fn=loss_fn,
                   precision=check_precision(precision), on_step=on_step)


# --------------------------------------------------------------------------- an attack as data


@dataclass(frozen=True)
class AttackSpec:
    """One L-infinity attack as a small value: what it is, its budget and its steps.

    The one shape of "an attack" in advcore: a training monitor, an evaluation, a zoo recipe
    (:meth:`to_dict`) and the experiments all use it. Called as ``spec(model, x, y)`` (an
    ``evaluate`` attack) or ``spec(model, x, y, generator)`` (a training monitor, which draws
    PGD's random starts from the training run's generator).

    Attributes:
        kind: ``"fgsm"`` (Goodfellow et al. 2015, Sec. 4) or ``"pgd"`` (Madry et al. 2018, Sec. 3).
        eps: L-infinity budget, ``eps >= 0``.
        step_size, steps: PGD's step and number of steps (e.g. :func:`pgd_step_size`); unused by FGSM.
        restarts, random_start: PGD's random restarts (the worst case per example is kept).
    """

    kind: Literal["fgsm", "pgd"]
    eps: float
    step_size: float | None = None
    steps: int = 1
    restarts: int = 1
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("fgsm", "pgd"):
            raise ValueError(f"kind must be 'fgsm' or 'pgd', got {describe(self.kind)}.")
        check_number(self.eps, "eps", minimum=0.0)
        if self.kind == "pgd":
            check_number(self.step_size, "step_size", minimum=0.0, strict=True)
            check_int(self.steps, "steps", minimum=1)
            check_int(self.restarts, "restarts", minimum=1)

    def __call__(self, model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
                 generator: torch.Generator | None = None) -> Tensor:
        """Adversarial images for ``(x, y)`` (shapes and ranges as :func:`fgsm` and :func:`pgd`)."""
        if self.kind == "fgsm":
            return fgsm(model, x, y, eps=self.eps)
        return pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps, restarts=self.restarts,
                   random_start=self.random_start, generator=generator)

    def seeded(self, seed: int, device: torch.device | str) -> Callable[[Callable[[Tensor], Tensor], Tensor, Tensor],
                                                                       Tensor]:
        """This attack with a generator of its own, seeded now: one evaluation that draws the same
        random starts whatever other evaluations ran before it."""
        generator = torch.Generator(device=device).manual_seed(seed)
        return lambda model, x, y: self(model, x, y, generator)

    def describe(self) -> str:
        """One line, e.g. ``"PGD eps=0.3, 40 steps of 0.01"`` (a training run's key records it: keep it stable)."""
        if self.kind == "fgsm":
            return f"FGSM eps={self.eps:g}"
        restarts = f", {self.restarts} restarts" if self.restarts > 1 else ""
        return f"PGD eps={self.eps:g}, {self.steps} steps of {self.step_size:.3g}{restarts}"

    def to_dict(self) -> dict[str, Any]:
        """The zoo recipes' form: ``{"attack": kind, "eps": ...}`` with PGD's settings where they apply."""
        if self.kind == "fgsm":
            return {"attack": "fgsm", "eps": self.eps}
        spec = {"attack": "pgd", "eps": self.eps, "step_size": self.step_size, "steps": self.steps}
        if self.restarts != 1:
            spec["restarts"] = self.restarts
        if not self.random_start:
            spec["random_start"] = False
        return spec

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "AttackSpec":
        """The attack of a zoo recipe's ``{"attack": "fgsm" | "pgd", "eps": ..., ...}``."""
        options = {key: value for key, value in spec.items() if key != "attack"}
        return cls(spec["attack"], **options)


# --------------------------------------------------------------------------- shared core


def _attack(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    starts: Iterator[Tensor] | Tensor | None,
    restarts: int,
    targeted: bool,
    loss_fn: LossFn | None,
    precision: str | None = None,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Run ``restarts`` PGD runs and keep, per example, the worst case for the model.

    Restarts run in groups of :func:`_restart_group` at once (rows ``restart * N + i``);
    ties between restarts go to the earlier one, as when they run one after the other.
    """
    direction = -1.0 if targeted else 1.0
    start_iter = iter(starts) if starts is not None else None
    group = _restart_group(x, restarts)
    best = best_loss = None
    forward = compiled(model) if compile_enabled(x.device) else model
    memory_format = preferred_memory_format(model, x)
    with attack_mode(model), fast_memory_format(model, x) as x_fast, autocast(precision, x.device):
        for first in range(0, restarts, group):
            size = min(group, restarts - first)
            x_rows, y_rows = _repeat_rows(x_fast, size, memory_format), y.repeat(size)
            lower, upper = linf_box(x_rows, eps)
            if start_iter is None:
                x_adv = x_rows.clone()
            else:
                noise = torch.cat([next(start_iter) for _ in range(size)]).to(x_rows)
                x_adv = torch.clamp(x_rows + noise, lower, upper)
            # The final loss is only needed to choose between restarts: skip that forward pass otherwise.
            x_adv, loss = pgd_iterate(forward, x_adv, y_rows, lower, upper, step_size=step_size, steps=steps,
                                   direction=direction, loss_fn=loss_fn, final_loss=restarts > 1,
                                   on_step=on_step, check=first == 0)
            if restarts == 1:
                best = x_adv
                continue
            x_adv, loss = x_adv.unflatten(0, (size, -1)), loss.view(size, -1)
            pick = (loss.argmin if targeted else loss.argmax)(0)  # the first of equal losses
            loss, x_adv = loss.gather(0, pick[None])[0], x_adv[pick, torch.arange(x.shape[0], device=x.device)]
            if best is None:
                best, best_loss = x_adv, loss
                continue
            better = loss < best_loss if targeted else loss > best_loss
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
            best_loss = torch.where(better, loss, best_loss)
    return best if best.stride() == x.stride() else torch.empty_like(x).copy_(best)


#: Rows (restarts x examples) that one batched forward pass may hold: restarts of a small batch
#: run together, which on a GPU is the difference between an idle and a busy device.
RESTART_ROWS = {"cpu": 512, "cuda": 8192}


def _restart_group(x: Tensor, restarts: int) -> int:
    """How many restarts of the batch ``x`` run at once (at least one)."""
    rows = RESTART_ROWS.get(x.device.type, RESTART_ROWS["cpu"])
    return max(1, min(restarts, rows // x.shape[0]))


def _repeat_rows(x: Tensor, times: int, memory_format: torch.memory_format) -> Tensor:
    """``x`` stacked ``times`` times along the batch dimension, laid out in ``memory_format``."""
    if times == 1:
        return x
    return x.repeat(times, *[1] * (x.dim() - 1)).to(memory_format=memory_format)


def pgd_iterate(
    model: Callable[[Tensor], Tensor],
    x_adv: Tensor,
    y: Tensor,
    lower: Tensor,
    upper: Tensor,
    *,
    step_size: float,
    steps: int,
    direction: float,
    loss_fn: LossFn | None,
    final_loss: bool = False,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
    check: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """The inner loop of PGD (the update rule of Madry et al. 2018, Sec. 3) on ``x_adv = x + delta``, shared by FGSM, PGD and the landscape.

    ``x_adv`` (our own tensor, updated in place) starts inside the box ``[lower, upper]``.
    Each step: ``x_adv += direction * step_size * sign(grad)``, then clip to the box.
    ``on_step(t, losses, x_adv)`` sees the per-example loss and the iterate ``t`` (before step ``t``).
    Must run inside :func:`attack_mode`. Returns the last iterate and, if ``final_loss``,
    its per-example loss ``(N,)`` (one extra forward pass). ``check`` validates the model's
    output at the first step (the loop's only host synchronization).
    """
    for step in range(steps):
        x_adv.requires_grad_(True)
        loss = _per_example_loss(model, x_adv, y, loss_fn, check=check and step == 0)
        if on_step is not None:
            on_step(step, loss.detach(), x_adv.detach())
        # Gradient w.r.t. the input only: parameters are never differentiated.
        (grad,) = torch.autograd.grad(loss.sum(), x_adv, allow_unused=True, materialize_grads=True)
        x_adv = x_adv.detach()
        x_adv.add_(grad.sign(), alpha=direction * step_size)
        x_adv.clamp_(min=lower, max=upper)
    if not final_loss:
        return x_adv, None
    with torch.no_grad():
        return x_adv, _per_example_loss(model, x_adv, y, loss_fn, check=False)


def _per_example_loss(
    model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss_fn: LossFn | None, *, check: bool
) -> Tensor:
    """``loss_fn(model(x), y)`` as a vector ``(N,)``; ``check`` validates shapes and labels once."""
    return logits_and_loss(model, x, y, loss_fn, check=check)[1]


def logits_and_loss(
    model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss_fn: LossFn | None, *, check: bool
) -> tuple[Tensor, Tensor]:
    """``(model(x), loss_fn(model(x), y))`` with per-example losses ``(N,)``."""
    logits = model(x)
    if check:
        check_logits(logits, y, grad_needed=torch.is_grad_enabled())
    loss = F.cross_entropy(logits, y, reduction="none") if loss_fn is None else loss_fn(logits, y)
    if check and (not isinstance(loss, Tensor) or loss.shape != y.shape):
        raise ValueError(
            f"loss_fn must return one loss per example, shape ({y.shape[0]},), got "
            f"{describe(loss)}; use reduction='none' (e.g. "
            "lambda logits, y: F.cross_entropy(logits, y, reduction='none'))."
        )
    return logits, loss


def linf_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-pixel bounds of ``{x + delta : |delta|_inf <= eps} ∩ [0, 1]``: ``(lower, upper)``."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


# --------------------------------------------------------------------------- model handling


@contextmanager
def eval_mode(model: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Put every submodule of ``model`` in ``eval()``; restore each one's mode on exit (also on errors).

    Restoring each submodule's own ``training`` flag (not ``model.train(was_training)``)
    keeps, e.g., a frozen batch-norm layer inside a training model frozen. A plain
    callable (not an ``nn.Module``) is left as it is.
    """
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    modes = [module.training for module in modules]
    try:
        if isinstance(model, nn.Module):
            model.eval()
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.training = mode


@contextmanager
def attack_mode(model: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Run an attack on ``model``: eval mode, no parameter gradients, gradients enabled.

    On entry every submodule is put in ``eval()`` (dropout off, batch-norm running
    statistics, so each example is attacked independently of its batch) and every
    parameter's ``requires_grad`` is switched off; on exit, also on an exception, each
    submodule's ``training`` flag and each parameter's ``requires_grad`` flag are restored
    to what they were. Inside, ``torch.enable_grad()`` is active, so attacks work under an
    outer ``torch.no_grad()``. A plain callable (not an ``nn.Module``) is left as it is.

    Raises:
        RuntimeError: called under ``torch.inference_mode()``, where no gradient exists.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "Attacks need input gradients, which torch.inference_mode() disables; "
            "call the attack outside inference_mode (an outer torch.no_grad() is fine)."
        )
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    frozen = [name for name, param in model.named_parameters() if param.is_inference()] if params else []
    if frozen:  # checked before anything changes: their flags could not be switched back on
        raise ValueError(
            f"model's parameters ({', '.join(frozen[:3])}{', ...' if len(frozen) > 3 else ''}) are "
            "inference tensors: the model was built or loaded under torch.inference_mode(), and "
            "such tensors can never take part in a gradient computation. Build the model outside "
            "inference_mode (torch.no_grad() saves the same memory), or copy it: "
            "fresh = type(model)(...); fresh.load_state_dict({k: v.clone() for k, v in "
            "model.state_dict().items()})."
        )
    flags = [param.requires_grad for param in params]
    try:
        for param in params:
            param.requires_grad_(False)
        with eval_mode(model), torch.enable_grad():
            yield
    finally:
        failures = []
        for param, flag in zip(params, flags):  # every flag, even if one of them fails
            try:
                param.requires_grad_(flag)
            except RuntimeError as error:
                failures.append(error)
        if failures:
            raise failures[0]


# --------------------------------------------------------------------------- speed: layout and precision


#: Where channels-last (NHWC) pays for conv nets, by device type. Measured for Madry et al.'s
#: MNIST CNN (one thread, CPU time, ``benchmarks/README.md``): PGD 1.4x faster on an AVX-512 EPYC
#: (the speed issue), 1.24x on an AVX-512 Xeon, 1.11x on an AVX2-only EPYC (PGD training 1.09x
#: there); NHWC is cuDNN's fast layout on CUDA. Off on CPUs without AVX2 (not measured).
CHANNELS_LAST: dict[str, bool] = {
    "cuda": True,
    "cpu": torch.backends.cpu.get_cpu_capability().startswith(("AVX512", "AVX2")),
}


def preferred_memory_format(model: Callable[[Tensor], Tensor], x: Tensor) -> torch.memory_format:
    """The memory format in which ``model`` runs fastest on the 4-D batch ``x``.

    ``torch.channels_last`` (NHWC) for an ``nn.Module`` with 2-D convolutions on a 4-D
    batch on a device where it pays (:data:`CHANNELS_LAST`: CUDA, and CPUs with AVX-512 or
    AVX2, whose oneDNN NHWC convolution and pooling kernels are faster), else
    ``torch.contiguous_format``. Only the layout in memory differs: the tensors' shapes and
    values are the same.
    """
    if (isinstance(x, Tensor) and x.dim() == 4 and CHANNELS_LAST.get(x.device.type, False)
            and isinstance(model, nn.Module) and any(isinstance(m, nn.Conv2d) for m in model.modules())):
        return torch.channels_last
    return torch.contiguous_format


@contextmanager
def fast_memory_format(model: Callable[[Tensor], Tensor], x: Tensor) -> Iterator[Tensor]:
    """Run ``model`` in its :func:`preferred_memory_format`; yield ``x`` in that layout.

    For a conv net on a 4-D batch, the 4-D parameters (convolution kernels) are switched to
    channels-last for the duration of the block and switched back on exit (also on an
    error), keeping any value they were given inside the block (training updates them): the
    caller's model leaves the block with its own layout and the same parameter tensors.
    Switching the kernels matters: for single-channel images (MNIST) an NHWC input is
    indistinguishable from an NCHW one, and PyTorch picks the channels-last kernels only
    when the input or the weight is channels-last. Otherwise ``x`` is yielded as it is.
    Nested blocks are free (the parameters are already channels-last).
    """
    memory_format = preferred_memory_format(model, x)
    if memory_format is torch.contiguous_format:
        yield x
        return
    # ``.to(memory_format=...)``, not ``.contiguous(memory_format=...)``: a tensor with a channel
    # dimension of size 1 (an MNIST batch, the first convolution's kernels) counts as contiguous
    # in both layouts, so ``.contiguous`` leaves its NCHW strides, and a net whose first
    # convolution runs NCHW and its second NHWC converts activations at every layer (measured:
    # 0.92x of plain NCHW for PGD on Madry's CNN where true NHWC gives 1.27x). ``.to`` restrides
    # it, and returns a tensor already laid out so as it is.
    restrided = [(param, param.data.to(memory_format=memory_format))
                 for param in model.parameters() if param.dim() == 4]  # type: ignore[union-attr]
    params = [param for param, data in restrided if data is not param.data]
    originals = [param.data for param in params]
    try:
        for param, data in restrided:
            param.data = data
        yield x.to(memory_format=memory_format)
    finally:
        with torch.no_grad():
            for param, original in zip(params, originals):
                original.copy_(param.data)  # training may have changed the values
                param.data = original


#: ``ADVCORE_COMPILE=1`` runs attacks on ``torch.compile``-d models; unset or ``0``: eager.
COMPILE_ENV = "ADVCORE_COMPILE"
_COMPILED: "weakref.WeakKeyDictionary[nn.Module, _CompiledOrEager]" = weakref.WeakKeyDictionary()


def compile_enabled(device: torch.device | str) -> bool:
    """Whether attacks run ``torch.compile``-d models (``ADVCORE_COMPILE=1``; default: no).

    Opt-in on every device until a measurement shows it pays: on the CPU it was measured
    slower (the speed issue's table: 0.6x of eager with default settings), and its speed on
    a GPU has not been measured here (no GPU was lent; ``benchmarks/README.md``). A compiled
    model is kept for the rest of the process (it holds the model), so leave it off in a
    session that attacks many models.
    """
    return os.environ.get(COMPILE_ENV, "").strip() == "1"


def compiled(model: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``torch.compile(model)``, made once per module and reused; eager if compiling fails.

    A compiler failure (an unsupported operation, no C++ compiler), in the forward or in the
    backward pass, which are both compiled at the first call, is reported once with a
    warning and the eager model is used from then on: compiling is a speed-up, never a
    reason for an attack to fail. Errors of the model itself are raised as they are.
    """
    if not isinstance(model, nn.Module):
        return model
    if model not in _COMPILED:
        _COMPILED[model] = _CompiledOrEager(model)
    return _COMPILED[model]


def _is_compiler_error(error: BaseException) -> bool:
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor", "torch._functorch"))


class _CompiledOrEager:
    """Calls the compiled module (forward and backward tried at the first call); eager on compiler errors."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.fast, self.tried = model, torch.compile(model, dynamic=False), False

    def __call__(self, x: Tensor) -> Tensor:
        if self.fast is None:
            return self.model(x)
        try:
            if not self.tried and x.requires_grad:  # compile forward and backward here, where errors are caught
                probe = x.detach().requires_grad_(True)
                torch.autograd.grad(self.fast(probe).sum(), probe)
                self.tried = True
            return self.fast(x)
        except Exception as error:
            if not _is_compiler_error(error):
                raise
            warnings.warn(f"torch.compile failed for {type(self.model).__name__} ({error!r:.200}); "
                          f"running it eagerly (unset {COMPILE_ENV} to skip compiling).", RuntimeWarning, stacklevel=2)
            self.fast = None
            return self.model(x)


def bfloat16_is_native(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 matrix arithmetic runs in hardware on ``device``.

    CUDA: compute capability 8.0 (Ampere) or newer. CPU: AVX-512 BF16 or AMX instructions;
    without them PyTorch emulates bfloat16, which is several times *slower* than float32
    (measured on an AVX2-only EPYC: about 12x, see ``benchmarks/README.md``).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def check_precision(precision: object) -> str | None:
    """``precision`` if it is ``None`` or one of :data:`PRECISIONS`, else a ``ValueError`` saying what to pass."""
    if precision is None or precision in PRECISIONS:
        return precision  # type: ignore[return-value]
    raise ValueError(
        f"precision must be None, {', '.join(map(repr, PRECISIONS))}, got {describe(precision)}; "
        "None keeps float32 (or the caller's own torch.autocast)."
    )


@contextmanager
def autocast(precision: str | None, device: torch.device | str) -> Iterator[None]:
    """The arithmetic of the forward and backward passes run inside the block.

    ``None``: nothing changes (float32, or the caller's own ``torch.autocast``).
    ``"float32"``: autocast is switched off, even inside a caller's autocast region.
    ``"bfloat16"`` (CPU, CUDA) / ``"float16"`` (CUDA): ``torch.autocast`` to that type.
    Attacks keep their iterate ``x + delta``, the projection onto the eps-ball and the clip
    to [0, 1] in float32 (the input gradient of a float32 input is float32), so results lie
    in the eps-ball and in [0, 1] exactly; only the gradient's direction is computed with
    less precision, which gives a different but equally valid adversarial example.

    Warns when bfloat16 is emulated on this device (:func:`bfloat16_is_native`).

    Raises:
        ValueError: an unknown precision, or float16 on the CPU.
    """
    precision = check_precision(precision)
    device = torch.device(device)
    if precision is None:
        yield
        return
    if precision == "float16" and device.type != "cuda":
        raise ValueError("precision='float16' needs CUDA; on the CPU use 'bfloat16' or 'float32'.")
    if precision == "bfloat16" and not bfloat16_is_native(device):
        warnings.warn(
            f"precision='bfloat16' on {device}: this processor has no native bfloat16 arithmetic "
            "(AVX-512 BF16/AMX on CPU, Ampere or newer on CUDA), so PyTorch emulates it and it is "
            "slower than float32. Use precision='float32' (or None) here.",
            RuntimeWarning, stacklevel=3,
        )
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
        yield


# --------------------------------------------------------------------------- validation


def _check_starts(start: Tensor | None, x: Tensor, eps: float, restarts: int, random_start: bool) -> Tensor | None:
    """Explicit starts (:func:`_check_start`), or None; several restarts need different starts."""
    starts = _check_start(start, x, eps, restarts)
    if starts is None and restarts > 1 and not random_start:
        raise ValueError(
            "restarts > 1 needs random_start=True (or explicit `start`): without a random "
            "start every restart is the same deterministic run."
        )
    return starts


def _check_start(start: Tensor | None, x: Tensor, eps: float, restarts: int) -> Tensor | None:
    """Explicit starts as ``(restarts, *x.shape)`` inside the eps-ball, or None."""
    if start is None:
        return None
    if not isinstance(start, Tensor) or not start.is_floating_point():
        raise ValueError(f"start must be a float tensor of perturbations, got {describe(start)}.")
    if start.shape == x.shape:
        start = start.unsqueeze(0)
    if start.shape != (restarts, *x.shape):
        raise ValueError(
            f"start must have shape {tuple(x.shape)} or (restarts, *x.shape) = "
            f"{(restarts, *x.shape)}, got {tuple(start.shape)}."
        )
    start = start.detach().to(device=x.device, dtype=x.dtype)
    if bool((start.abs() > eps * (1 + 1e-6)).any()) or bool(start.isnan().any()):
        raise ValueError(
            f"start must lie in the eps-ball [-{eps:g}, {eps:g}], got max |start| = "
            f"{start.abs().max().item():.4g}; draw it with random_start_noise(x, eps=eps, ...)."
        )
    return start


# =========================================================================== after 2018: APGD and Square
#
# Two attacks from the robustness-evaluation literature, used by chapter 11:
#
# * :func:`apgd` -- Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial
#   robustness with an ensemble of diverse parameter-free attacks", Sec. 3): PGD with
#   momentum and a step size that halves itself at checkpoints, with the cross-entropy or
#   the DLR loss (their Sec. 4), untargeted or targeted.
# * :func:`square` -- the Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020,
#   L-infinity version, their Sec. 3.2 and Alg. 1-2): random search that only queries the
#   model's outputs, never its gradients.
#
# Both follow the conventions at the top of this module (bounds, modes restored, no
# parameter gradients, no mutation, works under no_grad, ValueErrors from the _check_*
# helpers). Every decision they take (step-size halving, accepting a square) is per
# example, so a batch gives each example what it gets alone given the same random numbers.


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, Eq. 5), per example, to be *maximized*.

    ``DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` where ``z_pi1 >= z_pi2 >= ...``
    are the sorted logits. It is positive exactly when ``y`` is not the top class, and it
    does not change when the logits are shifted or rescaled -- so a model cannot hide
    behind saturated (huge) logits, which flatten the cross-entropy's gradient.

    Args:
        logits: ``(N, C)`` with ``C >= 3``.
        y: true labels ``(N,)``.

    Returns:
        ``(N,)`` losses.
    """
    _check_classes(logits, 3, "the DLR loss")
    sorted_logits = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(true - others) / (sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12)


def dlr_loss_targeted(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, Sec. 4), per example, to be *maximized*.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` for true label ``y`` and target ``t``:
    positive once the target's logit exceeds the true class's.

    Args:
        logits: ``(N, C)`` with ``C >= 4``.
        y: true labels ``(N,)``; target: target classes ``(N,)``.
    """
    _check_classes(logits, 4, "the targeted DLR loss")
    sorted_logits = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    aimed = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - aimed) / (sorted_logits[:, 0] - 0.5 * (sorted_logits[:, 2] + sorted_logits[:, 3]) + 1e-12)


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations where APGD may halve its step size (Croce & Hein 2020, Sec. 3.2).

    ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``: the first check comes after 22%
    of the budget, later ones closer together. Returns the ``w_j`` in ``(0, steps]``.
    """
    steps = check_int(steps, "steps", minimum=1)
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    # round() first: 0.57 * 100 is 57.000000000000007 in floating point, and ceil would make it 58.
    points = sorted({math.ceil(round(p * steps, 9)) for p in fractions[1:] if p <= 1.0})
    return [w for w in points if 0 < w <= steps]


def apgd(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int = 100,
    restarts: int = 1,
    loss: str | LossFn = "ce",
    targeted: bool = False,
    labels: Tensor | None = None,
    momentum: float = 0.75,
    rho: float = 0.75,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """Auto-PGD on the L-infinity ball (Croce & Hein 2020, Sec. 3, Algorithm 1).

    PGD without a step size to tune. With the projection ``P`` onto the eps-ball in [0, 1]
    and the objective ``f`` to maximize (below), starting from ``x0``::

        eta = 2 eps
        x1 = P(x0 + eta sign(grad f(x0)))
        for k = 1 .. steps - 1:
            z      = P(x_k + eta sign(grad f(x_k)))
            x_k+1  = P(x_k + a (z - x_k) + (1 - a)(x_k - x_k-1))        a = momentum = 0.75
            at a checkpoint w_j (:func:`apgd_checkpoints`), per example, halve eta and
            restart from the best point so far when
              1. fewer than rho = 75% of the steps since w_j-1 increased f, or
              2. eta was not halved at w_j-1 and the best f has not improved since then.

    ``f`` is the cross-entropy (``loss="ce"``) or :func:`dlr_loss` (``"dlr"``) of the true
    class ``y``; targeted (``y`` = target classes): minus the cross-entropy of the target,
    or :func:`dlr_loss_targeted`, which also needs the true ``labels``; a custom
    ``loss_fn(logits, y) -> (N,)`` is maximized (untargeted) or minimized (targeted), as
    in :func:`pgd`.

    What is returned, per example: the best point of the run (highest ``f``), or, if that
    point is not adversarial but another iterate was (misclassified; classified as the
    target when targeted), that iterate. With ``restarts > 1`` the restarts are compared in
    the same order -- adversarial first, then higher ``f`` -- so more restarts never do
    worse than restart 0, which uses the start a single run would use.

    Budget: ``steps`` gradient evaluations (at ``x0 .. x_steps-1``) and one forward pass
    at the last iterate per restart -- the cost of ``pgd(..., steps=steps)``.

    Differences from the authors' code (``fra31/auto-attack``), none of them in the paper's
    algorithm: the random start is uniform in the eps-ball, drawn as :func:`pgd` draws it
    (:func:`random_start_noise` reproduces it), and every restart attacks every example.

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        x: float images ``(N, C, H, W)`` in [0, 1].
        y: class indices ``(N,)``: true labels, or targets when ``targeted``.
        eps: L-infinity budget, ``eps >= 0`` (``0`` returns a copy of ``x``).
        steps: iterations ``N >= 1`` (the paper: 100).
        restarts: independent starts; the worst case is kept per example.
        loss: ``"ce"``, ``"dlr"`` or a per-example loss ``(logits, y) -> (N,)``.
        targeted: move towards class ``y``.
        labels: the true labels ``(N,)``, needed only by the targeted DLR loss.
        momentum: ``alpha`` of the update (the paper: 0.75); ``1`` turns momentum off.
        rho: the fraction of increasing steps that keeps the step size (the paper: 0.75).
        random_start: start uniformly in the eps-ball instead of at ``x``.
        generator: ``torch.Generator`` for reproducible random starts.
        start: explicit starting perturbations ``(N, ...)`` or ``(restarts, N, ...)``.

    Returns:
        Adversarial images, same shape/dtype/device as ``x``, in [0, 1], ``|x_adv - x| <= eps``.
    """
    x = check_images(x)
    y = check_labels(y, x)
    eps = check_number(eps, "eps", minimum=0.0)
    steps = check_int(steps, "steps", minimum=1)
    restarts = check_int(restarts, "restarts", minimum=1)
    momentum = check_number(momentum, "momentum", minimum=0.0, strict=True)
    rho = check_number(rho, "rho", minimum=0.0)
    if momentum > 1 or rho > 1:
        raise ValueError(f"momentum must be in (0, 1] and rho in [0, 1], got {momentum} and {rho}.")
    objective = _apgd_objective(loss, targeted=targeted, labels=labels, x=x)
    starts = _check_starts(start, x, eps, restarts, random_start)
    if eps == 0:
        return x.clone()
    if starts is None:
        starts = [_uniform_like(x, eps, generator) if random_start else torch.zeros_like(x)
                  for _ in range(restarts)]
    lower, upper = linf_box(x, eps)
    best = best_key = None
    with attack_mode(model):
        for restart in range(restarts):
            x_adv, key = _apgd_run(model, x, y, torch.clamp(x + starts[restart], lower, upper), lower, upper,
                                   eps=eps, steps=steps, objective=objective, targeted=targeted,
                                   momentum=momentum, rho=rho, check=restart == 0)
            if best is None:
                best, best_key = x_adv, key
                continue
            better = _better(key, best_key)
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
            best_key = tuple(torch.where(better, new, old) for new, old in zip(key, best_key))
    return best


def _apgd_objective(loss: str | LossFn, *, targeted: bool, labels: Tensor | None, x: Tensor
                    ) -> Callable[[Tensor, Tensor], Tensor]:
    """``f(logits, y) -> (N,)``, the quantity APGD maximizes."""
    if callable(loss):
        sign = -1.0 if targeted else 1.0
        return lambda logits, y: sign * loss(logits, y)
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss must be 'ce', 'dlr' or a function (logits, y) -> (N,) losses, got {loss!r}.")
    if labels is not None and not (targeted and loss == "dlr"):
        raise ValueError("labels (the true labels) are used only by the targeted DLR loss; "
                         "pass them with targeted=True, loss='dlr', or leave them out.")
    if loss == "ce":
        if targeted:
            return lambda logits, y: -F.cross_entropy(logits, y, reduction="none")
        return lambda logits, y: F.cross_entropy(logits, y, reduction="none")
    if not targeted:
        return dlr_loss
    if labels is None:
        raise ValueError("the targeted DLR loss compares the target with the true class: pass "
                         "labels=<true labels (N,)> (y holds the targets when targeted=True).")
    true = check_labels(labels, x)
    return lambda logits, y: dlr_loss_targeted(logits, true, y)


def _better(new: tuple[Tensor, Tensor], old: tuple[Tensor, Tensor]) -> Tensor:
    """Per example: is ``(adversarial, f)`` better than the old one? Adversarial first, then higher f."""
    new_success, new_value = new
    old_success, old_value = old
    return (new_success & ~old_success) | ((new_success == old_success) & (new_value > old_value))


def _apgd_point(model: Callable[[Tensor], Tensor], point: Tensor, *, y: Tensor,
                objective: Callable[[Tensor, Tensor], Tensor], targeted: bool, gradient: bool,
                check_now: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """APGD's look at one point: ``(f, adversarial?, grad f)`` per example (``grad f`` only if ``gradient``)."""
    point = point.detach().requires_grad_(gradient)
    logits = model(point)
    if check_now:
        check_logits(logits, y, grad_needed=gradient)
    value = objective(logits, y)
    if check_now and (not isinstance(value, Tensor) or value.shape != y.shape):
        raise ValueError(
            f"loss must return one loss per example, shape ({y.shape[0]},), got {describe(value)}; "
            "use reduction='none'."
        )
    predicted = logits.detach().argmax(1)
    success = predicted == y if targeted else predicted != y
    grad = torch.autograd.grad(value.sum(), point, allow_unused=True, materialize_grads=True)[0] if gradient else None
    return value.detach(), success, grad


def _apgd_run(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    x_adv: Tensor,
    lower: Tensor,
    upper: Tensor,
    *,
    eps: float,
    steps: int,
    objective: Callable[[Tensor, Tensor], Tensor],
    targeted: bool,
    momentum: float,
    rho: float,
    check: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One APGD run from ``x_adv`` (inside the box); returns the chosen point and its (success, f)."""
    n = x.shape[0]
    view = (-1, *[1] * (x.dim() - 1))
    evaluate = partial(_apgd_point, model, y=y, objective=objective, targeted=targeted)
    eta = torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device)
    value, success, grad = evaluate(x_adv, gradient=steps > 0, check_now=check)
    best_x, best_value, best_grad, best_success = x_adv.clone(), value.clone(), grad, success.clone()
    found_x, found = x_adv.clone(), success.clone()  # an adversarial iterate, where one was seen
    previous = x_adv.clone()
    checkpoints = set(apgd_checkpoints(steps))
    last_checkpoint, increases = 0, torch.zeros(n, dtype=torch.long, device=x.device)
    best_at_last_checkpoint = best_value.clone()
    halved_at_last_checkpoint = torch.ones(n, dtype=torch.bool, device=x.device)  # condition 2 waits one checkpoint

    for k in range(steps):
        with torch.no_grad():
            z = torch.clamp(x_adv + eta.view(view) * grad.sign(), lower, upper)
            a = 1.0 if k == 0 else momentum
            new = torch.clamp(x_adv + a * (z - x_adv) + (1.0 - a) * (x_adv - previous), lower, upper)
            previous, x_adv = x_adv, new
        last = k == steps - 1
        new_value, success, grad = evaluate(x_adv, gradient=not last)
        with torch.no_grad():
            increases += new_value > value
            value = new_value
            found_x = torch.where(success.view(view), x_adv, found_x)
            found |= success
            improved = value > best_value
            best_x = torch.where(improved.view(view), x_adv, best_x)
            best_value = torch.where(improved, value, best_value)
            best_success = torch.where(improved, success, best_success)
            if not last:
                best_grad = torch.where(improved.view(view), grad, best_grad)
            if k + 1 in checkpoints and not last:
                span = k + 1 - last_checkpoint
                too_few_increases = increases.double() < rho * span  # condition 1
                stalled = ~halved_at_last_checkpoint & (best_value <= best_at_last_checkpoint)  # condition 2
                halve = too_few_increases | stalled
                eta = torch.where(halve, eta / 2, eta)
                # Restart the halved examples from their best point, without momentum.
                x_adv = torch.where(halve.view(view), best_x, x_adv)
                previous = torch.where(halve.view(view), best_x, previous)
                grad = torch.where(halve.view(view), best_grad, grad)
                value = torch.where(halve, best_value, value)
                halved_at_last_checkpoint, best_at_last_checkpoint = halve, best_value.clone()
                last_checkpoint, increases = k + 1, torch.zeros_like(increases)

    use_found = found & ~best_success
    chosen = torch.where(use_found.view(view), found_x, best_x)
    return chosen, (found, torch.where(use_found, value.new_full((n,), math.inf), best_value))


def square_noise(x: Tensor, *, queries: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The random numbers :func:`square` draws for ``x``, so that a run can be replayed.

    Returns ``{"stripes": (N, C, 1, W) in {-1, 1}, "corners": (queries, N, 2) in [0, 1),
    "signs": (queries, N, C) in {-1, 1}}``. ``square(..., generator=g)`` equals
    ``square(..., noise=square_noise(x, queries=q, generator=g))`` for a generator in the
    same state; slice the example axis (``[:, i:i + 1]``, stripes ``[i:i + 1]``) to attack
    examples one by one with the numbers they got in the batch.
    """
    x = check_images(x)
    queries = check_int(queries, "queries", minimum=1)
    if x.dim() != 4:
        raise ValueError(f"square works on images (N, C, H, W), got shape {tuple(x.shape)}.")
    stripes = _random_signs((x.shape[0], x.shape[1], 1, x.shape[3]), x, generator)
    corners, signs = zip(*(_square_draw(x, generator) for _ in range(queries)))
    return {"stripes": stripes, "corners": torch.stack(corners), "signs": torch.stack(signs)}


def _random_signs(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2.0 * bits - 1.0).to(device=x.device, dtype=x.dtype)


def _square_draw(x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """One iteration's random numbers: square corners (N, 2) in [0, 1) and signs (N, C)."""
    device = generator.device if generator is not None else x.device
    corners = torch.rand((x.shape[0], 2), generator=generator, device=device).to(x.device)
    return corners, _random_signs((x.shape[0], x.shape[1]), x, generator)


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """The fraction ``p`` of pixels a square covers at ``iteration`` (Andriushchenko et al. 2020, Sec. 3).

    ``p`` starts at ``p_init`` and halves at iterations 10, 50, 200, 500, 1000, 2000, 4000,
    6000 and 8000 of a 10,000-query budget, rescaled to ``queries`` (the authors' schedule).
    """
    scaled = int(iteration / queries * 10_000)
    halvings = sum(scaled > edge for edge in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


def square(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    queries: int = 1000,
    p_init: float = 0.8,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    noise: dict[str, Tensor] | None = None,
) -> Tensor:
    """The Square Attack, L-infinity (Andriushchenko, Croce, Flammarion & Hein 2020, Alg. 1-2).

    Random search over the vertices of the eps-ball that reads only the model's outputs,
    so a model that hides its gradient (gradient masking) cannot hide from it::

        x_best = clip(x + eps * s),  s = one random sign per column (vertical stripes)
        repeat `queries` times, per example not yet fooled:
            h = round(sqrt(p * H * W)),  p from the schedule (:func:`square_fraction`)
            in a random h x h window, every pixel of channel c moves to x + eps * sign_c
            (sign_c random), the rest stays; keep the candidate if its loss is lower

    The loss is the margin ``z_y - max_{j != y} z_j`` (untargeted; the example is fooled
    once it is negative) or the cross-entropy of the target class ``y`` (targeted; fooled
    once ``y`` is the prediction), as in the paper. Gradients are never computed: the model
    runs under ``torch.no_grad()``. Windows and signs are drawn per example (the authors'
    code draws one window per iteration for the whole batch), so a batch gives each example
    what it gets alone with the same random numbers (:func:`square_noise`).

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        x: float images ``(N, C, H, W)`` in [0, 1].
        y: class indices ``(N,)``: true labels, or targets when ``targeted``.
        eps: L-infinity budget, ``eps >= 0``.
        queries: iterations (one model query per example each, plus one for the start).
        p_init: the initial fraction of pixels per square (AutoAttack's standard setting 0.8).
        targeted: reach class ``y``.
        generator: ``torch.Generator`` for reproducible squares.
        noise: explicit random numbers from :func:`square_noise` (replaces ``generator``).

    Returns:
        Adversarial images, same shape/dtype/device as ``x``, in [0, 1], ``|x_adv - x| <= eps``.
    """
    x = check_images(x)
    y = check_labels(y, x)
    eps = check_number(eps, "eps", minimum=0.0)
    queries = check_int(queries, "queries", minimum=1)
    p_init = check_number(p_init, "p_init", minimum=0.0, strict=True)
    if p_init > 1:
        raise ValueError(f"p_init is a fraction of the pixels, in (0, 1], got {p_init}.")
    if x.dim() != 4:
        raise ValueError(f"square works on images (N, C, H, W), got shape {tuple(x.shape)}.")
    if noise is not None:
        noise = _check_square_noise(noise, x, queries)
    if eps == 0:
        return x.clone()
    n, channels, height, width = x.shape
    lower, upper = linf_box(x, eps)
    view = (-1, 1, 1, 1)
    rows = torch.arange(height, device=x.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, width)
    with eval_mode(model), torch.no_grad():
        stripes = noise["stripes"] if noise is not None else _random_signs((n, channels, 1, width), x, generator)
        x_best = torch.clamp(x + eps * stripes, lower, upper)
        margin, loss = _square_loss(model, x_best, y, targeted, check=True)
        for i in range(queries):
            active = margin > 0
            if not bool(active.any()):
                break
            corners, signs = ((noise["corners"][i], noise["signs"][i]) if noise is not None
                              else _square_draw(x, generator))
            side = min(max(round(math.sqrt(square_fraction(p_init, i, queries) * height * width)), 1),
                       height, width)
            top = (corners[:, 0] * (height - side + 1)).long().view(view)
            left = (corners[:, 1] * (width - side + 1)).long().view(view)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            candidate = torch.where(window, x + eps * signs.view(n, channels, 1, 1), x_best)
            candidate = torch.clamp(candidate, lower, upper)
            new_margin, new_loss = _square_loss(model, candidate, y, targeted, check=False)
            # Fooled examples stop; the others keep a candidate that lowers the loss (or fools).
            accept = active & ((new_loss < loss) | (new_margin <= 0))
            x_best = torch.where(accept.view(view), candidate, x_best)
            loss = torch.where(accept, new_loss, loss)
            margin = torch.where(accept, new_margin, margin)
    return x_best


def _square_loss(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, targeted: bool, *, check: bool
                 ) -> tuple[Tensor, Tensor]:
    """``(margin, loss)`` per example: margin > 0 means not fooled yet; the loss is minimized."""
    logits = model(x)
    if check:
        check_logits(logits, y, grad_needed=False)
    logits = logits.float()
    chosen = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    if targeted:
        return others - chosen, F.cross_entropy(logits, y, reduction="none")
    return chosen - others, chosen - others


def _check_square_noise(noise: object, x: Tensor, queries: int) -> dict[str, Tensor]:
    n, channels, _, width = x.shape
    shapes = {"stripes": (n, channels, 1, width), "corners": (queries, n, 2), "signs": (queries, n, channels)}
    if not isinstance(noise, dict) or set(noise) != set(shapes) or any(
            not isinstance(noise[k], Tensor) or tuple(noise[k].shape) != s for k, s in shapes.items()):
        got = {k: tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__ for k, v in noise.items()} \
            if isinstance(noise, dict) else describe(noise)
        raise ValueError(f"noise must be square_noise(x, queries={queries}, ...), with shapes {shapes}; got {got}.")
    return {k: v.to(device=x.device, dtype=x.dtype if k != "corners" else v.dtype) for k, v in noise.items()}


def _check_classes(logits: Tensor, minimum: int, what: str) -> None:
    if logits.dim() != 2 or logits.shape[1] < minimum:
        raise ValueError(f"{what} needs logits (N, C) with at least {minimum} classes, got shape "
                         f"{tuple(logits.shape)}; use loss='ce'.")


__all__ += ["sign_noise"]
__all__ += ["apgd", "apgd_checkpoints", "dlr_loss", "dlr_loss_targeted", "square", "square_fraction", "square_noise"]
