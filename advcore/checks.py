"""Input validation shared by every module: the errors and warnings that say what to do.

One home for the checks of the conventions in :mod:`advcore.attacks` (images are a float
batch in [0, 1], labels are class indices ``(N,)``, a model returns differentiable logits
``(N, C)``, options are numbers of the right kind): attacks, the landscape, evaluation and
training import them from here, so a message is written once and reads the same everywhere.

* errors (``ValueError``) where the input is certainly wrong, each saying how to fix it;
* warnings (:func:`warn`, attributed to the caller's own line, the first frame outside
  advcore) where it is probably wrong: ``eps > 1`` (the 0..255 scale), outputs that look like
  probabilities.
"""

from __future__ import annotations

import math
import numbers
import os
import reprlib
import sys
import warnings

import torch
from torch import Tensor

__all__ = ["check_images", "check_int", "check_labels", "check_logits", "check_number", "check_pgd_inputs",
           "describe", "warn", "warn_if_probabilities"]

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxtuple, _SHORT_REPR.maxdict = 2, 4, 4, 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def describe(value: object) -> str:
    """A short description for an error message: a tensor's shape and dtype, else the value
    (a long list of images is cut to its start, so the message stays readable)."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = _SHORT_REPR.repr(value)
    if isinstance(value, (list, tuple)):
        text += f" (length {len(value)})"
    return f"{type(value).__name__} {text}"


def warn(message: str) -> None:
    """A ``UserWarning`` attributed to the caller's code (the first frame outside advcore)."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 is the frame that called warn
    package = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def check_number(value: object, name: str, *, minimum: float, strict: bool = False) -> float:
    """A finite real number ``>= minimum`` (``> minimum`` if ``strict``), as a float."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {describe(value)}.")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(
            f"{name} must be a finite number {relation} {minimum:g}, got {value!r}"
            + (" (images live in [0, 1]: eps = 8/255 for CIFAR, 0.3 for MNIST)." if name == "eps" else ".")
        )
    if name == "eps" and value > 1:  # probably meant on the 0..255 scale
        warn(
            f"eps={value:g} is larger than the whole pixel range: images here live in [0, 1], so "
            f"every pixel may jump to 0 or 1. If you meant {value:g}/255 (pixel values 0..255), "
            f"pass eps={value:g}/255 = {value / 255:.4g}; MNIST's usual budget is 0.3."
        )
    return value


def check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {describe(value)}.")
    return int(value)


def check_images(x: object) -> Tensor:
    """A float batch ``(N, ...)`` with ``N >= 1`` and values in [0, 1]; returned detached."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor of images (N, C, H, W) in [0, 1], got {describe(x)}.")
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


def check_labels(y: object, x: Tensor) -> Tensor:
    """Integer class indices ``(N,)`` matching ``x``, as int64 on ``x``'s device."""
    if not isinstance(y, Tensor):
        raise ValueError(f"y must be a tensor of class indices, shape ({x.shape[0]},), got {describe(y)}.")
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


def check_logits(logits: object, y: Tensor, *, grad_needed: bool) -> None:
    """The model returned ``(N, C)`` logits, labels are ``< C``, and the output is differentiable."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(
            f"model must return logits of shape (N, num_classes) = ({y.shape[0]}, C), got "
            f"{describe(logits)}."
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
    warn_if_probabilities(logits.detach())
    if grad_needed and not logits.requires_grad:
        raise ValueError(
            "model's output does not depend differentiably on its input: does the model "
            "detach, convert to numpy, or run under torch.no_grad() inside forward?"
        )


def warn_if_probabilities(logits: Tensor) -> None:
    """Warn when a model's outputs look like softmax probabilities (rows in [0, 1] summing to 1)."""
    outputs = logits.float()
    rows = outputs.sum(1)
    if bool(((outputs >= 0) & (outputs <= 1)).all()) and bool(((rows - 1).abs() < 1e-3).all()):
        warn(
            "model's outputs look like probabilities (every row is in [0, 1] and sums to 1), not "
            "logits: the loss and the confidences computed from them are wrong (softmax is applied "
            "twice). Remove the final softmax from the model; advcore applies it where needed."
        )


def check_pgd_inputs(x: object, y: object, *, eps: object, step_size: object, steps: object,
                     restarts: object) -> tuple[Tensor, Tensor, float, float, int, int]:
    """The inputs of a PGD run (:func:`advcore.attacks.pgd`, :func:`advcore.landscape.pgd_landscape`),
    checked and converted: ``(x, y, eps, step_size, steps, restarts)``."""
    x = check_images(x)
    return (x, check_labels(y, x), check_number(eps, "eps", minimum=0.0),
            check_number(step_size, "step_size", minimum=0.0, strict=True),
            check_int(steps, "steps", minimum=1), check_int(restarts, "restarts", minimum=1))
