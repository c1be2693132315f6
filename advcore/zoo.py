"""Named trained models shared by the chapters: trained once per profile and cached.

``zoo.get(name)`` returns a trained model (in ``eval()`` mode). The first call trains it
with the current profile's sizes (``ADVCORE_PROFILE``) and caches the weights, the
training :class:`~advcore.train.History` and the recipe under
``advcore.data.cache_dir() / "zoo" / <profile> / <name> /``; later calls -- from any
chapter -- load the cached copy.

The cache is safe to interrupt and to distrust:

* every file is written atomically (temporary file, then ``os.replace``) and the entry's
  ``manifest.json`` -- written last -- records each file's SHA-256 and the recipe's key;
* an entry whose manifest is missing, whose files are truncated or corrupted, or whose
  recipe key differs (the recipe, profile sizes or data changed) is retrained, never
  loaded; a damaged entry is reported with a warning;
* training checkpoints every epoch, so an interrupted training run resumes where it
  stopped on the next call.

Example::

    from advcore import zoo
    model = zoo.get("maxout_fgsm")          # trains on first use, then cached
    zoo.history("maxout_fgsm").epochs_frame()
    print(zoo.describe("cnn_pgd"))
    zoo.names()

From a shell, train every entry of a profile ahead of time (prints the time of each)::

    python -m advcore.zoo --profile cpu
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from advcore import data, models, papers, storage
from advcore.attacks import AttackSpec, pgd_step_size
from advcore.papers import ALPHA, CIFAR_EPS, MADRY_EPS, MNIST_EPS  # the papers' settings, one home
from advcore import train as training
from advcore.profiles import Profile, current_profile, default_device

if TYPE_CHECKING:
    from advcore import longrun

__all__ = ["ARCHITECTURES", "Architecture", "Recipe", "committed_measurements", "committed_run", "describe",
           "entry_dir", "get", "history", "model_key", "monitor_attack", "names", "profile_recipe", "recipe",
           "train_all", "trained_alike", "training_steps", "training_text"]

log = logging.getLogger(__name__)

ZOO_FORMAT = 2  # bump when the cache layout, a model's parameter layout or the training code changes

ROTATION_DEGREES = 15.0  # the "small rotations" control: angle of the rotation towards the gradient
HIDDEN_EPS = 0.1  # FGSM size on hidden activations (sigmoid units live in [0, 1])


# =========================================================================== recipes


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a zoo model (its hash is the cache key).

    ``data``: ``"mnist"`` (the profile's MNIST training split, validation tail for
    monitoring), ``"cifar10"``, or ``"surrogate"`` (the MNIST validation tail, labelled by
    the ``victim`` model's predictions: a black-box attacker's own training set).
    """

    name: str
    architecture: str  # softmax | maxout | mlp | cnn | resnet
    architecture_options: dict[str, Any]
    objective: str
    objective_options: dict[str, Any]
    monitor: dict[str, Any]  # the attack of the history's adversarial columns
    epochs: int
    batch_size: int
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = ()
    early_stopping: bool = False
    patience: int | None = None
    seed: int = 0
    data: str = "mnist"
    victim: str | None = None
    note: str = ""  # why the recipe is what it is, when it differs from the paper
    sizes: dict[str, int] = field(default_factory=dict)  # the profile's data sizes used

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mnist_sizes(profile: Profile) -> dict[str, int]:
    return {"mnist_train": profile.mnist_train, "mnist_val": profile.mnist_val}


def _fgsm_monitor() -> dict[str, Any]:
    return AttackSpec("fgsm", MNIST_EPS).to_dict()


def _pgd_monitor(profile: Profile, *, steps: int | None = None) -> dict[str, Any]:
    """PGD at Madry et al.'s eps with the profile's training steps, or ``steps`` (step: :func:`pgd_step_size`)."""
    if steps is None or steps == profile.pgd_train_steps:
        return AttackSpec("pgd", MADRY_EPS, profile.pgd_train_step_size, profile.pgd_train_steps).to_dict()
    return AttackSpec("pgd", MADRY_EPS, pgd_step_size(MADRY_EPS, steps), steps).to_dict()


_MAXOUT_NOTE = "Adam instead of the paper's SGD with momentum and max-norm constraints."
# The paper-scale recipe (the gpu profile; committed runs under results/runs/) and where it
# deviates from pylearn2's mnist_pi.yaml (Goodfellow et al. 2013), which Goodfellow et al.
# (2015) start from: lr .1, momentum .5 rising to .7, lr decay 1.000004 per batch, early
# stopping after 100 epochs without improvement, then retraining on all 60,000 images.
_MAXOUT_SGD_NOTE = ("SGD with momentum 0.9, lr {lr:g} divided by 10 at {milestones} of {epochs} epochs, max-norm "
                    "{max_norm:g} on every unit's weights, batch 100, dropout 0.2 on the input and 0.5 on hidden "
                    "units, 55,000 training images. Deviations from the pylearn2 recipe (lr .1, momentum .5 "
                    "rising to .7, a slow exponential lr decay, early stopping after 100 epochs without "
                    "improvement, retraining on all 60,000 images): a fixed step schedule that fits a CPU "
                    "budget, no retraining on the validation images.")


def _maxout_optimizer(profile: Profile, *, epochs: int) -> dict[str, Any]:
    """The maxout networks' optimizer fields of a recipe of ``epochs`` epochs, and its note."""
    fields: dict[str, Any] = {"optimizer": profile.optimizer_maxout, "lr": profile.lr_maxout,
                              "lr_milestones": tuple(profile.lr_milestones_maxout)}
    if profile.optimizer_maxout == "adam":
        return {**fields, "note": _MAXOUT_NOTE}
    milestones = " and ".join(f"{m:.0%}" for m in profile.lr_milestones_maxout) or "none"
    return {**fields, "note": _MAXOUT_SGD_NOTE.format(lr=profile.lr_maxout, milestones=milestones,
                                                      epochs=epochs,
                                                      max_norm=profile.max_norm_maxout or float("inf"))}


_SMOOTH_NOTE = (" Differentiable adversary (Goodfellow et al. 2015, Sec. 6): the loss is differentiated "
                "through the perturbation's construction; the paper gives no size, {size} is our choice. "
                "The adversary's gradient is the training network's (dropout on), not the eval-mode "
                "network's as in an attack: with the eval-mode gradient, the paper-scale SGD recipe bent the "
                "eval-mode network to steer the adversary (its validation accuracy fell from 92% to 32% in "
                "four epochs).")


def _maxout(profile: Profile, name: str, objective: str, options: dict[str, Any], *, seed: int = 0,
            hidden: int = 240, early_stopping: bool = False, epochs: int | None = None,
            note: str = "") -> Recipe:
    architecture = {"hidden": hidden, "pieces": 5, "layers": 2, "input_dropout": 0.2, "dropout": 0.5}
    if profile.max_norm_maxout is not None:  # only then: the other profiles' recipes (and keys) stay as they were
        architecture["max_norm"] = profile.max_norm_maxout
    epochs = profile.epochs_maxout if epochs is None else epochs
    optimizer = _maxout_optimizer(profile, epochs=epochs)
    return Recipe(
        name=name, architecture="maxout", architecture_options=architecture,
        objective=objective, objective_options=options, monitor=_fgsm_monitor(),
        epochs=epochs, batch_size=profile.batch_size,
        optimizer=optimizer["optimizer"], lr=optimizer["lr"], lr_milestones=optimizer["lr_milestones"],
        early_stopping=early_stopping,
        patience=(profile.early_stopping_patience or None) if early_stopping else None,
        seed=seed, sizes=_mnist_sizes(profile),
        note=optimizer["note"] + note,
    )


def _mlp(profile: Profile, name: str, activation: str, objective: str, options: dict[str, Any]) -> Recipe:
    return Recipe(
        name=name, architecture="mlp", architecture_options={"hidden": (256, 256), "activation": activation},
        objective=objective, objective_options=options, monitor=_fgsm_monitor(),
        epochs=profile.epochs_mlp, batch_size=profile.batch_size, lr=profile.lr_mlp,
        sizes=_mnist_sizes(profile),
    )


def _cnn(profile: Profile, name: str, objective: str, options: dict[str, Any], *, seed: int = 0,
         note: str | None = None, monitor_steps: int | None = None) -> Recipe:
    return Recipe(
        name=name, architecture="cnn", architecture_options={},
        objective=objective, objective_options=options, monitor=_pgd_monitor(profile, steps=monitor_steps),
        epochs=profile.epochs_cnn, batch_size=profile.cnn_batch_size, lr=profile.lr_cnn, seed=seed,
        sizes=_mnist_sizes(profile),
        note=note if note is not None else ("Madry et al.: Adam lr 1e-4, batch 50, 100k steps, PGD 40 x 0.01 at eps 0.3."
              if profile.pgd_train_steps == 40 else
              f"Fewer PGD steps than Madry et al.'s 40: step size 2.5 * eps / steps = "
              f"{profile.pgd_train_step_size:.3g}; larger lr and eps ramped up over the first "
              f"{profile.pgd_train_warmup:.0%} of training for the short budget (from eps = 0.3 "
              "at once, the CNN sits on the constant classifier for hundreds of steps)."),
    )


def _cnn_fast_start(profile: Profile, pgd_options: dict[str, Any]) -> Recipe:
    """PGD training of the CNN after a fast start: Wong et al. (2020)'s one-step FGSM from a random
    start for the first ``fast_start_cnn`` of training (Adam lr ``lr_cnn_fast_start``), then the
    profile's PGD (Madry et al.'s at the gpu profile, with their lr ``lr_cnn``). The per-epoch monitor
    is PGD of at most 10 steps: a 40-step one on 7,500 images (about 300,000 gradient steps) would
    cost more than a fast-phase epoch (55,000 images, two gradient steps each)."""
    fast, epochs = profile.fast_start_cnn, profile.epochs_cnn_fast_start
    # eps ramps up over a tenth of the fast phase where the profile has no warm-up of its own:
    # from eps = 0.3 at once the CNN can sit on the constant classifier (Wong et al. ramp the lr).
    options = {**pgd_options, "warmup": profile.pgd_train_warmup or round(fast / 10, 4), "fast_start": fast}
    milestones: tuple[float, ...] = ()
    if profile.lr_cnn_fast_start != profile.lr_cnn:  # the lr drops (by train's 10x) where PGD takes over
        if not (math.isclose(profile.lr_cnn_fast_start, 10 * profile.lr_cnn)
                and math.isclose(fast * epochs, round(fast * epochs))):
            raise ValueError(f"Profile {profile.name!r}: lr_cnn_fast_start must be 10 x lr_cnn (or equal to it) "
                             "and fast_start_cnn a whole number of epochs, so the lr drops where PGD starts.")
        milestones = (fast,)
    return Recipe(
        name="cnn_pgd_fast", architecture="cnn", architecture_options={}, objective="pgd",
        objective_options=options, monitor=_pgd_monitor(profile, steps=min(profile.pgd_train_steps, 10)),
        epochs=epochs, batch_size=profile.cnn_batch_size, lr=profile.lr_cnn_fast_start, lr_milestones=milestones,
        sizes=_mnist_sizes(profile),
        note=(f"Not Madry et al.'s schedule: the first {fast:.0%} of the {epochs} epoch{'s' * (epochs != 1)} "
              f"train on Wong, Rice & Kolter (2020)'s one-step FGSM from a random start (step {training.FAST_FGSM_STEP:g} eps: one "
              f"gradient step per example instead of {profile.pgd_train_steps}) as a warm start, with Adam lr "
              f"{profile.lr_cnn_fast_start:g}; the rest on PGD as cnn_pgd, with Adam lr {profile.lr_cnn:g}."),
    )


FAST_FGSM_NOTE = ("Wong, Rice & Kolter (2020): trained on FGSM examples only (no clean term), Adam; the "
                  "history's adversarial columns are PGD, which shows a catastrophic overfit.")


def _resnet(profile: Profile, name: str, objective: str, options: dict[str, Any]) -> Recipe:
    return Recipe(
        name=name, architecture="resnet", architecture_options={"width": profile.resnet_width},
        objective=objective, objective_options=options,
        monitor=AttackSpec("pgd", CIFAR_EPS, profile.pgd_train_step_size_cifar,
                           profile.pgd_train_steps_cifar).to_dict(),
        epochs=profile.epochs_resnet, batch_size=profile.resnet_batch_size, optimizer="sgd",
        lr=profile.lr_resnet, weight_decay=2e-4, lr_milestones=(0.5, 0.75), data="cifar10",
        sizes={"cifar_train": profile.cifar_train},
        note=("Madry et al.'s paper (Sec. 4) trains CIFAR-10 with 7 PGD steps of 2/255 at eps 8/255; "
              "their released cifar10_challenge/config.json says 10 steps of 2/255. We use the "
              "paper's 7 (fewer in the small profiles). The lecture's '40 steps of 0.02' is "
              "neither. A pre-activation ResNet-18 instead of their wide ResNet."),
    )


def _recipes(profile: Profile) -> dict[str, Callable[[], Recipe]]:
    """Every zoo name -> its recipe under ``profile`` (built on demand), Part I's then Part II's."""
    return {**_part_one_recipes(profile), **_part_two_recipes(profile)}


def _part_one_recipes(profile: Profile) -> dict[str, Callable[[], Recipe]]:
    """Goodfellow et al. (2015)'s models: chapters 2-6."""
    fgsm = {"eps": MNIST_EPS, "alpha": ALPHA}
    softmax = lambda name, objective, options: Recipe(  # noqa: E731
        name=name, architecture="softmax", architecture_options={}, objective=objective,
        objective_options=options, monitor=_fgsm_monitor(), epochs=profile.epochs_linear,
        batch_size=profile.batch_size, lr=profile.lr_mlp, sizes=_mnist_sizes(profile))
    return {
        "softmax": lambda: softmax("softmax", "standard", {}),
        "softmax_fgsm": lambda: softmax("softmax_fgsm", "fgsm", fgsm),
        "maxout": lambda: _maxout(profile, "maxout", "standard", {}),
        "maxout_fgsm": lambda: _maxout(profile, "maxout_fgsm", "fgsm", fgsm),
        "maxout1600_fgsm_es": lambda: _maxout(
            profile, "maxout1600_fgsm_es", "fgsm", fgsm, hidden=profile.maxout_large_units,
            early_stopping=True, epochs=profile.epochs_mlp_large),
        "maxout_noise": lambda: _maxout(profile, "maxout_noise", "noise", fgsm),
        # Goodfellow et al. 2015, Sec. 6: "randomly adding +-eps to each pixel"
        "maxout_noise_sign": lambda: _maxout(profile, "maxout_noise_sign", "noise", {**fgsm, "distribution": "sign"}),
        "maxout_rotation": lambda: _maxout(
            profile, "maxout_rotation", "rotation",
            {"degrees": ROTATION_DEGREES, "alpha": ALPHA, "monitor_eps": MNIST_EPS, "adversary_mode": "train"},
            note=" Each image, as a vector, is rotated towards its input gradient."
            + _SMOOTH_NOTE.format(size=f"the angle {ROTATION_DEGREES:g} degrees")),
        "maxout_scaledgrad": lambda: _maxout(
            profile, "maxout_scaledgrad", "scaled_gradient", {**fgsm, "adversary_mode": "train"},
            note=_SMOOTH_NOTE.format(size="the scale (largest pixel change = eps)")),
        "maxout_seed1": lambda: _maxout(profile, "maxout_seed1", "standard", {}, seed=1),
        "sigmoid_mlp": lambda: _mlp(profile, "sigmoid_mlp", "sigmoid", "standard", {}),
        "sigmoid_mlp_hidden": lambda: _mlp(profile, "sigmoid_mlp_hidden", "sigmoid", "hidden_fgsm",
                                           {"eps_hidden": HIDDEN_EPS, "alpha": ALPHA, "monitor_eps": MNIST_EPS}),
        "relu_mlp": lambda: _mlp(profile, "relu_mlp", "relu", "standard", {}),
        "relu_mlp_hidden": lambda: _mlp(profile, "relu_mlp_hidden", "relu", "hidden_fgsm",
                                        {"eps_hidden": HIDDEN_EPS, "alpha": ALPHA, "monitor_eps": MNIST_EPS}),
    }


def _part_two_recipes(profile: Profile) -> dict[str, Callable[[], Recipe]]:
    """Madry et al. (2018)'s networks and what chapters 6-11 compare them with."""
    pgd_mnist = {"eps": MADRY_EPS, "step_size": profile.pgd_train_step_size,
                 "steps": profile.pgd_train_steps, "random_start": True, "warmup": profile.pgd_train_warmup}
    pgd_cifar = {"eps": CIFAR_EPS, "step_size": profile.pgd_train_step_size_cifar,
                 "steps": profile.pgd_train_steps_cifar, "random_start": True, "warmup": profile.pgd_train_warmup}
    return {
        # Its per-epoch monitor is PGD of at most 10 steps: on a CPU a 40-step monitor of 7,500 images
        # (about 300,000 gradient steps) would cost several times the plain epoch itself (55,000).
        "cnn": lambda: _cnn(profile, "cnn", "standard", {}, monitor_steps=min(profile.pgd_train_steps, 10)),
        "cnn_pgd": lambda: _cnn(profile, "cnn_pgd", "pgd", pgd_mnist),
        "cnn_seed1": lambda: _cnn(profile, "cnn_seed1", "standard", {}, seed=1),
        # Madry et al.'s Table 1 source A': an independently initialized and trained copy of
        # the PGD-trained network (same recipe as cnn_pgd, another seed).
        "cnn_pgd_seed1": lambda: _cnn(profile, "cnn_pgd_seed1", "pgd", pgd_mnist, seed=1),
        # Chapter 11: FGSM training of the CNN (Wong, Rice & Kolter 2020), from a zero start
        # (prone to catastrophic overfitting) and from a random start with a step of 1.25 eps.
        "cnn_fgsm_zero": lambda: _cnn(profile, "cnn_fgsm_zero", "fast_fgsm",
                                      {"eps": MADRY_EPS, "step_size": MADRY_EPS, "random_start": False,
                                       "warmup": profile.pgd_train_warmup},
                                      note=FAST_FGSM_NOTE),
        "cnn_fgsm_rand": lambda: _cnn(profile, "cnn_fgsm_rand", "fast_fgsm",
                                      {"eps": MADRY_EPS, "step_size": training.FAST_FGSM_STEP * MADRY_EPS,
                                       "random_start": True, "warmup": profile.pgd_train_warmup},
                                      note=FAST_FGSM_NOTE),
        "cnn_pgd_fast": lambda: _cnn_fast_start(profile, pgd_mnist),
        "surrogate_mlp": lambda: Recipe(
            name="surrogate_mlp", architecture="mlp", architecture_options={"hidden": (256, 256), "activation": "relu"},
            objective="standard", objective_options={}, monitor=_fgsm_monitor(),
            epochs=profile.epochs_surrogate, batch_size=profile.batch_size, lr=profile.lr_mlp,
            data="surrogate", victim="cnn", sizes=_mnist_sizes(profile),
            note=("Black-box surrogate: trained only on the MNIST validation tail (the last "
                  "mnist_val training images, never seen by the victim's training), with the "
                  "labels the victim 'cnn' predicts for them, not the true labels."),
        ),
        "resnet_cifar": lambda: _resnet(profile, "resnet_cifar", "standard", {}),
        "resnet_cifar_pgd": lambda: _resnet(profile, "resnet_cifar_pgd", "pgd", pgd_cifar),
    }


def names() -> list[str]:
    """Every zoo name (the CIFAR-10 ones need CIFAR-10: see :func:`advcore.data.cifar10_available`)."""
    return list(_recipes(current_profile("smoke")))


def profile_recipe(name: str, *, profile: Profile | str | None = None) -> Recipe:
    """The recipe that ``profile`` (default: the current profile) trains for zoo entry ``name``.

    Raises:
        KeyError: not a zoo name (the message lists them).
    """
    table = _recipes(current_profile(profile))
    if name not in table:
        import difflib

        close = difflib.get_close_matches(name, table, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"No zoo model named {name!r}.{hint} Zoo names: {', '.join(table)}.")
    return table[name]()


def recipe(name: str, *, profile: Profile | str | None = None) -> Recipe:
    """The recipe of the model :func:`get` returns for ``name`` under ``profile``.

    That is the paper-scale recipe of a finished long run committed under ``results/runs/``
    where the profile uses them (:func:`committed_run`), else the profile's own
    (:func:`profile_recipe`).

    Raises:
        KeyError: not a zoo name (the message lists them).
    """
    prof = current_profile(profile)
    own = profile_recipe(name, profile=prof)
    run = committed_run(name, profile=prof)
    if run is None:
        return own
    from advcore import longrun

    return longrun.recipe(run.zoo_name)


def committed_run(name: str, *, profile: Profile | str | None = None) -> "longrun.Run | None":
    """The finished paper-scale run of ``name`` committed under ``results/runs/``, if ``profile`` uses one.

    The ``cpu`` and ``gpu`` profiles load a finished committed run instead of training the
    entry (``Profile.committed_runs``); the ``smoke`` profile always trains its tiny models.
    The run is the entry's own or one that stands in for it (``Run.zoo_entry``: e.g. a
    recipe a CPU can afford for an entry the chapters use), at the profiles it replaces the
    entry at (``Run.profiles_replaced``). A run that is unfinished, or
    whose files fail their checks (with a warning), is not used.
    """
    from advcore import longrun  # longrun builds on the zoo's recipes: imported when needed

    prof = current_profile(profile)
    if not prof.committed_runs:
        return None
    for run_name, run in longrun.RUNS.items():
        if not (run_name == run.zoo_name and name in (run.zoo_name, run.zoo_entry)
                and (run.profiles_replaced is None or prof.name in run.profiles_replaced)):
            continue
        try:
            state = longrun.load_state(run_name)
        except longrun.LongRunError as error:
            warnings.warn(f"Not using the committed run of {name!r} (results/runs/{run_name}): {error} Training the "
                          f"{prof.name} profile's recipe instead.", stacklevel=3)
            continue
        if state is not None and state["epochs_done"] >= state["epochs_total"]:
            return run
    return None


def cache_key(name: str, *, profile: Profile | str | None = None) -> str:
    """The SHA-256 of the recipe, the zoo format and, for a surrogate, its victim's model.

    The recipe's prose ``note`` is left out (as in the committed long runs' keys): a wording or
    citation fix must not retrain a model. A surrogate's key follows the victim model it is
    trained to imitate (:func:`model_key`: a committed run's weights once one is used).
    """
    prof = current_profile(profile)
    rec = profile_recipe(name, profile=prof)
    recipe_fields = {k: v for k, v in rec.to_dict().items() if k != "note"}
    payload = {"format": ZOO_FORMAT, "profile": prof.name, "recipe": recipe_fields}
    if rec.victim is not None:
        payload["victim"] = model_key(rec.victim, profile=prof)
    return storage.json_digest(payload)


def entry_dir(name: str, *, profile: Profile | str | None = None) -> Path:
    """``cache_dir() / "zoo" / <profile> / <name>``: where the entry is cached."""
    prof = current_profile(profile)
    profile_recipe(name, profile=prof)  # validates the name
    return data.cache_dir() / "zoo" / prof.name / name


# =========================================================================== descriptions


def _adversary_text(options: dict[str, Any]) -> str:
    """Which network a differentiable adversary's gradient comes from (advcore.train.differentiable_input_gradient)."""
    return ", gradient of the training network" if options.get("adversary_mode") == "train" else ""


def _objective_text(rec: Recipe) -> str:
    o = rec.objective_options
    return {
        "standard": "standard cross-entropy",
        "fgsm": lambda: f"FGSM mix (eps={o['eps']:g}, alpha={o['alpha']:g})",
        "noise": lambda: (f"{'random-sign (+-eps)' if o.get('distribution') == 'sign' else 'uniform'}-noise mix "
                          f"(eps={o['eps']:g}, alpha={o['alpha']:g})"),
        "rotation": lambda: (f"rotation-towards-gradient mix ({o['degrees']:g} deg, alpha={o['alpha']:g}"
                             f"{_adversary_text(o)})"),
        "scaled_gradient": lambda: f"scaled-gradient mix (eps={o['eps']:g}, alpha={o['alpha']:g}{_adversary_text(o)})",
        "hidden_fgsm": lambda: f"hidden-layer FGSM mix (eps_hidden={o['eps_hidden']:g}, alpha={o['alpha']:g})",
        "fast_fgsm": lambda: (f"FGSM training (eps={o['eps']:g}, step {o['step_size']:.3g}, "
                              + ("random start" if o["random_start"] else "zero start")
                              + (f", eps warm-up over {o['warmup']:.0%} of training" if o.get("warmup") else "") + ")"),
        "pgd": lambda: (f"PGD training (eps={o['eps']:.4g}, {o['steps']} steps of {o['step_size']:.3g}, "
                        "random start" + (f", eps warm-up over {o['warmup']:.0%} of training" if o.get("warmup") else "")
                        + (f", after one-step FGSM training (random start) for the first {o['fast_start']:.0%}"
                           if o.get("fast_start") else "") + ")"),
    }.get(rec.objective, lambda: rec.objective)() if rec.objective != "standard" else "standard cross-entropy"


def _training_images(rec: Recipe) -> int:
    """How many images the recipe trains on (its profile's sizes)."""
    return rec.sizes[{"cifar10": "cifar_train", "surrogate": "mnist_val"}.get(rec.data, "mnist_train")]


def _training_images_text(rec: Recipe) -> str:
    """What the recipe trains on, e.g. "55,000 MNIST training images" (its profile's sizes)."""
    if rec.data == "cifar10":
        return f"{_training_images(rec):,} CIFAR-10 training images"
    if rec.data == "surrogate":
        return f"{_training_images(rec):,} held-out MNIST images labelled by '{rec.victim}'"
    return f"{_training_images(rec):,} MNIST training images"


def describe(name: str, *, profile: Profile | str | None = None) -> str:
    """One line: architecture, objective, eps, epochs and data size of zoo entry ``name``."""
    prof = current_profile(profile)
    rec = recipe(name, profile=prof)
    data_text = _training_images_text(rec)
    stopping = ", early stopping on adversarial validation error" if rec.early_stopping else ""
    seed = f", seed {rec.seed}" if rec.seed else ""
    run = committed_run(name, profile=prof)
    committed = f"; {_committed_origin(run)}".replace("`", "") if run is not None else ""
    architecture = ARCHITECTURES[rec.architecture].describe(rec.architecture_options)
    decay = (" divided by 10 at " + " and ".join(f"{m:.0%}" for m in rec.lr_milestones) + " of training"
             if rec.lr_milestones else "")
    return (f"{name}: {architecture}; {_objective_text(rec)}; {rec.optimizer} lr {rec.lr:g}{decay}, "
            f"{rec.epochs} epochs of batch {rec.batch_size}{stopping}; {data_text}{seed}{committed} "
            f"[{prof.name} profile]")


def training_text(name: str, *, profile: Profile | str | None = None) -> str:
    """How the model :func:`get` returns for ``name`` was trained, as a phrase for the chapters' prose.

    E.g. "55,000 MNIST training images for 200 epochs with SGD with momentum, step decay and
    max-norm 1.9365 (the paper-scale run committed in `results/runs/maxout`)", or "10,000 MNIST
    training images for 5 epochs with Adam (the `cpu` profile's recipe)".
    """
    prof = current_profile(profile)
    rec = recipe(name, profile=prof)
    if rec.optimizer == "adam":
        optimizer = "Adam" + (" with step decay" if rec.lr_milestones else "")
    else:
        extras = (["step decay"] if rec.lr_milestones else []) + (
            [f"max-norm {rec.architecture_options['max_norm']:g}"] if rec.architecture_options.get("max_norm") else [])
        optimizer = "SGD with momentum" + (", " + " and ".join(extras) if extras else "")
    run = committed_run(name, profile=prof)
    origin = _committed_origin(run) if run is not None else f"the `{prof.name}` profile's recipe"
    epochs = f"{rec.epochs} epoch" + ("s" if rec.epochs != 1 else "")
    return f"{_training_images_text(rec)} for {epochs} with {optimizer} ({origin})"


def _committed_origin(run: "longrun.Run") -> str:
    """Where a committed model comes from: the entry's own paper-scale recipe, or a run standing in for it."""
    if run.zoo_entry is None and run.epochs is None:
        return f"the paper-scale run committed in `results/runs/{run.zoo_name}`"
    return f"the long CPU run committed in `results/runs/{run.zoo_name}`, which stands in for the paper's recipe"


def training_steps(name: str, *, profile: Profile | str | None = None) -> int:
    """How many weight updates the model :func:`get` returns for ``name`` was trained with (at most:
    early stopping keeps an earlier epoch), e.g. to set beside Madry et al.'s 100,000 steps of batch 50."""
    rec = recipe(name, profile=profile)
    return rec.epochs * -(-_training_images(rec) // rec.batch_size)


def trained_less_than_madry(name: str, *, profile: Profile | str | None = None) -> bool:
    """Whether the model :func:`get` returns for ``name`` had fewer weight updates
    (:func:`training_steps`) than Madry et al.'s MNIST network (100,000 steps of batch 50), so that
    a chapter may say a shorter run tends to leave a less accurate and less robust model."""
    return training_steps(name, profile=profile) < papers.number("madry.mnist.iterations").value


def trained_alike(*names: str, profile: Profile | str | None = None) -> bool:
    """Whether the models :func:`get` returns for ``names`` had the same training budget.

    Same data sizes, epochs, batch size, optimizer, learning-rate schedule and (committed or
    not) origin; the objective, seed and architecture may differ. When a chapter compares
    models that were not trained alike (e.g. one committed paper-scale run beside one short
    profile run), their differences mix the objective with the budget, and it says so.
    """
    prof = current_profile(profile)

    def budget(name: str) -> tuple[Any, ...]:
        rec = recipe(name, profile=prof)
        return (rec.sizes.get("mnist_train"), rec.epochs, rec.batch_size, rec.optimizer, rec.lr,
                tuple(rec.lr_milestones), committed_run(name, profile=prof) is not None)

    return len({budget(name) for name in names}) <= 1


# =========================================================================== building and training


@dataclass(frozen=True)
class Architecture:
    """One architecture the zoo can build: ``build(options) -> nn.Module`` and ``describe(options) -> str``."""

    build: Callable[[dict[str, Any]], nn.Module]
    describe: Callable[[dict[str, Any]], str]


#: The zoo's architectures by a recipe's ``architecture`` name: how to build one and how to name it.
ARCHITECTURES: dict[str, Architecture] = {
    "softmax": Architecture(lambda opts: models.SoftmaxRegression(), lambda opts: "softmax regression"),
    "maxout": Architecture(
        lambda opts: models.MaxoutMLP(opts["hidden"], pieces=opts["pieces"], layers=opts["layers"],
                                      input_dropout=opts["input_dropout"], dropout=opts["dropout"],
                                      max_norm=opts.get("max_norm")),
        lambda opts: f"maxout MLP {opts['layers']}x{opts['hidden']} units ({opts['pieces']} pieces, dropout)"),
    "mlp": Architecture(
        lambda opts: models.HiddenPerturbMLP(tuple(opts["hidden"]), activation=opts["activation"]),
        lambda opts: f"{opts['activation']} MLP {'x'.join(map(str, opts['hidden']))}"),
    "cnn": Architecture(lambda opts: models.MadryCNN(), lambda opts: "Madry CNN (conv32-conv64-fc1024)"),
    "resnet": Architecture(lambda opts: models.PreActResNet18(width=opts["width"]),
                           lambda opts: f"pre-activation ResNet-18 (width {opts['width']})"),
}


def build_model(rec: Recipe) -> nn.Module:
    """An untrained model of the recipe's architecture (deterministic given the global seed)."""
    if rec.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {rec.architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[rec.architecture].build(rec.architecture_options)


def monitor_attack(spec: dict[str, Any]) -> training.MonitorAttack:
    """The attack of a recipe's ``monitor`` spec (``rec.monitor``): FGSM or PGD, ``(model, x, y) -> x_adv``."""
    if spec["attack"] == "fgsm":
        return training.FGSMAttack(spec["eps"])
    return training.PGDAttack(spec["eps"], spec["step_size"], spec["steps"])


def _training_data(rec: Recipe, prof: Profile) -> tuple[TensorDataset, TensorDataset | None]:
    if rec.data == "cifar10":
        if not data.cifar10_available():
            raise data.DataUnavailableError(
                f"Zoo model {rec.name!r} is trained on CIFAR-10, which is not available: it is not "
                "in the cache or the data mirror and cannot be downloaded (offline). Run with "
                "internet access once, or put cifar-10-python.tar.gz into the mirror "
                "(CIFAR10/cifar-10-python.tar.gz) and set ADVCORE_DATA."
            )
        return data.load_cifar10("train", limit=prof.cifar_train), None
    train_set, val_set, _ = data.mnist_splits(prof)
    if rec.data == "surrogate":
        victim = get(rec.victim, profile=prof, device=default_device())
        x = val_set.tensors[0]
        with torch.no_grad():
            labels = torch.cat([victim(x[i:i + prof.eval_batch_size].to(default_device())).argmax(1).cpu()
                                for i in range(0, len(x), prof.eval_batch_size)])
        return TensorDataset(x, labels), None
    return train_set, val_set


def _long_run_notice(name: str, prof: Profile, checkpoint: Path) -> str:
    """What a reader about to wait for a paper-scale training run needs to know (one paragraph)."""
    state = ("continuing from the checkpoint of an interrupted run" if checkpoint.exists()
             else "checkpointed every epoch")
    return (f"zoo: training {describe(name, profile=prof)}. This is the '{prof.name}' profile's paper-scale "
            f"schedule; the progress bar shows the time left. Training is {state} in {checkpoint.parent}, so "
            f"an interrupted run continues where it stopped (in Colab, set ADVCORE_CACHE to a Google Drive "
            f"folder so the checkpoints outlive the runtime). For a run of minutes, use the cpu profile "
            f"(ADVCORE_PROFILE=cpu).")


def initial_model(rec: Recipe) -> nn.Module:
    """The recipe's untrained model, initialised from its seed (the caller's RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rec.seed)
        return build_model(rec)


def training_options(rec: Recipe, prof: Profile) -> tuple[TensorDataset, dict[str, Any]]:
    """``(train_set, keyword arguments of advcore.train.train)`` that train the recipe's model:
    the run's :class:`advcore.train.TrainConfig` (``config``), ``val_set`` and ``device``.

    The one place a recipe becomes a training call: the zoo and the long runs of
    :mod:`advcore.longrun` both use it, so the same recipe trains the same way everywhere. (A
    recipe keeps its own flat fields: their dict is the key of the committed long runs.)
    """
    train_set, val_set = _training_data(rec, prof)
    config = training.TrainConfig(
        objective=training.make_objective(rec.objective, **rec.objective_options),
        epochs=rec.epochs, batch_size=rec.batch_size, optimizer=rec.optimizer,
        lr=rec.lr, weight_decay=rec.weight_decay, lr_milestones=rec.lr_milestones,
        monitor=monitor_attack(rec.monitor), eval_train_examples=max(prof.mnist_val // 2, 100),
        eval_batch_size=prof.eval_batch_size, early_stopping=rec.early_stopping, patience=rec.patience,
        seed=rec.seed,
    )
    return train_set, dict(config=config, val_set=val_set, device=default_device())


def _train_entry(name: str, prof: Profile, folder: Path, key: str) -> None:
    rec = profile_recipe(name, profile=prof)
    train_set, options = training_options(rec, prof)
    device = options["device"]
    model = initial_model(rec)
    ckpt = folder / f"training-{key[:16]}.ckpt"
    for stale in folder.glob("training-*.ckpt"):
        if stale != ckpt:
            stale.unlink(missing_ok=True)
    options.update(checkpoint=ckpt, description=f"zoo {name} [{prof.name}]")
    if prof.name == "gpu":  # the papers' full schedules: say so before the progress bar starts
        print(_long_run_notice(name, prof, ckpt), flush=True)
    started = time.perf_counter()
    try:
        history = training.train(model, train_set, **options)
    except (training.CheckpointError, training.CheckpointMismatchError) as error:
        if not ckpt.exists():
            raise
        warnings.warn(f"Zoo {name!r}: discarding the unusable training checkpoint {ckpt} ({error}); "
                      "training from scratch.", stacklevel=3)
        ckpt.unlink()
        model = initial_model(rec)
        history = training.train(model, train_set, **options)
    seconds = time.perf_counter() - started
    history.config["zoo"] = {"name": name, "profile": prof.name, "recipe": rec.to_dict()}

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files = {"model.pt": buffer.getvalue(), "history.json": history.to_json().encode(),
             "recipe.json": json.dumps(rec.to_dict(), indent=1).encode()}
    for filename, content in files.items():
        storage.atomic_write_bytes(folder / filename, content)
    manifest = {
        "format": ZOO_FORMAT, "name": name, "profile": prof.name, "key": key,
        "files": {filename: hashlib.sha256(content).hexdigest() for filename, content in files.items()},
        "train_seconds": round(seconds, 2), "trained_on": str(device), "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "description": describe(name, profile=prof),
    }
    storage.atomic_write_bytes(folder / "manifest.json", json.dumps(storage.seal(manifest), indent=1).encode())
    ckpt.unlink(missing_ok=True)
    log.info("zoo: trained %s [%s] in %.1f s", name, prof.name, seconds)


_MANIFEST_FIELDS = {"format", "name", "profile", "key", "files", "train_seconds", "trained_on", "torch", "created",
                    "description"}
_VERIFIED: dict[Path, tuple[str, tuple[tuple[int, int], ...]]] = {}  # folder -> (key, file stats)


def _file_stats(folder: Path, filenames: list[str]) -> tuple[tuple[int, int], ...]:
    return tuple((st.st_size, st.st_mtime_ns) for st in (os.stat(folder / f) for f in filenames))


def _check_entry(folder: Path, key: str) -> tuple[str, str]:
    """``("ok" | "missing" | "stale" | "corrupt", reason)`` for the cached entry in ``folder``."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return "missing", "not trained yet"
    try:
        manifest = json.loads(manifest_path.read_text())
        storage.check_seal(manifest, known=_MANIFEST_FIELDS, what="manifest.json")
        files: dict[str, str] = manifest["files"]
        entry_key = manifest["key"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return "corrupt", f"unreadable manifest ({error})"
    if manifest.get("name") != folder.name or manifest.get("profile") != folder.parent.name:
        return "corrupt", (f"its manifest.json belongs to zoo entry {manifest.get('name')!r} "
                           f"[{manifest.get('profile')}] (a file was copied over it)")
    if entry_key != key:
        return "stale", "its recipe changed"
    try:
        stats = _file_stats(folder, list(files))
        if _VERIFIED.get(folder) == (key, stats):
            return "ok", ""
        for filename, digest in files.items():
            if data.file_digest(folder / filename, "sha256") != digest:
                return "corrupt", f"{filename} is truncated or corrupted (checksum mismatch)"
    except OSError as error:
        return "corrupt", f"a file is missing ({error})"
    _VERIFIED[folder] = (key, stats)
    return "ok", ""


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the entry, so two processes never train it at once (POSIX only)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; atomic writes still keep the entry consistent
        yield
        return
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(name: str, *, profile: Profile | str | None = None) -> Path:
    """Train and cache zoo entry ``name`` unless a valid cached copy exists; return its folder.

    Raises:
        KeyError: not a zoo name.
        advcore.data.DataUnavailableError: the entry's data (CIFAR-10) is unavailable.
    """
    prof = current_profile(profile)
    key = cache_key(name, profile=prof)
    folder = entry_dir(name, profile=prof)
    status, reason = _check_entry(folder, key)
    if status == "ok":
        return folder
    with _locked(folder):
        status, reason = _check_entry(folder, key)  # another process may have trained it meanwhile
        if status == "ok":
            return folder
        if status == "corrupt":
            warnings.warn(f"Zoo entry {name!r} ({prof.name} profile) at {folder} is damaged: {reason}. "
                          "It will not be loaded; retraining it.", stacklevel=3)
        elif status == "stale":
            log.warning("zoo: %s [%s]: %s; retraining", name, prof.name, reason)
        (folder / "manifest.json").unlink(missing_ok=True)
        _VERIFIED.pop(folder, None)
        _train_entry(name, prof, folder, key)
    return folder


def get(name: str, *, profile: Profile | str | None = None, device: str | torch.device | None = None) -> nn.Module:
    """Zoo model ``name``, trained (on first use) with ``profile``'s sizes, in ``eval()`` mode.

    Args:
        name: one of :func:`names`.
        profile: a :class:`~advcore.profiles.Profile` or its name (default: ``ADVCORE_PROFILE``).
        device: where to put the model (default: CUDA when available, else CPU).

    Raises:
        KeyError: not a zoo name.
        advcore.data.DataUnavailableError: the entry needs CIFAR-10, which is unavailable.
    """
    prof = current_profile(profile)
    device = device if device is not None else default_device()
    run = committed_run(name, profile=prof)
    if run is not None:
        from advcore import longrun

        if not run.commits_weights:
            raise longrun.LongRunError(
                f"The paper-scale run of {name!r} committed what it measured, not its weights (too large to "
                f"commit): use zoo.committed_measurements({name!r}), or the smoke profile, which trains a small one.")
        return longrun.load_weights(run.zoo_name, device=device)
    folder = ensure(name, profile=prof)
    model = build_model(profile_recipe(name, profile=prof))
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def committed_measurements(name: str, *, profile: Profile | str | None = None) -> "longrun.Measurements | None":
    """What the committed paper-scale run of ``name`` measured at its end, for a model too large to commit.

    ``None`` where :func:`get` returns a model instead (the ``smoke`` profile, or a run that
    commits its weights); chapters then evaluate that model themselves.
    """
    run = committed_run(name, profile=profile)
    if run is None or run.commits_weights:
        return None
    from advcore import longrun

    return longrun.measurements(run.zoo_name)


def history(name: str, *, profile: Profile | str | None = None) -> training.History:
    """The training :class:`~advcore.train.History` of the model :func:`get` returns (trains it if needed)."""
    run = committed_run(name, profile=profile)
    if run is not None:
        from advcore import longrun

        return longrun.history(run.zoo_name)
    folder = ensure(name, profile=profile)
    return training.History.from_json((folder / "history.json").read_text())


def manifest(name: str, *, profile: Profile | str | None = None) -> dict[str, Any]:
    """The manifest of the model :func:`get` returns: key, training time and device, versions.

    For a committed paper-scale run: its ``run.json`` (verified), with ``train_seconds`` (all
    pieces' wall time) and ``trained_on`` (the pieces' devices) added.
    """
    run = committed_run(name, profile=profile)
    if run is not None:
        from advcore import longrun

        state = longrun.load_state(run.zoo_name)
        return {**state, "train_seconds": sum(piece["wall_time_s"] for piece in state["pieces"]),
                "trained_on": ", ".join(sorted({piece["device"] for piece in state["pieces"]}))}
    folder = ensure(name, profile=profile)
    return json.loads((folder / "manifest.json").read_text())


def model_key(name: str, *, profile: Profile | str | None = None) -> str:
    """A key of the weights :func:`get` returns, for caching results computed with them.

    For a committed run: its recipe key and the SHA-256 of its weights (a run retrained with
    the same recipe gets a new key); else :func:`cache_key`.
    """
    if committed_run(name, profile=profile) is None:
        return cache_key(name, profile=profile)
    state = manifest(name, profile=profile)
    made = state.get("weights") or state["final"]["measurements"]  # a run too large to commit: what it measured
    return storage.json_digest({"run": state["key"], "weights": state["files"][made]})


def train_all(names_: list[str] | None = None, *, profile: Profile | str | None = None,
              skip_unavailable: bool = True) -> dict[str, float]:
    """Make sure every named entry (default: all) is trained; return seconds spent per entry."""
    prof = current_profile(profile)
    spent: dict[str, float] = {}
    for name in names_ or names():
        if committed_run(name, profile=prof) is not None:
            print(f"{name:20s} committed  {describe(name, profile=prof)}", flush=True)
            continue
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            ensure(name, profile=prof)
        except data.DataUnavailableError as error:
            if not skip_unavailable:
                raise
            print(f"{name:20s} skipped: {str(error).split('. ')[0]}.", flush=True)
            continue
        spent[name] = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        print(f"{name:20s} {spent[name]:7.1f} s wall {cpu:7.1f} s CPU   {describe(name, profile=prof)}", flush=True)
    return spent


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advcore.zoo",
                                     description="Train (or verify) the zoo's models for a profile.")
    parser.add_argument("names", nargs="*", help="zoo names (default: all)")
    parser.add_argument("--profile", choices=("smoke", "cpu", "gpu"), default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is much faster on a CPU shared with other jobs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spent = train_all(args.names or None, profile=args.profile)
    print(f"total {sum(spent.values()):.1f} s for {len(spent)} entries")


if __name__ == "__main__":
    main()
