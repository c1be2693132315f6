"""L-infinity attacks: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018).

Every attack here is a function of ``(model, x, y)`` that returns adversarial images:

* ``model`` maps images in [0, 1] to logits ``(N, num_classes)`` (normalization lives
  inside the model, see ``advcore.models.Normalize``);
* ``x`` is a float batch ``(N, C, H, W)`` (any ``(N, ...)`` works) with values in [0, 1];
* ``y`` holds integer class indices ``(N,)``: the true labels, or the *target* labels
  when ``targeted=True``.

The result has the shape, dtype and device of ``x``, lies in [0, 1] and within
``eps`` of ``x`` in the L-infinity norm. FGSM and PGD share one iterative core,
:func:`_iterate` (advertorch's design): FGSM *is* one PGD step of size ``eps`` from
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
    Resistant to Adversarial Attacks.
"""

from __future__ import annotations

import math
import numbers
import os
import reprlib
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LossFn",
    "attack_mode",
    "eval_mode",
    "fgsm",
    "gradient_sign",
    "linf_box",
    "pgd",
    "project_linf",
    "random_start_noise",
    "uniform_noise",
]

#: ``loss_fn(logits (N, C), y (N,)) -> per-example losses (N,)``; the default is
#: ``F.cross_entropy(logits, y, reduction="none")``.
LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- projection


def project_linf(delta: Tensor, eps: float) -> Tensor:
    """Project a perturbation onto the L-infinity ball of radius ``eps``.

    This is the clip of Algorithm 1 (Madry et al. 2018),
    ``delta = max(min(delta, eps), -eps)``, element-wise.

    Args:
        delta: perturbation of any shape.
        eps: radius, ``eps >= 0``.

    Returns:
        A new tensor (``delta`` is not modified) with values in ``[-eps, eps]``.
    """
    eps = _check_number(eps, "eps", minimum=0.0)
    if not isinstance(delta, Tensor) or not delta.is_floating_point():
        raise ValueError(f"delta must be a float tensor, got {_describe(delta)}.")
    return delta.clamp(-eps, eps)


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
    x = _check_images(x)
    eps = _check_number(eps, "eps", minimum=0.0)
    if eps == 0:
        return x.clone()
    return (x + _uniform_like(x, eps, generator)).clamp_(0.0, 1.0)


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
    x = _check_images(x)
    eps = _check_number(eps, "eps", minimum=0.0)
    restarts = _check_int(restarts, "restarts", minimum=1)
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

    Returns:
        Adversarial images, same shape/dtype/device as ``x``, in [0, 1],
        ``|x_adv - x| <= eps``. Pixels whose gradient is exactly zero do not move.
    """
    x = _check_images(x)
    y = _check_labels(y, x)
    eps = _check_number(eps, "eps", minimum=0.0)
    if eps == 0:
        return x.clone()
    # One PGD step of size eps from delta = 0 is exactly FGSM.
    return _attack(model, x, y, eps=eps, step_size=eps, steps=1, starts=None, restarts=1,
                   targeted=targeted, loss_fn=loss_fn)


def gradient_sign(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """``sign(grad_x loss(model(x), y))``: the middle image of the panda figure (Goodfellow et al. 2015, Fig. 1).

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        x: float images ``(N, C, H, W)`` in [0, 1].
        y: class indices ``(N,)``.
        loss_fn: per-example loss ``(logits, y) -> (N,)``; default cross-entropy.

    Returns:
        A tensor of ``x``'s shape with values in ``{-1, 0, 1}``; ``fgsm(model, x, y, eps=e)``
        equals ``clip(x + e * gradient_sign(model, x, y), 0, 1)``.
    """
    x = _check_images(x)
    y = _check_labels(y, x)
    with attack_mode(model):
        x_in = x.clone().requires_grad_(True)
        loss = _per_example_loss(model, x_in, y, loss_fn, check=True)
        (grad,) = torch.autograd.grad(loss.sum(), x_in, allow_unused=True, materialize_grads=True)
    return grad.sign()


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
) -> Tensor:
    """Projected gradient descent on the L-infinity ball (Madry et al. 2018, Algorithm 1).

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
        step_size: ``alpha`` of Algorithm 1, ``> 0`` (Madry et al., MNIST: 0.01 for eps 0.3).
        steps: number of PGD iterations, ``>= 1`` (MNIST: 40 for training, 100 for evaluation).
        random_start: start from a uniform point of the eps-ball instead of ``x``.
        restarts: independent random starts; keep the worst case per example.
        targeted: step towards class ``y``.
        loss_fn: per-example loss ``(logits, y) -> (N,)``; default cross-entropy.
        generator: ``torch.Generator`` (CPU or CUDA) for reproducible random starts.
        start: explicit starting perturbations ``(N, ...)`` or ``(restarts, N, ...)`` within
            the eps-ball; replaces the random draw (``random_start`` and ``generator`` are
            then not used).

    Returns:
        Adversarial images, same shape/dtype/device as ``x``, in [0, 1],
        ``|x_adv - x| <= eps`` (up to float rounding of ``x + delta``).
    """
    x = _check_images(x)
    y = _check_labels(y, x)
    eps = _check_number(eps, "eps", minimum=0.0)
    step_size = _check_number(step_size, "step_size", minimum=0.0, strict=True)
    steps = _check_int(steps, "steps", minimum=1)
    restarts = _check_int(restarts, "restarts", minimum=1)
    starts = _check_start(start, x, eps, restarts)
    if starts is None and restarts > 1 and not random_start:
        raise ValueError(
            "restarts > 1 needs random_start=True (or explicit `start`): without a random "
            "start every restart is the same deterministic run."
        )
    if eps == 0:
        return x.clone()
    if starts is None and random_start:
        starts = (_uniform_like(x, eps, generator) for _ in range(restarts))
    return _attack(model, x, y, eps=eps, step_size=step_size, steps=steps, starts=starts,
                   restarts=restarts, targeted=targeted, loss_fn=loss_fn)


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
) -> Tensor:
    """Run ``restarts`` PGD runs and keep, per example, the worst case for the model."""
    lower, upper = linf_box(x, eps)
    direction = -1.0 if targeted else 1.0
    start_iter = iter(starts) if starts is not None else None
    best = best_loss = None
    with attack_mode(model):
        for _ in range(restarts):
            x_adv = x.clone() if start_iter is None else torch.clamp(x + next(start_iter), lower, upper)
            # The final loss is only needed to choose between restarts: skip that forward pass otherwise.
            x_adv, loss = _iterate(model, x_adv, y, lower, upper, step_size=step_size, steps=steps,
                                   direction=direction, loss_fn=loss_fn, final_loss=restarts > 1)
            if best is None:
                best, best_loss = x_adv, loss
                continue
            better = loss < best_loss if targeted else loss > best_loss
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
            best_loss = torch.where(better, loss, best_loss)
    return best


def _iterate(
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
    on_step: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The inner loop of Algorithm 1 on ``x_adv = x + delta``, shared by FGSM, PGD and the landscape.

    ``x_adv`` (our own tensor, updated in place) starts inside the box ``[lower, upper]``.
    Each step: ``x_adv += direction * step_size * sign(grad)``, then clip to the box.
    ``on_step(t, losses)`` sees the per-example loss at iterate ``t`` (before step ``t``).
    Must run inside :func:`attack_mode`. Returns the last iterate and, if ``final_loss``,
    its per-example loss ``(N,)`` (one extra forward pass).
    """
    for step in range(steps):
        x_adv.requires_grad_(True)
        loss = _per_example_loss(model, x_adv, y, loss_fn, check=step == 0)
        if on_step is not None:
            on_step(step, loss.detach())
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
    return _logits_and_loss(model, x, y, loss_fn, check=check)[1]


def _logits_and_loss(
    model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss_fn: LossFn | None, *, check: bool
) -> tuple[Tensor, Tensor]:
    """``(model(x), loss_fn(model(x), y))`` with per-example losses ``(N,)``."""
    logits = model(x)
    if check:
        _check_logits(logits, y, grad_needed=torch.is_grad_enabled())
    loss = F.cross_entropy(logits, y, reduction="none") if loss_fn is None else loss_fn(logits, y)
    if check and (not isinstance(loss, Tensor) or loss.shape != y.shape):
        raise ValueError(
            f"loss_fn must return one loss per example, shape ({y.shape[0]},), got "
            f"{_describe(loss)}; use reduction='none' (e.g. "
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


# --------------------------------------------------------------------------- validation


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxtuple, _SHORT_REPR.maxdict = 2, 4, 4, 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def _describe(value: object) -> str:
    """A short description for an error message: a tensor's shape and dtype, else the value
    (a long list of images is cut to its start, so the message stays readable)."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = _SHORT_REPR.repr(value)
    if isinstance(value, (list, tuple)):
        text += f" (length {len(value)})"
    return f"{type(value).__name__} {text}"


def _warn(message: str) -> None:
    """A ``UserWarning`` attributed to the caller's code (the first frame outside advcore)."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 is the frame that called _warn
    package = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _check_number(value: object, name: str, *, minimum: float, strict: bool = False) -> float:
    """A finite real number ``>= minimum`` (``> minimum`` if ``strict``), as a float."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {_describe(value)}.")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(
            f"{name} must be a finite number {relation} {minimum:g}, got {value!r}"
            + (" (images live in [0, 1]: eps = 8/255 for CIFAR, 0.3 for MNIST)." if name == "eps" else ".")
        )
    if name == "eps" and value > 1:  # probably meant on the 0..255 scale
        _warn(
            f"eps={value:g} is larger than the whole pixel range: images here live in [0, 1], so "
            f"every pixel may jump to 0 or 1. If you meant {value:g}/255 (pixel values 0..255), "
            f"pass eps={value:g}/255 = {value / 255:.4g}; MNIST's usual budget is 0.3."
        )
    return value


def _check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_describe(value)}.")
    return int(value)


def _check_images(x: object) -> Tensor:
    """A float batch ``(N, ...)`` with ``N >= 1`` and values in [0, 1]; returned detached."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor of images (N, C, H, W) in [0, 1], got {_describe(x)}.")
    if not x.is_floating_point():
        raise ValueError(
            f"x must be a float tensor with values in [0, 1], got dtype {x.dtype}; "
            "convert uint8 images with x.float() / 255."
        )
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(
            f"x must be a non-empty batch (N, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch dimension to a single image with x.unsqueeze(0)."
        )
    x = x.detach()
    if bool((~((x >= 0) & (x <= 1))).any()):  # also catches NaN
        raise ValueError(
            f"x must lie in [0, 1], got min {x.min().item():.4g}, max {x.max().item():.4g} "
            f"(NaN present: {bool(x.isnan().any())}); pass unnormalized images, the model "
            "normalizes inside (advcore.models.Normalize)."
        )
    return x


def _check_labels(y: object, x: Tensor) -> Tensor:
    """Integer class indices ``(N,)`` matching ``x``, as int64 on ``x``'s device."""
    if not isinstance(y, Tensor):
        raise ValueError(f"y must be a tensor of class indices, shape ({x.shape[0]},), got {_describe(y)}.")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"y must hold integer class indices (int64), got dtype {y.dtype}; "
            "for one-hot or probability labels pass y.argmax(1)."
        )
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have shape (N,) = ({x.shape[0]},) to match x of shape {tuple(x.shape)}, "
            f"got {tuple(y.shape)}."
        )
    y = y.detach().to(device=x.device, dtype=torch.long)
    if bool((y < 0).any()):
        raise ValueError(f"y must hold class indices >= 0, got min {y.min().item()}.")
    return y


def _check_logits(logits: object, y: Tensor, *, grad_needed: bool) -> None:
    """The model returned ``(N, C)`` logits, labels are ``< C``, and the output is differentiable."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(
            f"model must return logits of shape (N, num_classes) = ({y.shape[0]}, C), got "
            f"{_describe(logits)}."
        )
    if logits.shape[1] < 2:
        raise ValueError(
            f"model returned {logits.shape[1]} logit(s) per example; a classifier needs one per class "
            "(at least 2). For a binary classifier with a single logit z, return torch.cat([-z, z], 1)."
        )
    if bool((y >= logits.shape[1]).any()):
        raise ValueError(
            f"y holds class index {y.max().item()} but the model has {logits.shape[1]} classes "
            f"(indices 0..{logits.shape[1] - 1}); are the labels 1-based? Pass y - 1."
        )
    finite = logits.detach().isfinite()
    if not bool(finite.all()):
        bad = int((~finite.all(1)).sum())
        raise ValueError(
            f"model returned NaN or infinite logits for {bad} of {logits.shape[0]} examples; its "
            "weights may have diverged in training (check the loss history, lower the learning rate) "
            "or its forward pass divides by zero."
        )
    _warn_if_probabilities(logits.detach())
    if grad_needed and not logits.requires_grad:
        raise ValueError(
            "model's output does not depend differentiably on its input: does the model "
            "detach, convert to numpy, or run under torch.no_grad() inside forward?"
        )


def _warn_if_probabilities(logits: Tensor) -> None:
    """Warn when a model's outputs look like softmax probabilities (rows in [0, 1] summing to 1)."""
    outputs = logits.float()
    rows = outputs.sum(1)
    if bool(((outputs >= 0) & (outputs <= 1)).all()) and bool(((rows - 1).abs() < 1e-3).all()):
        _warn(
            "model's outputs look like probabilities (every row is in [0, 1] and sums to 1), not "
            "logits: the loss and the confidences computed from them are wrong (softmax is applied "
            "twice). Remove the final softmax from the model; advcore applies it where needed."
        )


def _check_start(start: Tensor | None, x: Tensor, eps: float, restarts: int) -> Tensor | None:
    """Explicit starts as ``(restarts, *x.shape)`` inside the eps-ball, or None."""
    if start is None:
        return None
    if not isinstance(start, Tensor) or not start.is_floating_point():
        raise ValueError(f"start must be a float tensor of perturbations, got {_describe(start)}.")
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
