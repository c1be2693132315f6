"""Checks for the book's coding exercises: run the student's function, explain what is wrong.

Each ``check_*`` function calls the student's function on small *hidden* cases -- tiny
linear and tanh-MLP models on random images in [0, 1] with many pixels at or next to 0
and 1 (so a missing clip shows), several batch sizes and shapes, ``eps = 0`` -- compares
the result with :mod:`advcore.attacks` and returns a :class:`CheckResult` that says in
plain words what is right or what is wrong ("the loss went down -- did you subtract
instead of add?"), never a bare assert.

A check never raises, so a notebook never fails because of an exercise:

* a stub that still raises ``NotImplementedError`` gives ``passed=False`` and the single
  message :data:`NOT_ATTEMPTED`;
* any other exception from the student's function is reported with its type, its
  message, the hidden case and, for common errors, a hint.

Checks are deterministic (fixed seeds; the global random state is restored afterwards,
so running a check does not change the rest of the notebook), run in well under a second
on a CPU, download nothing and do not depend on the profile (``smoke``, ``cpu``, ``gpu``):
the hidden cases are tiny CPU tensors.

In a notebook::

    from advcore.exercises import check_fgsm

    def my_fgsm(model, x, y, eps):
        raise NotImplementedError  # your code here

    check_fgsm(my_fgsm)            # displays the feedback

The ``reference_*`` functions are right answers the checks compare with (and the tests use):
``tests/test_exercises.py`` proves that they pass their checks and that typical wrong answers
(sign flipped, missing clip, grad instead of sign, no projection, weights swapped, ...) fail
with their diagnosis. The book's own solutions are the solution cells of the chapters (written
out, so a student reads the code); each runs through the same check as the stub, and
``tests/test_book.py`` fails when one of them reports anything but "passed" in the built book.

References:
    Goodfellow, Shlens, Szegedy (2015). Explaining and Harnessing Adversarial Examples.
    Madry, Makelov, Schmidt, Tsipras, Vladu (2018). Towards Deep Learning Models
    Resistant to Adversarial Attacks. ICLR 2018 (the book cites this text's numbering).
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advcore import attacks

__all__ = [
    "NOT_ATTEMPTED",
    "CheckResult",
    "check_fgsm",
    "check_fgsm_mix_loss",
    "check_linear_worst_case",
    "check_project_linf",
    "check_targeted_fgsm",
    "check_targeted_pgd_step",
    "check_uniform_noise",
    "reference_fgsm",
    "reference_fgsm_mix_loss",
    "reference_linear_worst_case",
    "reference_project_linf",
    "reference_targeted_fgsm",
    "reference_targeted_pgd_step",
    "reference_uniform_noise",
]

#: The one message of a check whose function still raises ``NotImplementedError``.
NOT_ATTEMPTED = "Not attempted yet: fill in the function above and re-run this cell."

_ATOL = 1e-5  # values are float32 results of a handful of operations in [0, 1]
_CLASSES = 4  # classes of the hidden tiny models


# --------------------------------------------------------------------------- the result


@dataclass(repr=False)
class CheckResult:
    """The outcome of a check.

    Attributes:
        passed: ``True`` when every hidden case is right (warnings allowed).
        messages: plain-language lines, each starting with ✓ (right), ✗ (wrong) or
            ⚠ (works, but worth fixing); or exactly ``[NOT_ATTEMPTED]``.
        name: the check's name, for the heading of the feedback.

    ``bool(result)`` is ``result.passed``. In Jupyter the result displays as markdown.
    """

    passed: bool
    messages: list[str] = field(default_factory=list)
    name: str = "check"

    def __bool__(self) -> bool:
        return self.passed

    def _status(self) -> str:
        return "passed" if self.passed else "not passed yet"

    def _not_attempted(self) -> bool:
        return self.messages == [NOT_ATTEMPTED]

    def __str__(self) -> str:
        if self._not_attempted():
            return f"{self.name}: {NOT_ATTEMPTED}"
        return "\n".join([f"{self.name}: {self._status()}", *(f"  {m}" for m in self.messages)])

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        if self._not_attempted():
            return f"**{self.name}**: {NOT_ATTEMPTED}"
        lines = [f"**{self.name}**: {self._status()}", ""]
        return "\n".join(lines + [f"- {m}" for m in self.messages])


# --------------------------------------------------------------------------- reference solutions


def reference_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Untargeted FGSM (Goodfellow et al. 2015): ``clip(x + eps * sign(grad_x J(x, y)), 0, 1)``."""
    return attacks.fgsm(model, x, y, eps=eps)


def reference_targeted_fgsm(model: nn.Module, x: Tensor, target: Tensor, eps: float) -> Tensor:
    """Targeted FGSM: one step *down* the target-class loss, ``clip(x - eps * sign(grad), 0, 1)``."""
    return attacks.fgsm(model, x, target, eps=eps, targeted=True)


def reference_uniform_noise(x: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """Goodfellow et al.'s (2015) control: ``clip(x + U(-eps, eps), 0, 1)`` per pixel."""
    return attacks.uniform_noise(x, eps=eps, generator=generator)


def reference_project_linf(delta: Tensor, eps: float) -> Tensor:
    """Projection onto the L-infinity ball, ``max(min(delta, eps), -eps)`` (Madry et al. 2018, Sec. 3)."""
    return attacks.project_linf(delta, eps)


def reference_targeted_pgd_step(
    model: nn.Module, x: Tensor, delta: Tensor, target: Tensor, eps: float, step_size: float
) -> Tensor:
    """One targeted PGD step (Madry et al. 2018, Sec. 3, stepping *down* the target loss).

    ``delta - step_size * sign(grad_delta loss(model(x + delta), target))``, projected onto
    the eps-ball, then ``x + delta`` kept in [0, 1]. Returns the new ``delta`` (detached).
    """
    delta = delta.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x + delta), target)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = delta.detach() - step_size * grad.sign()
    delta = attacks.project_linf(delta, eps)  # stay in the eps-ball
    return (x + delta).clamp(0, 1) - x  # and keep the image valid


def reference_fgsm_mix_loss(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float) -> Tensor:
    """Goodfellow et al.'s (2015) adversarial objective, Eq. (6).

    ``alpha * J(x, y) + (1 - alpha) * J(x_fgsm, y)`` with ``x_fgsm = clip(x + eps * sign(grad_x J), 0, 1)``
    and ``J`` the mean cross-entropy. ``x_fgsm`` is a constant: no gradient flows through
    the attack. This is what Goodfellow et al. do in practice and loses nothing:
    ``sign`` has zero derivative almost everywhere, so differentiating through ``x_fgsm``
    would give the same parameter gradient at the cost of a second-order backward pass.
    """
    x_fgsm = attacks.fgsm(model, x, y, eps=eps)  # detached: a constant for the outer gradient
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_fgsm), y)


def reference_linear_worst_case(w: Tensor, eps: float) -> float:
    """``max over ||eta||_inf <= eps of w^T eta = eps * ||w||_1``, attained at ``eta = eps * sign(w)``.

    Goodfellow et al. (2015), Sec. 3: the activation change grows linearly with the
    dimension ``n`` while ``||eta||_inf`` stays ``eps``.
    """
    return float(eps * w.abs().sum())


# --------------------------------------------------------------------------- machinery


class _NotAttempted(Exception):
    """The student's function still raises ``NotImplementedError``."""


class _StudentError(Exception):
    """The student's function raised; ``error`` is what it raised."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Finding:
    """One diagnosis; ``key`` names the mistake so each is reported once per check."""

    key: str
    text: str
    warning: bool = False


def _fail(key: str, text: str) -> _Finding:
    return _Finding(key, f"✗ {text}")


def _warn(key: str, text: str) -> _Finding:
    return _Finding(key, f"⚠ {text}", warning=True)


@dataclass
class _Case:
    """A hidden case; checks use the fields they need (``x`` holds images, ``delta`` or ``w``)."""

    description: str
    eps: float
    x: Tensor
    y: Tensor | None = None
    model: nn.Module | None = None
    delta: Tensor | None = None
    step_size: float = 0.0
    alpha: float = 0.5
    seed: int = 0
    stats: bool = False  # the large interior case on which noise statistics are tested
    other: Any = None  # a second input some checks need (the target model of a transfer)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the student's function, turning its exceptions into ours (never re-raised)."""
    try:
        return fn(*args)
    except NotImplementedError as exc:
        raise _NotAttempted() from exc
    except Exception as exc:  # noqa: BLE001 - any error of the student's code is reported
        raise _StudentError(exc) from exc


_HINTS = (
    ("does not require grad", "The gradient cannot reach x: make a copy that requires grad first, "
     "`x = x.clone().detach().requires_grad_(True)`, and compute the loss from that copy."),
    ("'NoneType'", "Something is None -- often `x.grad` when x did not require grad or "
     "`loss.backward()` was not called; `torch.autograd.grad(loss, x)` returns the gradient directly."),
    ("leaf Variable that requires grad", "You changed a tensor that requires grad in place; build a "
     "new tensor instead (`x_adv = x + ...`) or `.detach()` first."),
    ("same device", "The check passes CPU tensors: do not move them to another device inside your "
     "function (use `x.device`)."),
    ("backward through the graph a second time", "A graph was used after `.backward()` freed it: get "
     "the input gradient with `torch.autograd.grad(loss, x)` on a separate forward pass."),
    ("positional argument", "The check calls your function with the arguments of the stub, in that "
     "order: keep the stub's signature."),
)


def _error_messages(error: Exception, case: _Case) -> list[str]:
    """Plain-language report of an exception raised by the student's function."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else "(no message)"
    text = text if len(text) <= 300 else text[:297] + "..."
    messages = [f"✗ Your function raised {type(error).__name__}: {text} (on {case.description})."]
    messages += [hint for pattern, hint in _HINTS if pattern in str(error)][:1]
    return messages


def _run(
    name: str,
    what: str,
    fn: object,
    make_cases: Callable[[], list[_Case]],
    check_case: Callable[[Callable[..., Any], _Case], list[_Finding]],
    praise: str = "",
) -> CheckResult:
    """Run ``check_case`` on every hidden case and summarize; never raises."""
    if not callable(fn):
        return CheckResult(False, [f"✗ Pass your function itself, `{name}(my_function)`, "
                                   f"not {type(fn).__name__} {fn!r:.60}."], name)
    failures: dict[str, str] = {}
    warnings: dict[str, str] = {}
    wrong = 0
    # The notebook's random stream is left as it was; gradients work even under an outer no_grad().
    with torch.random.fork_rng(devices=[]), torch.enable_grad(), _one_thread():
        cases = make_cases()
        for case in cases:
            try:
                findings = check_case(fn, case)
            except _NotAttempted:
                return CheckResult(False, [NOT_ATTEMPTED], name)
            except _StudentError as err:
                return CheckResult(False, _error_messages(err.error, case), name)
            except Exception as exc:  # noqa: BLE001 - a result the check cannot interpret
                findings = [_fail("unreadable", f"The check could not interpret your result on "
                                  f"{case.description} ({type(exc).__name__}: {exc}).")]
            wrong += any(not f.warning for f in findings)
            for finding in findings:
                (warnings if finding.warning else failures).setdefault(finding.key, finding.text)
    if wrong:
        summary = f"✗ {wrong} of {len(cases)} hidden cases {'is' if wrong == 1 else 'are'} wrong."
        return CheckResult(False, [summary, *_specific_first(failures), *warnings.values()], name)
    summary = f"✓ All {len(cases)} hidden cases match {what}." + (f" {praise}" if praise else "")
    return CheckResult(True, [summary, *warnings.values()], name)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the hidden cases are tiny, and threads only cost time on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _specific_first(failures: dict[str, str]) -> list[str]:
    """The diagnoses; a generic "differs from ..." (key ``other``) only when nothing specific was found."""
    specific = [text for key, text in failures.items() if key != "other"]
    return specific or list(failures.values())


# --------------------------------------------------------------------------- hidden cases


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(batch: int, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Random images in [0, 1]; about a quarter of the pixels are 0, 0.01, 0.99 or 1."""
    x = torch.rand((batch, *shape), generator=g)
    edges = torch.tensor([0.0, 0.01, 0.99, 1.0])[torch.randint(0, 4, x.shape, generator=g)]
    return torch.where(torch.rand(x.shape, generator=g) < 0.25, edges, x)


def _tiny_model(kind: str, in_features: int, g: torch.Generator) -> nn.Module:
    """A linear or one-hidden-layer tanh model on flattened inputs, seeded by ``g``."""
    if kind == "linear":
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, _CLASSES)]
    else:
        layers = [nn.Flatten(), nn.Linear(in_features, 8), nn.Tanh(), nn.Linear(8, _CLASSES)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for param in model.parameters():
            scale = 1.5 / math.sqrt(param.shape[1]) if param.dim() == 2 else 0.1
            param.copy_(torch.randn(param.shape, generator=g) * scale)
    return model.eval()


# (model kind, batch size, shape of one input, eps): batches of 1 to 6, images and flat
# vectors, eps = 0 and an eps so large (0.5) that the clip to [0, 1] acts on most pixels.
_ATTACK_SPECS = (
    ("linear", 4, (1, 4, 4), 0.1),
    ("mlp", 1, (1, 4, 4), 0.3),
    ("mlp", 5, (3, 2, 2), 0.05),
    ("linear", 3, (10,), 0.25),
    ("linear", 2, (1, 4, 4), 0.0),
    ("mlp", 6, (1, 3, 3), 0.5),
)


def _describe(kind: str, batch: int, shape: tuple[int, ...], **values: float) -> str:
    what = "images" if len(shape) > 1 else "vectors"
    settings = ", ".join(f"{k}={v:g}" for k, v in values.items())
    return f"a {kind} model, a batch of {batch} {what} of shape {tuple(shape)}, {settings}"


def _attack_cases(seed: int, specs: tuple = _ATTACK_SPECS) -> list[_Case]:
    g = _generator(seed)
    cases = []
    for kind, batch, shape, eps in specs:
        model = _tiny_model(kind, math.prod(shape), g)
        x, y = _images(batch, shape, g), torch.randint(0, _CLASSES, (batch,), generator=g)
        cases.append(_Case(_describe(kind, batch, shape, eps=eps), eps, x, y, model))
    return cases


# --------------------------------------------------------------------------- shared diagnoses


def _unchanged(after: Tensor, before: Tensor, name: str) -> list[_Finding]:
    """A failure if the student's function modified our copy of an input in place."""
    if after.shape == before.shape and torch.equal(after.detach(), before):
        return []
    return [_fail("in_place", f"Your function changed its input `{name}` in place: work on a copy "
                  f"(`{name}.clone()`) or build a new tensor (`{name} + ...`); the caller still "
                  f"needs the original `{name}`.")]


def _tensor_problem(out: object, like: Tensor, name: str) -> _Finding | None:
    """Why ``out`` cannot be compared with a tensor shaped like ``like``, or None."""
    if not isinstance(out, Tensor):
        return _fail("type", f"Your function returned {type(out).__name__}, not a tensor: did you "
                     f"forget `return {name}`?")
    if not (out.is_floating_point()):
        return _fail("dtype", f"Your `{name}` has dtype {out.dtype}; it must be a float tensor.")
    if out.shape != like.shape:
        return _fail("shape", f"Your `{name}` has shape {tuple(out.shape)} but should have shape "
                     f"{tuple(like.shape)}, like the input (did you flatten it, or drop the batch "
                     "dimension?).")
    return None


def _grad_warning(out: Tensor, name: str) -> list[_Finding]:
    if not out.requires_grad:
        return []
    return [_warn("requires_grad", f"Your `{name}` still requires grad (it is attached to the "
                  f"autograd graph): return `{name}.detach()`, so later code does not "
                  "backpropagate into the attack and memory is freed.")]


def _loss(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _matches(out: Tensor, ref: Tensor, grad: Tensor | None = None) -> bool:
    """Equal up to float rounding; pixels whose gradient is ~0 may differ (their sign is noise)."""
    differ = (out - ref).abs() > _ATOL
    if grad is not None:
        differ &= grad.abs() > 1e-7 * grad.abs().max()
    return not bool(differ.any())


def _step_pattern(moved: Tensor, direction: Tensor, size: float, mask: Tensor) -> tuple[str, float]:
    """Classify a signed step ``moved`` where no clip acts (``mask``) against the right one.

    Returns ``("right" | "sign" | "grad" | "size" | "other", typical step length)``:
    opposite direction, right directions with varying lengths (the raw gradient), or
    right directions with a constant wrong length.
    """
    selected = mask & (direction != 0)
    if int(selected.sum()) < 2:
        return "other", 0.0
    moved, direction = moved[selected], direction[selected]
    if (moved.sign() == -direction).float().mean() > 0.9:
        return "sign", 0.0
    if (moved.sign() != direction).float().mean() > 0.1:
        return "other", 0.0
    lengths = moved.abs()
    if lengths.max() - lengths.min() > 1e-4:
        return "grad", lengths.mean().item()
    length = lengths.mean().item()
    return ("right" if abs(length - size) <= _ATOL else "size"), length


# --------------------------------------------------------------------------- FGSM


def check_fgsm(fn: Callable[[nn.Module, Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Check an untargeted FGSM, ``fn(model, x, y, eps) -> x_adv`` (Goodfellow et al. 2015).

    Expected: ``x_adv = clip(x + eps * sign(grad_x J(model(x), y)), 0, 1)`` with ``J`` the
    cross-entropy, compared with :func:`advcore.attacks.fgsm` on six hidden cases.
    """
    return _run("check_fgsm", "FGSM", fn, lambda: _attack_cases(643),
                lambda f, case: _check_fgsm_case(f, case, targeted=False))


def check_targeted_fgsm(fn: Callable[[nn.Module, Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Check a targeted FGSM, ``fn(model, x, target, eps) -> x_adv`` (the panda -> "gibbon" demo).

    Expected: one step *down* the loss of the target class,
    ``clip(x - eps * sign(grad_x J(model(x), target)), 0, 1)``, compared with
    :func:`advcore.attacks.fgsm` with ``targeted=True``.
    """
    return _run("check_targeted_fgsm", "targeted FGSM", fn, lambda: _attack_cases(644),
                lambda f, case: _check_fgsm_case(f, case, targeted=True))


def _check_fgsm_case(fn: Callable[..., Any], case: _Case, *, targeted: bool) -> list[_Finding]:
    x, y = case.x.clone(), case.y.clone()
    out = _call(fn, case.model, x, y, case.eps)
    findings = _unchanged(x, case.x, "x") + _unchanged(y, case.y, "target" if targeted else "y")
    problem = _tensor_problem(out, case.x, "x_adv")
    if problem:
        return findings + [problem]
    findings += _grad_warning(out, "x_adv")
    out = out.detach().to("cpu", torch.float32)
    ref = attacks.fgsm(case.model, case.x, case.y, eps=case.eps, targeted=targeted)
    grad = attacks.input_gradient(case.model, case.x, case.y)
    if _matches(out, ref, grad):
        return findings
    return findings + _diagnose_fgsm(case, out, ref, grad, targeted)


def _diagnose_fgsm(case: _Case, out: Tensor, ref: Tensor, grad: Tensor, targeted: bool) -> list[_Finding]:
    x, eps = case.x, case.eps
    direction = -grad.sign() if targeted else grad.sign()
    if eps > 0 and _matches(out, eps * direction, grad):
        return [_fail("returned_eta", "You returned the perturbation `eps * sign(grad)`, not the "
                      "adversarial image: return `x + perturbation`, clipped to [0, 1].")]
    findings = []
    if out.min() < -_ATOL or out.max() > 1 + _ATOL:
        findings.append(_fail("clip", f"Your x_adv leaves [0, 1]: did you clip with `.clamp(0, 1)`? "
                              f"(values from {out.min():.3g} to {out.max():.3g} at eps={eps:g})"))
        out = out.clamp(0, 1)
        if _matches(out, ref, grad):
            return findings
    if eps == 0:
        return findings + [_fail("eps0", f"With eps = 0, x_adv must equal x; yours moves pixels by "
                                 f"up to {(out - x).abs().max():.3g}.")]
    if _matches(out, (x - eps * direction).clamp(0, 1), grad):
        return findings + [_fgsm_message("sign", eps, case, out, targeted)]
    interior = (x >= eps + _ATOL) & (x <= 1 - eps - _ATOL)  # no clip acts on these pixels
    pattern, length = _step_pattern(out - x, direction, eps, interior)
    return findings + [_fgsm_message(pattern, length, case, out, targeted)]


def _fgsm_message(pattern: str, length: float, case: _Case, out: Tensor, targeted: bool) -> _Finding:
    before, after = _loss(case.model, case.x, case.y), _loss(case.model, out, case.y)
    if pattern == "sign" and targeted:
        return _fail("sign", f"Your step went up the target-class loss ({before:.3f} -> {after:.3f}): "
                     "that is the untargeted step. A targeted attack steps down the loss of the "
                     "target class: `x - eps * grad.sign()`.")
    if pattern == "sign":
        return _fail("sign", f"The perturbation points the wrong way: the loss went down "
                     f"({before:.3f} -> {after:.3f}) -- did you subtract instead of add? FGSM steps "
                     "up the loss: `x + eps * grad.sign()`.")
    if pattern == "grad":
        return _fail("grad", "Your pixels move by different amounts: FGSM uses only the sign of the "
                     "gradient, so every pixel moves by exactly eps -- `eps * grad.sign()`, not "
                     "`eps * grad`.")
    if pattern == "size":
        return _fail("size", f"Your pixels move by {length:.3g}, not by eps = {case.eps:g}: the step "
                     "is `eps * grad.sign()`.")
    if pattern == "right":
        return _fail("edges", "Your step is right away from 0 and 1 but wrong near them: after the "
                     "step, clip to [0, 1] with `.clamp(0, 1)` and nothing else.")
    ref = attacks.fgsm(case.model, case.x, case.y, eps=case.eps, targeted=targeted)
    wrong = int(((out - ref).abs() > _ATOL).sum())
    loss_name = "target-class loss" if targeted else "loss"
    return _fail("other", f"Your x_adv differs from {'targeted ' if targeted else ''}FGSM on {wrong} "
                 f"of {out.numel()} pixels ({case.description}; {loss_name}: yours "
                 f"{after:.3f}, FGSM's {_loss(case.model, ref, case.y):.3f}). Recipe: the gradient "
                 "of `F.cross_entropy(model(x), y)` with respect to x, its sign, a step of eps, "
                 "then `.clamp(0, 1)`.")


# --------------------------------------------------------------------------- uniform noise


def check_uniform_noise(fn: Callable[[Tensor, float, torch.Generator], Tensor]) -> CheckResult:
    """Check the control experiment's noise, ``fn(x, eps, generator) -> x_noisy`` (Goodfellow et al. 2015).

    Expected: ``clip(x + u, 0, 1)`` with ``u`` drawn uniformly from ``[-eps, eps]`` for every
    pixel independently. The check tests properties, not one random stream: the range, the
    bound ``|x_noisy - x| <= eps``, and on 16,384 pixels away from the edges that the noise
    is centred, spread like U(-eps, eps) (std ``eps / sqrt(3)``, flat histogram), differs
    between pixels and between images, and comes from ``generator`` (a warning if not).
    """
    return _run("check_uniform_noise", "uniform noise in [-eps, eps]", fn, _noise_cases,
                _check_noise_case)


def _noise_cases() -> list[_Case]:
    g = _generator(645)
    interior = 0.3 + 0.4 * torch.rand((64, 1, 16, 16), generator=g)  # eps = 0.2: no clip acts
    return [
        _Case("a batch of 64 images 1x16x16 with values in [0.3, 0.7], eps=0.2", 0.2, interior,
              seed=1, stats=True),
        _Case("a batch of 8 images 1x4x4 with pixels at 0 and 1, eps=0.3", 0.3,
              _images(8, (1, 4, 4), g), seed=2),
        _Case("a batch of 3 images 3x5x5, eps=0.1", 0.1, _images(3, (3, 5, 5), g), seed=3),
        _Case("a batch of 5 vectors of length 20, eps=0.05", 0.05, _images(5, (20,), g), seed=4),
        _Case("a batch of 2 images 1x4x4, eps=0", 0.0, _images(2, (1, 4, 4), g), seed=5),
    ]


def _check_noise_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    x = case.x.clone()
    out = _call(fn, x, case.eps, _generator(case.seed))
    findings = _unchanged(x, case.x, "x")
    problem = _tensor_problem(out, case.x, "x_noisy")
    if problem:
        return findings + [problem]
    findings += _grad_warning(out, "x_noisy")
    out = out.detach().to("cpu", torch.float32)
    findings += _noise_bounds(out, case)
    if case.stats and not findings:
        findings += _noise_statistics(out - case.x, case.eps) + _noise_generator(fn, case, out)
    return findings


def _noise_bounds(out: Tensor, case: _Case) -> list[_Finding]:
    findings = []
    if out.min() < -_ATOL or out.max() > 1 + _ATOL:
        findings.append(_fail("clip", f"Your x_noisy leaves [0, 1]: did you clip with `.clamp(0, 1)`? "
                              f"(values from {out.min():.3g} to {out.max():.3g} at eps={case.eps:g})"))
    largest = (out - case.x).abs().max().item()
    if case.eps == 0 and largest > _ATOL:
        findings.append(_fail("eps0", f"With eps = 0 the image must not change; yours moves pixels by "
                              f"up to {largest:.3g}."))
    elif largest > case.eps + _ATOL:
        findings.append(_fail("bound", f"Some pixels move by {largest:.3g}, more than eps = "
                              f"{case.eps:g}: the noise must lie in [-eps, eps]. (`torch.randn` is "
                              "Gaussian and unbounded; use `(2 * torch.rand(x.shape, "
                              "generator=generator) - 1) * eps`.)"))
    return findings


def _noise_statistics(noise: Tensor, eps: float) -> list[_Finding]:
    """Centred, spread like U(-eps, eps), independent across pixels and images."""
    if (noise[0] - noise[1]).abs().max() <= _ATOL:
        return [_fail("same_image_noise", "Every image in the batch got the same noise: draw noise of "
                      "the whole batch's shape, `x.shape`, not of one image.")]
    if noise.flatten(1).std(dim=1).max() <= 0.05 * eps:
        return [_fail("same_pixel_noise", "All pixels of an image got the same noise value: draw one "
                      "number per pixel, `torch.rand(x.shape, generator=generator)`.")]
    mean = noise.mean().item() / eps
    if abs(mean) > 0.35:
        side = "positive" if mean > 0 else "negative"
        return [_fail("one_sided", f"Your noise is only {side} (mean {mean:+.2f} eps): `torch.rand` is "
                      "uniform on [0, 1); shift and scale it to [-eps, eps] with "
                      "`(2 * torch.rand(...) - 1) * eps`.")]
    if abs(mean) > 0.05:
        return [_fail("mean", f"Your noise is not centred at 0 (mean {mean:+.2f} eps); "
                      "U(-eps, eps) has mean 0.")]
    return _noise_spread(noise, eps)


def _noise_spread(noise: Tensor, eps: float) -> list[_Finding]:
    if (noise.abs() >= eps - _ATOL).float().mean() > 0.5:
        return [_fail("sign_noise", "Every pixel moves by exactly +eps or -eps: that is random-sign "
                      "noise. The control experiment draws each pixel's noise uniformly from "
                      "[-eps, eps].")]
    std, expected = noise.std().item(), eps / math.sqrt(3)
    if not 0.93 <= std / expected <= 1.07:
        return [_fail("spread", f"Your noise's spread (std {std:.3g}) does not match U(-eps, eps) "
                      f"(std eps/sqrt(3) = {expected:.3g}): is it scaled to [-eps, eps]?")]
    shares = torch.histc(noise, bins=4, min=-eps, max=eps) / noise.numel()
    if (shares - 0.25).abs().max() > 0.03:
        fractions = ", ".join(f"{s:.2f}" for s in shares.tolist())
        return [_fail("not_uniform", f"Your noise is not uniform: the four quarters of [-eps, eps] "
                      f"hold fractions {fractions} of the pixels, 0.25 each for U(-eps, eps).")]
    return []


def _noise_generator(fn: Callable[..., Any], case: _Case, out: Tensor) -> list[_Finding]:
    """Warnings when the noise does not come from the generator passed in."""
    again = _call(fn, case.x.clone(), case.eps, _generator(case.seed))
    if not torch.equal(again.detach().to("cpu", torch.float32), out):
        return [_warn("generator", "The same generator seed gave different noise: draw from the "
                      "generator you are given, `torch.rand(x.shape, generator=generator)`, so runs "
                      "can be reproduced.")]
    other = _call(fn, case.x.clone(), case.eps, _generator(case.seed + 1000))
    if torch.equal(other.detach().to("cpu", torch.float32), out):
        return [_warn("generator", "Two different generators gave identical noise: do not re-seed "
                      "inside your function; draw from `generator`.")]
    return []


# --------------------------------------------------------------------------- projection


def check_project_linf(fn: Callable[[Tensor, float], Tensor]) -> CheckResult:
    """Check the L-infinity projection, ``fn(delta, eps) -> delta`` (Madry et al. 2018, Sec. 3).

    Expected: every entry clipped to ``[-eps, eps]`` on its own; entries inside the ball
    unchanged; compared with :func:`advcore.attacks.project_linf`.
    """
    return _run("check_project_linf", "the L-infinity projection", fn, _projection_cases,
                _check_projection_case)


def _projection_cases() -> list[_Case]:
    g = _generator(646)

    def uniform(shape: tuple[int, ...], low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(shape, generator=g)

    return [
        _Case("a batch of perturbations of shape (4, 1, 4, 4), eps=0.3", 0.3, uniform((4, 1, 4, 4), -0.6, 0.6)),
        _Case("a vector of length 10, eps=0.1", 0.1, uniform((10,), -0.3, 0.3)),
        _Case("a perturbation of shape (2, 3, 2, 2), eps=0", 0.0, uniform((2, 3, 2, 2), -1, 1)),
        _Case("a perturbation of shape (5, 8) inside the ball, eps=0.5", 0.5, uniform((5, 8), -0.45, 0.45)),
        _Case("the vector [0.03, -0.03, 10, -10, 0, 0.02], eps=0.03", 0.03,
              torch.tensor([0.03, -0.03, 10.0, -10.0, 0.0, 0.02])),
    ]


def _check_projection_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    delta = case.x.clone()
    out = _call(fn, delta, case.eps)
    findings = _unchanged(delta, case.x, "delta")
    problem = _tensor_problem(out, case.x, "delta")
    if problem:
        return findings + [problem]
    findings += _grad_warning(out, "delta")
    out = out.detach().to("cpu", torch.float32)
    if _matches(out, attacks.project_linf(case.x, case.eps)):
        return findings
    return findings + _diagnose_projection(out, case.x, case.eps)


def _diagnose_projection(out: Tensor, delta: Tensor, eps: float) -> list[_Finding]:
    above, below = bool(out.max() > eps + _ATOL), bool(out.min() < -eps - _ATOL)
    if above or below:
        where = {(True, True): "outside [-eps, eps]", (True, False): "above eps",
                 (False, True): "below -eps"}[(above, below)]
        advice = "Did you forget to project?" if above and below else "You clipped only one side:"
        return [_fail("bound", f"Entries {where} remain (from {out.min():.3g} to {out.max():.3g} at "
                      f"eps={eps:g}). {advice} Clip both sides, `delta.clamp(-eps, eps)`.")]
    if _matches(out, eps * delta.sign()):
        return [_fail("sign", "You set every entry to +eps or -eps (`eps * delta.sign()`): a "
                      "projection leaves entries already inside the ball unchanged and only clips "
                      "the others.")]
    if _matches(out, delta.clamp(0, eps)):
        return [_fail("nonnegative", "Negative entries became 0: the ball is [-eps, eps] in every "
                      "coordinate, not [0, eps].")]
    ratio = out[delta != 0] / delta[delta != 0]
    if ratio.numel() > 1 and ratio.std() < 1e-4 and abs(ratio.mean() - 1) > 1e-4:
        return [_fail("rescale", "You rescaled the whole perturbation: the L-infinity ball is a box, "
                      "so each entry is clipped on its own and entries inside stay unchanged.")]
    inside = delta.abs() < eps - _ATOL
    if not _matches(out[inside], delta[inside]):
        return [_fail("other", "Entries already inside the ball changed; the projection leaves them "
                      "as they are and clips only the entries beyond +-eps.")]
    return [_fail("outside", "Entries outside the ball must move to its nearest edge, +eps or -eps "
                  "(clip them), keeping their sign: `delta.clamp(-eps, eps)`.")]


# --------------------------------------------------------------------------- targeted PGD step


def check_targeted_pgd_step(
    fn: Callable[[nn.Module, Tensor, Tensor, Tensor, float, float], Tensor],
) -> CheckResult:
    """Check one targeted PGD step, ``fn(model, x, delta, target, eps, step_size) -> delta``.

    Expected (Madry et al. 2018, Sec. 3, stepping *down* the target-class loss):
    ``delta - step_size * sign(grad_delta J(model(x + delta), target))``, projected onto
    the eps-ball, with ``x + delta`` kept in [0, 1]; compared with one step of
    :func:`advcore.attacks.pgd` (``targeted=True``, ``start=delta``).
    """
    return _run("check_targeted_pgd_step", "one targeted PGD step", fn, _pgd_cases, _check_pgd_case)


# (model kind, batch, input shape, eps, step_size)
_PGD_SPECS = (
    ("linear", 4, (1, 4, 4), 0.1, 0.04),
    ("mlp", 2, (1, 4, 4), 0.3, 0.1),
    ("mlp", 3, (12,), 0.05, 0.02),
    ("linear", 1, (3, 2, 2), 0.2, 0.25),  # a step longer than eps: projection always acts
    ("linear", 2, (1, 3, 3), 0.0, 0.01),
    ("mlp", 5, (1, 3, 3), 0.3, 0.01),     # delta = 0: the first step
)


def _pgd_cases() -> list[_Case]:
    g = _generator(647)
    cases = []
    for index, (kind, batch, shape, eps, step) in enumerate(_PGD_SPECS):
        model = _tiny_model(kind, math.prod(shape), g)
        x, target = _images(batch, shape, g), torch.randint(0, _CLASSES, (batch,), generator=g)
        delta = _start(x, eps, g) if index < len(_PGD_SPECS) - 1 else torch.zeros_like(x)
        description = _describe(kind, batch, shape, eps=eps, step_size=step)
        cases.append(_Case(description, eps, x, target, model, delta, step_size=step))
    return cases


def _start(x: Tensor, eps: float, g: torch.Generator) -> Tensor:
    """A valid PGD iterate: a third of the entries on the ball's edge, ``x + delta`` in [0, 1]."""
    delta = eps * (2 * torch.rand(x.shape, generator=g) - 1)
    edge = eps * torch.randint(0, 2, x.shape, generator=g).mul(2).sub(1)
    delta = torch.where(torch.rand(x.shape, generator=g) < 1 / 3, edge, delta)
    return ((x + delta).clamp(0, 1) - x).clamp(-eps, eps)  # the second clip undoes rounding


def _check_pgd_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    x, delta, target = case.x.clone(), case.delta.clone(), case.y.clone()
    out = _call(fn, case.model, x, delta, target, case.eps, case.step_size)
    findings = (_unchanged(x, case.x, "x") + _unchanged(delta, case.delta, "delta")
                + _unchanged(target, case.y, "target"))
    problem = _tensor_problem(out, case.x, "delta")
    if problem:
        return findings + [problem]
    findings += _grad_warning(out, "delta")
    out = out.detach().to("cpu", torch.float32)
    ref = attacks.pgd(case.model, case.x, case.y, eps=case.eps, step_size=case.step_size, steps=1,
                      targeted=True, start=case.delta) - case.x
    grad = attacks.input_gradient(case.model, case.x + case.delta, case.y)
    if _matches(out, ref, grad):
        return findings
    return findings + _diagnose_pgd(case, out, ref, grad)


def _diagnose_pgd(case: _Case, out: Tensor, ref: Tensor, grad: Tensor) -> list[_Finding]:
    x, eps = case.x, case.eps
    if _matches(out, x + ref, grad):
        return [_fail("returned_x_adv", "You returned `x + delta` (the adversarial image): return "
                      "the new perturbation `delta` itself.")]
    findings = _pgd_bounds(out, x, eps)
    if findings and _matches((x + out.clamp(-eps, eps)).clamp(0, 1) - x, ref, grad):
        return findings
    step, sign = case.step_size, grad.sign()
    if _matches(out, _box(x, case.delta + step * sign, eps), grad):
        return findings + [_pgd_message("sign", step, case, out)]
    if _matches(out, _box(x, case.delta - eps * sign, eps), grad):
        return findings + [_pgd_message("size", eps, case, out)]
    at_x = _box(x, case.delta - step * attacks.input_gradient(case.model, x, case.y).sign(), eps)
    if _matches(out, at_x):
        return findings + [_fail("grad_at_x", "You took the gradient at x, not at x + delta: compute "
                                 "the loss of `model(x + delta)` with delta requiring grad.")]
    interior = ((case.delta.abs() + step <= eps - _ATOL) & (x + case.delta - step >= _ATOL)
                & (x + case.delta + step <= 1 - _ATOL))  # neither projection acts here
    pattern, length = _step_pattern(out - case.delta, -sign, step, interior)
    return findings + [_pgd_message(pattern, length, case, out)]


def _box(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """Project ``delta`` onto the eps-ball, then keep ``x + delta`` in [0, 1]."""
    return (x + delta.clamp(-eps, eps)).clamp(0, 1) - x


def _pgd_bounds(out: Tensor, x: Tensor, eps: float) -> list[_Finding]:
    findings = []
    if out.abs().max() > eps + _ATOL:
        findings.append(_fail("project", f"Your new delta leaves the eps-ball (max |delta| = "
                              f"{out.abs().max():.3g} > eps = {eps:g}): did you forget to project? "
                              "Clip it with `delta.clamp(-eps, eps)` after the step."))
    image = x + out
    if image.min() < -_ATOL or image.max() > 1 + _ATOL:
        findings.append(_fail("box", f"x + delta leaves [0, 1] (values from {image.min():.3g} to "
                              f"{image.max():.3g}): after projecting onto the eps-ball, keep the image "
                              "valid, `delta = (x + delta).clamp(0, 1) - x`."))
    return findings


def _pgd_message(pattern: str, length: float, case: _Case, out: Tensor) -> _Finding:
    before = _loss(case.model, case.x + case.delta, case.y)
    after = _loss(case.model, (case.x + out).clamp(0, 1), case.y)
    step = case.step_size
    if pattern == "sign":
        return _fail("sign", f"Your step went up the target-class loss ({before:.3f} -> {after:.3f}), "
                     "away from the target. A targeted step goes down the target's loss: "
                     "`delta - step_size * grad.sign()`.")
    if pattern == "grad":
        return _fail("grad", "Your entries move by different amounts: a PGD step uses only the sign "
                     "of the gradient, `step_size * grad.sign()`, not `step_size * grad`.")
    if pattern == "size" and abs(length - case.eps) <= _ATOL:
        return _fail("size", f"You stepped by eps = {case.eps:g}, not by step_size = {step:g}: PGD "
                     "takes many small steps, `delta - step_size * grad.sign()`.")
    if pattern == "size":
        return _fail("size", f"Your entries move by {length:.3g}, not by step_size = {step:g}.")
    if pattern == "right":
        return _fail("edges", "Your step is right where no constraint acts but wrong at the ball's "
                     "edge or near 0 and 1: project with `delta.clamp(-eps, eps)`, then "
                     "`delta = (x + delta).clamp(0, 1) - x`.")
    return _fail("other", f"Your new delta differs from one targeted PGD step ({case.description}; "
                 f"target-class loss: {before:.3f} before, {after:.3f} after yours). Recipe: the "
                 "gradient of `F.cross_entropy(model(x + delta), target)` w.r.t. delta, "
                 "`delta - step_size * grad.sign()`, then both projections.")


# --------------------------------------------------------------------------- FGSM-mix loss


def check_fgsm_mix_loss(fn: Callable[[nn.Module, Tensor, Tensor, float, float], Tensor]) -> CheckResult:
    """Check Goodfellow et al.'s adversarial objective, ``fn(model, x, y, eps, alpha) -> loss``.

    Expected: the scalar ``alpha * J(x, y) + (1 - alpha) * J(x_fgsm, y)``, ``J`` the mean
    cross-entropy and ``x_fgsm = clip(x + eps * sign(grad_x J), 0, 1)``. The check compares
    the value, and the gradient with respect to the model's parameters. ``x_fgsm`` may
    be a constant (detached, as Goodfellow et al. use it in practice and as
    :func:`reference_fgsm_mix_loss` does) or be differentiated through: ``sign`` has zero
    derivative almost everywhere, so both give the same gradient. The function must not
    leave gradients in the parameters' ``.grad`` (they would be added to the training step).
    """
    return _run("check_fgsm_mix_loss", "alpha * J(x) + (1 - alpha) * J(x_fgsm)", fn, _mix_cases,
                _check_mix_case)


# (model kind, batch, input shape, eps, alpha): alpha != 0.5 tells the two weights apart.
_MIX_SPECS = (
    ("linear", 4, (1, 4, 4), 0.25, 0.5),
    ("mlp", 6, (1, 4, 4), 0.1, 0.3),
    ("mlp", 3, (12,), 0.3, 1.0),
    ("linear", 5, (3, 2, 2), 0.2, 0.0),
    ("mlp", 2, (1, 3, 3), 0.0, 0.8),
    ("linear", 3, (1, 3, 3), 0.15, 0.7),
)


def _mix_cases() -> list[_Case]:
    g = _generator(648)
    cases = []
    for kind, batch, shape, eps, alpha in _MIX_SPECS:
        model = _tiny_model(kind, math.prod(shape), g)
        x, y = _images(batch, shape, g), torch.randint(0, _CLASSES, (batch,), generator=g)
        cases.append(_Case(_describe(kind, batch, shape, eps=eps, alpha=alpha), eps, x, y, model,
                           alpha=alpha))
    return cases


def _check_mix_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    params = list(case.model.parameters())
    for param in params:
        param.grad = None
    x, y = case.x.clone(), case.y.clone()
    out = _call(fn, case.model, x, y, case.eps, case.alpha)
    findings = _unchanged(x, case.x, "x") + _unchanged(y, case.y, "y") + _leaked_grads(params)
    problem = _scalar_problem(out, case.x.shape[0])
    if problem:
        return findings + [problem]
    value, parts = out.detach().reshape(()).item(), _mix_parts(case)
    if not out.requires_grad:
        findings.append(_fail("detached", "Your loss has no gradient with respect to the model's "
                              "parameters, so training cannot use it: was it computed under "
                              "`torch.no_grad()`, `.detach()`ed, or rebuilt from `.item()`?"))
    if not _close_value(value, parts["right"]):
        return findings + [_mix_message(value, parts, case)]
    if out.requires_grad:
        findings += _mix_gradient(out, case, params)
    return findings


def _leaked_grads(params: list[Tensor]) -> list[_Finding]:
    if all(p.grad is None or not bool(p.grad.any()) for p in params):
        return []
    for param in params:
        param.grad = None
    return [_fail("grad_leak", "Your function left gradients in the model's parameters (`.grad`): "
                  "it called `loss.backward()` to get the input gradient, and in training these "
                  "would be added to the real update. Use `torch.autograd.grad(loss, x)` (or "
                  "`advcore.attacks.fgsm`) for the gradient with respect to x.")]


def _scalar_problem(out: object, batch: int) -> _Finding | None:
    if isinstance(out, numbers.Real):
        return _fail("number", f"You returned a Python number ({out:.4g}): return the loss tensor so "
                     "training can call `loss.backward()` (no `.item()`).")
    if not isinstance(out, Tensor) or not out.is_floating_point():
        return _fail("type", f"Your function returned {type(out).__name__}, not a float tensor: did "
                     "you forget `return loss`?")
    if out.numel() == batch and batch > 1:
        return _fail("per_example", f"You returned one loss per example (shape {tuple(out.shape)}): "
                     "average them into one number, the default `reduction='mean'` of "
                     "`F.cross_entropy`.")
    if out.numel() != 1:
        return _fail("shape", f"Your loss has shape {tuple(out.shape)}; it must be a single number.")
    return None


def _close_value(value: float, expected: float) -> bool:
    return abs(value - expected) <= 1e-4 * max(1.0, abs(expected))


def _mix_parts(case: _Case) -> dict[str, float]:
    """The right loss and the values of typical wrong ones, for the diagnosis."""
    model, x, y, eps, a = case.model, case.x, case.y, case.eps, case.alpha
    sign = attacks.input_gradient(model, x, y).sign()

    def loss(images: Tensor, reduction: str = "mean") -> float:
        with torch.no_grad():
            return F.cross_entropy(model(images), y, reduction=reduction).item()

    clean, adv = loss(x), loss(attacks.fgsm(model, x, y, eps=eps))
    grad = attacks.input_gradient(model, x, y) / x.shape[0]  # the gradient of the mean loss
    return {
        "right": a * clean + (1 - a) * adv,
        "clean": clean, "adv": adv, "alpha": a, "eps": eps,
        "swapped": (1 - a) * clean + a * adv,
        "half": (clean + adv) / 2,
        "sum": clean + adv,
        "clean_only": clean,
        "adv_only": adv,
        "no_clip": a * clean + (1 - a) * loss(x + eps * sign),
        "flipped": a * clean + (1 - a) * loss((x - eps * sign).clamp(0, 1)),
        "raw_grad": a * clean + (1 - a) * loss((x + eps * grad).clamp(0, 1)),
        "summed": a * loss(x, "sum") + (1 - a) * loss(attacks.fgsm(model, x, y, eps=eps), "sum"),
    }


_MIX_MISTAKES = (
    ("swapped", "Your weights are swapped: the clean loss must get alpha and the FGSM loss "
     "1 - alpha, J~ = alpha * J(x) + (1 - alpha) * J(x + eps * sign(grad))."),
    ("half", "Your loss ignores alpha (both terms get 1/2): use alpha and 1 - alpha. (The paper "
     "uses alpha = 0.5, but the check tries other values too.)"),
    ("sum", "You added the two losses without the weights alpha and 1 - alpha."),
    ("clean_only", "Your loss is the clean loss only: add the FGSM term, (1 - alpha) * J(x_fgsm)."),
    ("adv_only", "Your loss is the FGSM loss only: add the clean term, alpha * J(x)."),
    ("no_clip", "Your FGSM images are not clipped to [0, 1]: clip `x + eps * grad.sign()` with "
     "`.clamp(0, 1)` (or use `advcore.attacks.fgsm`)."),
    ("flipped", "Your FGSM images step down the loss (`x - eps * ...`): the adversarial example goes "
     "up the loss, `x + eps * grad.sign()`."),
    ("raw_grad", "Your FGSM images use the raw gradient; FGSM uses its sign, `eps * grad.sign()`."),
    ("summed", "You summed the per-example losses; average them (the default `reduction='mean'` of "
     "`F.cross_entropy`)."),
)


def _mix_message(value: float, parts: dict[str, float], case: _Case) -> _Finding:
    matches = [(key, text) for key, text in _MIX_MISTAKES if _close_value(value, parts[key])]
    if len(matches) == 1:  # several: this case cannot tell the mistakes apart (e.g. eps = 0)
        return _fail(*matches[0])
    return _fail("other", f"Your loss is {value:.4f}; expected alpha * J(x) + (1 - alpha) * J(x_fgsm) "
                 f"= {parts['right']:.4f} (clean J = {parts['clean']:.4f}, FGSM J = "
                 f"{parts['adv']:.4f}, alpha={parts['alpha']:g}, eps={parts['eps']:g}).")


def _mix_gradient(out: Tensor, case: _Case, params: list[Tensor]) -> list[_Finding]:
    """Compare d loss / d parameters with the reference (same value, same graph?)."""
    try:
        got = torch.autograd.grad(out.reshape(()), params, allow_unused=True)
    except RuntimeError as exc:
        return [_fail("backward", f"Backpropagating through your loss fails ({exc}): was its graph "
                      "freed by a `.backward()` inside your function? Use `torch.autograd.grad` for "
                      "the input gradient.")]
    with torch.enable_grad():
        expected = torch.autograd.grad(reference_fgsm_mix_loss(case.model, case.x, case.y, case.eps,
                                                               case.alpha), params)
    same = all(g is not None and torch.allclose(g, e, rtol=1e-3, atol=1e-5) for g, e in zip(got, expected))
    if same:
        return []
    return [_fail("gradient", "Your loss has the right value but the wrong gradient with respect to "
                  "the model's parameters: is one term cut off from the graph (computed under "
                  "`torch.no_grad()` or `.detach()`ed)? Only the FGSM image may be a constant.")]


# --------------------------------------------------------------------------- the linear explanation


def check_linear_worst_case(fn: Callable[[Tensor, float], float]) -> CheckResult:
    """Check ``fn(w, eps) -> max over ||eta||_inf <= eps of w^T eta`` (Goodfellow et al. 2015, Sec. 3).

    Expected: ``eps * ||w||_1`` (attained at ``eta = eps * sign(w)``), for weight vectors
    of 1 to 784 entries with both signs, and eps = 0.
    """
    return _run("check_linear_worst_case", "eps * ||w||_1", fn, _linear_cases, _check_linear_case,
                praise="The worst case grows linearly with the dimension n: eps * n * mean|w_i|.")


def _linear_cases() -> list[_Case]:
    g = _generator(649)
    cases = []
    for n, eps in ((1, 0.25), (3, 0.1), (10, 0.25), (100, 0.007), (784, 0.25), (20, 0.0)):
        w = torch.randn(n, generator=g)
        w = -w.abs() if n == 1 else w  # a single negative weight: the best eta is -eps
        cases.append(_Case(f"w with {n} entries, eps={eps:g}", eps, w))
    return cases


def _check_linear_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    w = case.x.clone()
    out = _call(fn, w, case.eps)
    findings = _unchanged(w, case.x, "w")
    if isinstance(out, Tensor) and out.numel() == 1:
        out = out.detach().reshape(()).item()
    if isinstance(out, Tensor):
        return findings + [_fail("shape", f"Your function returned a tensor of shape {tuple(out.shape)}; "
                                 "return one number, the largest value of w^T eta (a sum over i).")]
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        return findings + [_fail("type", f"Your function returned {type(out).__name__}; return one "
                                 "number, the largest value of w^T eta.")]
    expected = reference_linear_worst_case(case.x, case.eps)
    if _close_value(float(out), expected):
        return findings
    return findings + [_linear_message(float(out), case.x, case.eps, expected)]


def _linear_message(value: float, w: Tensor, eps: float, expected: float) -> _Finding:
    candidates = (
        ("l2", eps * w.norm().item(), "That is eps * ||w||_2, the worst case over the L2 ball. Over "
         "the L-infinity ball every coordinate may move by eps at once: eta = eps * sign(w) gives "
         "w^T eta = eps * sum |w_i|."),
        ("no_abs", eps * w.sum().item(), "You summed the weights with their signs: choose "
         "eta_i = eps * sign(w_i), so every term eps * |w_i| counts positively."),
        ("no_eps", w.abs().sum().item(), "You forgot eps: w^T eta with |eta_i| <= eps is at most "
         "eps * sum |w_i|."),
        ("max_only", eps * w.abs().max().item(), "You moved only the largest coordinate: all "
         "coordinates may move by eps, eta = eps * sign(w)."),
    )
    for key, candidate, text in candidates:
        if _close_value(value, candidate):
            return _fail(key, text)
    return _fail("other", f"Your value {value:.4g} differs from the maximum {expected:.4g} for "
                 f"w with {w.numel()} entries and eps={eps:g}: which eta attains the maximum?")


# --------------------------------------------------------------------------- evaluating robustness (chapter 11)


class SaturatedSoftmax(nn.Module):
    """A "defence" that only hides the gradient: the wrapped model's logits times ``scale``.

    The predictions are the wrapped model's, so it is exactly as robust as that model. But
    with ``scale = 10^4`` the softmax saturates in float32: on a correctly classified input
    ``softmax = one-hot`` exactly, the cross-entropy is 0 and its input gradient is exactly
    zero, so FGSM and PGD on the cross-entropy do not move (or move at random from a random
    start): gradient masking (Athalye, Carlini & Wagner 2018; Carlini et al. 2019).
    """

    def __init__(self, model: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale


def reference_breaks_gradient_masking(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """One attack that sees through :class:`SaturatedSoftmax`: APGD on the DLR loss, which is
    invariant to rescaling the logits (Croce & Hein 2020, Sec. 4). Square, or PGD on the margin
    ``max_{j != y} z_j - z_y``, work too."""
    return attacks.apgd(model, x, y, eps=eps, steps=20, loss="dlr", generator=torch.Generator().manual_seed(0))


def check_breaks_gradient_masking(fn: Callable[[nn.Module, Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Check an attack ``fn(model, x, y, eps) -> x_adv`` against a gradient-masking "defence".

    The hidden models are small tanh networks wrapped in :class:`SaturatedSoftmax`, on
    images they classify correctly. Expected: ``x_adv`` within ``eps`` of ``x`` in [0, 1],
    ``x`` untouched, and at least half as many examples fooled as an attack on the
    *undefended* network fools (PGD with 20 steps, the defence's predictions are the same).
    PGD on the cross-entropy fails: its gradient is exactly zero.
    """
    return _run("check_breaks_gradient_masking", "the robustness the defence really has", fn,
                _masking_cases, _check_masking_case,
                praise="The defence only masked the gradient: an attack that does not follow the "
                       "saturated cross-entropy sees straight through it.")


def _masking_cases() -> list[_Case]:
    g = _generator(1111)
    cases = []
    for batch, shape, eps in ((32, (1, 6, 6), 0.3), (24, (3, 4, 4), 0.2), (16, (1, 8, 8), 0.25)):
        base = _tiny_model("mlp", math.prod(shape), g)
        x = _images(batch, shape, g)
        with torch.no_grad():
            y = base(x).argmax(1)  # every example is classified correctly, clean
        cases.append(_Case(_describe("saturated-softmax tanh", batch, shape, eps=eps), eps, x, y,
                           SaturatedSoftmax(base).eval()))
    return cases


def _check_masking_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    x, y = case.x.clone(), case.y.clone()
    out = _call(fn, case.model, x, y, case.eps)
    findings = _unchanged(x, case.x, "x") + _unchanged(y, case.y, "y")
    problem = _tensor_problem(out, case.x, "x_adv")
    if problem is not None:
        return findings + [problem]
    out = out.detach()
    if bool((out - case.x).abs().max() > case.eps + 1e-5) or bool(out.min() < 0) or bool(out.max() > 1):
        return findings + [_fail("bounds", f"Your x_adv leaves the threat model on {case.description}: "
                                 f"max |x_adv - x| = {(out - case.x).abs().max().item():.3g} (eps = {case.eps:g}), "
                                 f"values in [{out.min().item():.3g}, {out.max().item():.3g}]. Project onto "
                                 "the eps-ball and clip to [0, 1]: a 'break' outside the threat model proves nothing.")]
    base = case.model.model
    with torch.no_grad():
        fooled = (case.model(out).argmax(1) != case.y).float().mean().item()
    reference = attacks.pgd(base, case.x, case.y, eps=case.eps, step_size=attacks.pgd_step_size(case.eps, 20), steps=20,
                            generator=_generator(7))
    with torch.no_grad():
        achievable = (base(reference).argmax(1) != case.y).float().mean().item()
    if fooled >= 0.5 * achievable:
        return findings
    gradient = attacks.input_gradient(case.model, case.x, case.y).abs().max().item()
    return findings + [_fail("masked", f"Your attack fools {fooled:.0%} of the examples on {case.description}, "
                             f"but the defended model is as fragile as the network inside it, where PGD "
                             f"fools {achievable:.0%}. The cross-entropy's input gradient here is at most "
                             f"{gradient:.1e}: an attack that follows it is blind. Try a loss that does not "
                             "saturate (the margin or DLR), or an attack that needs no gradient (Square).")]


__all__ += ["check_breaks_gradient_masking", "reference_breaks_gradient_masking"]  # and SaturatedSoftmax, the defence


# --------------------------------------------------------------------------- epsilon sweeps (chapter 5)


def reference_flip_points(eps_values: Tensor, logits: Tensor, label: int) -> tuple[float | None, float | None]:
    """The edges of the interval around eps = 0 on which a sweep's prediction is right (exercise 5.1).

    The largest negative and the smallest positive eps at which the predicted class
    ``logits.argmax(1)`` is wrong, ``None`` for a side where it never is (Goodfellow et al.
    2015, Fig. 4: wrong classes are stable over wide ranges of eps).

    Shapes: ``eps_values`` (S,), ``logits`` (S, C), ``label`` a class index.
    """
    wrong = logits.argmax(1) != label
    below, above = eps_values[(eps_values < 0) & wrong], eps_values[(eps_values > 0) & wrong]
    return (below.max().item() if len(below) else None, above.min().item() if len(above) else None)


def check_flip_points(fn: Callable[[Tensor, Tensor, int], tuple[float | None, float | None]],
                      eps_values: Tensor | None = None, logits: Tensor | None = None,
                      label: int | None = None) -> CheckResult:
    """Check ``fn(eps_values, logits, label) -> (lo, hi)``, the flip points of an epsilon sweep (exercise 5.1).

    Hidden sweeps (a flip on both sides, on one side only, wrong islands far from 0) and, when
    given, the chapter's own sweep ``(eps_values (S,), logits (S, C), label)``: the answer must be
    the largest negative and the smallest positive eps where the prediction is wrong (``None``
    for a side where it never is).
    """
    chapter = None
    if eps_values is not None and logits is not None and label is not None:
        chapter = _Case("the chapter's sweep", 0.0, eps_values.detach().cpu(), torch.tensor(int(label)),
                        delta=logits.detach().float().cpu())
    return _run("check_flip_points", "the nearest wrong eps on each side of 0", fn,
                lambda: _sweep_cases() + ([chapter] if chapter is not None else []), _check_sweep_case)


def _sweep_cases() -> list[_Case]:
    """Sweeps on a grid of 21 eps in [-1, 1] with predicted classes written out, label 0."""
    eps = torch.linspace(-1.0, 1.0, 21)
    layouts = {  # the predicted class at each of the 21 points, left to right
        "a flip on both sides": "222110000000000033333",
        "never wrong below 0": "000000000000001111111",
        "never wrong at all": "000000000000000000000",
        "wrong islands far from 0": "001100000000020000222",
    }
    cases = []
    for description, classes in layouts.items():
        predicted = torch.tensor([int(c) for c in classes])
        logits = 5.0 * F.one_hot(predicted, 4).float() + 0.1 * torch.arange(4.0)
        cases.append(_Case(f"a hidden sweep ({description})", 0.0, eps, torch.tensor(0), delta=logits))
    return cases


def _check_sweep_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    eps_values, logits = case.x.clone(), case.delta.clone()
    out = _call(fn, eps_values, logits, int(case.y))
    findings = _unchanged(eps_values, case.x, "eps_values") + _unchanged(logits, case.delta, "logits")
    expected = reference_flip_points(case.x, case.delta, int(case.y))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return findings + [_fail("type", f"Your function returned {type(out).__name__} {out!r:.60}; return "
                                 "a pair (lo, hi): two numbers, or None for a side that never flips.")]
    try:
        got = tuple(None if v is None else float(v.item() if isinstance(v, Tensor) else v) for v in out)
    except (TypeError, ValueError, RuntimeError):
        return findings + [_fail("type", f"Your pair {out!r:.80} does not hold numbers or None.")]
    if all(_same_point(g, e) for g, e in zip(got, expected)):
        return findings
    return findings + [_sweep_message(got, expected, case)]


def _same_point(got: float | None, expected: float | None) -> bool:
    return got is None and expected is None or (got is not None and expected is not None
                                                  and abs(got - expected) <= 1e-6)


def _sweep_message(got: tuple[float | None, float | None], expected: tuple[float | None, float | None],
                   case: _Case) -> _Finding:
    wrong = case.delta.argmax(1) != int(case.y)
    eps = case.x
    farthest = (eps[(eps < 0) & wrong].min().item() if bool(((eps < 0) & wrong).any()) else None,
                eps[(eps > 0) & wrong].max().item() if bool(((eps > 0) & wrong).any()) else None)
    if all(_same_point(g, e) for g, e in zip(got, expected[::-1])):
        return _fail("order", "Your pair is in the wrong order: return (lo, hi), the negative edge first.")
    if all(_same_point(g, e) for g, e in zip(got, farthest)) and farthest != expected:
        return _fail("farthest", f"On {case.description} you took the wrong eps farthest from 0; the flip "
                     "points are the wrong eps *closest* to 0 on each side (the edges of the correct interval).")
    if any(e is None and g is not None for g, e in zip(got, expected)):
        return _fail("none", f"On {case.description} one side never becomes wrong: return None for it "
                     f"(expected {expected}, got {got}).")
    return _fail("other", f"On {case.description} the prediction is first wrong at {expected} "
                 f"(largest negative, smallest positive eps), but you returned {got}. Did you return the last "
                 "eps where the prediction is still right instead of the first where it is wrong?")


# --------------------------------------------------------------------------- transferability (chapter 6)


def reference_transfer_rate(source: nn.Module, target: nn.Module, x: Tensor, y: Tensor, eps: float) -> float:
    """Of the FGSM examples made on ``source`` that fool it, the fraction that also fools ``target`` (exercise 6.1).

    Goodfellow et al. 2015, Sec. 8: adversarial examples made on one model often fool another.
    Shapes: ``x`` (N, ...) images in [0, 1], ``y`` (N,) labels; returns a number in [0, 1]
    (0 when no example fools the source).
    """
    x_adv = attacks.fgsm(source, x, y, eps=eps)
    with torch.no_grad():
        fools_source = source(x_adv).argmax(1) != y
        fools_target = target(x_adv).argmax(1) != y
    return (fools_source & fools_target).sum().item() / max(fools_source.sum().item(), 1)


def check_transfer_rate(fn: Callable[[nn.Module, nn.Module, Tensor, Tensor, float], float],
                        source: nn.Module | None = None, target: nn.Module | None = None,
                        x: Tensor | None = None, y: Tensor | None = None, eps: float | None = None) -> CheckResult:
    """Check ``fn(source, target, x, y, eps) -> transfer rate`` (exercise 6.1).

    Hidden cases (pairs of tiny models, several eps) and, when given, the chapter's own pair
    ``(source, target, x, y, eps)``: the fraction of the FGSM examples made on ``source`` that
    fool ``source`` and also fool ``target``. On the chapter's pair the answer may differ by
    half a point (a borderline example can flip with the batch size).
    """
    chapter = None
    if all(v is not None for v in (source, target, x, y, eps)):
        chapter = _Case("the chapter's models", float(eps), x, y, model=source, other=target, step_size=0.005)
    return _run("check_transfer_rate", "the transfer rate of the FGSM examples", fn,
                lambda: _transfer_cases() + ([chapter] if chapter is not None else []), _check_transfer_case)


def _transfer_cases() -> list[_Case]:
    g = _generator(653)
    cases = []
    for kind, batch, eps in (("linear", 64, 0.3), ("tanh", 48, 0.2), ("tanh", 64, 0.5)):
        x = _images(batch, (1, 4, 4), g)
        source, target = _tiny_model(kind, 16, g), _tiny_model(kind, 16, g)
        with torch.no_grad():
            y = source(x).argmax(1)  # the source's own predictions: every example starts correct
        cases.append(_Case(f"two {kind} models, {batch} images, eps={eps:g}", eps, x, y, model=source, other=target))
    return cases


def _check_transfer_case(fn: Callable[..., Any], case: _Case) -> list[_Finding]:
    x, y = case.x.clone(), case.y.clone()
    out = _call(fn, case.model, case.other, x, y, case.eps)
    findings = _unchanged(x, case.x, "x") + _unchanged(y, case.y, "y")
    if isinstance(out, Tensor) and out.numel() == 1:
        out = out.detach().reshape(()).item()
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        return findings + [_fail("type", f"Your function returned {type(out).__name__}; return one number "
                                 "in [0, 1], the fraction of the source's fooling examples that fool the target.")]
    expected = reference_transfer_rate(case.model, case.other, case.x, case.y, case.eps)
    if abs(float(out) - expected) <= max(case.step_size, 1e-6):  # step_size: the tolerance of the case
        return findings
    return findings + [_transfer_message(float(out), expected, case)]


def _transfer_message(value: float, expected: float, case: _Case) -> _Finding:
    x_adv = attacks.fgsm(case.model, case.x, case.y, eps=case.eps)
    with torch.no_grad():
        fools_source = case.model(x_adv).argmax(1) != case.y
        fools_target = case.other(x_adv).argmax(1) != case.y
    n, both = len(case.y), (fools_source & fools_target).sum().item()
    candidates = (
        ("percent", 100 * expected, "You returned a percentage: return a fraction in [0, 1]."),
        ("all", both / n, "You divided by all examples: divide by the examples that fool the *source*."),
        ("target_only", fools_target.float().mean().item(), "That is the fraction of all examples that fool "
         "the target; count only those that fool the source too, and divide by those that fool the source."),
        ("complement", 1 - expected, "That is the fraction that does *not* transfer (fools the source but "
         "not the target)."),
    )
    for key, candidate, text in candidates:
        if abs(value - candidate) <= 1e-6 and abs(candidate - expected) > 1e-6:
            return _fail(key, text)
    return _fail("other", f"On {case.description} {expected:.1%} of the source's fooling FGSM examples also "
                 f"fool the target; you returned {value:.4g}. Make FGSM examples on the source with "
                 "advcore.attacks.fgsm, then count.")


__all__ += ["check_flip_points", "check_transfer_rate", "reference_flip_points", "reference_transfer_rate"]
