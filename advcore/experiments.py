"""The experiments of Part II (Madry et al. 2018) that matter at paper scale.

Each experiment is one function of a :class:`~advcore.profiles.Profile` that returns a
``dict`` of numbers and arrays: the chapter calls it for its live, profile-sized result,
and ``python -m advcore run NAME --profile gpu`` calls the *same* function and saves the
dict with provenance (:mod:`advcore.results`), so a committed paper-scale result and the
live one are made by the same code and read by the same plotting cells.

* :func:`landscape` (chapter 8) -- PGD from many random starts on a few test images, for a
  plainly and an adversarially trained CNN: loss traces of 20 restarts, the final loss of
  every restart (Madry et al.: 10^5), and whether the restarts found distinct maxima.
* :func:`robust_training` (chapter 9) -- PGD adversarial training of Madry et al.'s MNIST
  CNN (and a CIFAR-10 ResNet when CIFAR-10 is available): the adversarial training loss
  over training, clean and PGD accuracy of the plain and the robust model, and what a
  training step costs.

Everything is sized by the profile; trained models come from :mod:`advcore.zoo`
(trained once, checkpointed every epoch). Finished pieces (one example's landscape, one
model under one attack) are cached under ``cache_dir()/experiments``, so an interrupted
run resumes where it stopped.

Example::

    from advcore import experiments
    from advcore.profiles import current_profile
    live = experiments.landscape(current_profile("smoke"))
    live["final_losses"].shape      # (models, examples, restarts)
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from advcore import data, models, storage, zoo
from advcore import train as training
from advcore.attacks import AttackSpec, pgd_step_size
from advcore.evaluate import evaluate
from advcore.landscape import distinct_maxima, pgd_landscape
from advcore.papers import CIFAR_EPS, MADRY_EPS, MADRY_STEP, number
from advcore.profiles import Profile, current_profile, default_device
from advcore.results import Result

__all__ = [
    "CIFAR_EPS",
    "EXPERIMENTS",
    "Experiment",
    "MADRY_EPS",
    "cache_ledger",
    "landscape",
    "landscape_settings",
    "robust_training",
    "robust_training_runs",
]

CIFAR_EVAL_STEP = 2 / 255  # Madry et al.'s CIFAR-10 evaluation: PGD steps of 2/255
FORMAT = 4  # bump when a change makes cached pieces invalid (2: every evaluation seeds its own PGD starts;
# 3: pieces carry a checksum, their key and their compute time; 4: landscape losses recorded in float64
# and kept in float32, no longer float16, which rounds a robust model's losses of 1e-8 to 0)

#: The two models every Part II comparison is about: label in the figures -> zoo name.
MNIST_MODELS = {"plain": "cnn", "PGD-trained": "cnn_pgd"}
CIFAR_MODELS = {"plain": "resnet_cifar", "PGD-trained": "resnet_cifar_pgd"}

COSINE_BINS = np.linspace(-1.0, 1.0, 41)  # histogram of cosines between final perturbations
SHOWN_DELTAS = 8  # final perturbations kept per example and model, to look at
TIMED_STEPS = 2  # training steps timed per objective for the cost of robustness


# =========================================================================== registry


@dataclass(frozen=True)
class Experiment:
    """An experiment the command line can run: ``run(profile, *, device, progress) -> dict``."""

    name: str
    chapter: int
    summary: str
    run: Callable[..., dict[str, Any]]


# =========================================================================== shared helpers


def _digest(payload: Any) -> str:
    return storage.json_digest(payload)[:20]


#: What :func:`_cached` did during the current :func:`cache_ledger` block.
_LEDGER: list[dict[str, float]] = []


@contextlib.contextmanager
def cache_ledger() -> Iterator[dict[str, float]]:
    """Count, inside the block, the pieces computed and the pieces taken from the cache, with
    the seconds each took when it was computed: a resumed run's provenance reports what the
    result cost, not only the minutes of the last, resumed part."""
    ledger = {"computed": 0, "computed_seconds": 0.0, "from_cache": 0, "from_cache_seconds": 0.0}
    _LEDGER.append(ledger)
    try:
        yield ledger
    finally:  # by identity: two ledgers with the same counts are equal dicts
        _LEDGER[:] = [open_ledger for open_ledger in _LEDGER if open_ledger is not ledger]


def _record(kind: str, seconds: float) -> None:
    for ledger in _LEDGER:
        ledger[kind] += 1
        ledger[f"{kind}_seconds"] += seconds


def _cached(kind: str, payload: dict[str, Any], compute: Callable[[], dict[str, Any]], *,
            profile: Profile) -> dict[str, Any]:
    """``compute()`` once per ``payload``, kept in ``cache_dir()/experiments`` so runs resume.

    The seconds its computation took (now, or in an earlier run) are counted in every open
    :func:`cache_ledger` block. A piece is stored with a SHA-256 checksum
    (:func:`advcore.train.save_checkpoint`) and its own key, so a truncated or flipped file,
    or another piece's file in its place, is detected, reported with a warning and
    recomputed -- never used. Values must be tensors, numbers, strings or lists/dicts of
    those (``weights_only`` load).
    """
    key = _digest({"format": FORMAT, **payload})
    path = data.cache_dir() / "experiments" / profile.name / kind / f"{key}.pt"
    if path.is_file():
        try:
            stored = training.load_checkpoint(path)
            if not isinstance(stored, dict) or stored.get("key") != key or "value" not in stored:
                raise training.CheckpointError("it holds another piece (its recorded key differs)")
            _record("from_cache", float(stored["seconds"]))
            return stored["value"]
        except Exception as error:  # a damaged piece is recomputed, never trusted
            warnings.warn(f"Recomputing the damaged cached piece {path}: {error}", stacklevel=2)
            path.unlink(missing_ok=True)
    started = time.perf_counter()
    value = compute()
    seconds = time.perf_counter() - started
    training.save_checkpoint(path, {"key": key, "seconds": seconds, "value": value})
    _record("computed", seconds)
    return value


def _pgd_eval(eps: float, steps: int, restarts: int, step_size: float, device: torch.device) -> Callable:
    """A maker of PGD with random start(s) as an ``attack(model, x, y)`` for :func:`advcore.evaluate.evaluate`.

    Each call makes a fresh attack with its own seeded generator, so one model's evaluation
    never depends on which other evaluations ran before it (or came from the cache).
    """
    spec = AttackSpec("pgd", eps, step_size, steps, restarts=restarts)
    return lambda: spec.seeded(0, device)


def _eval_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s MNIST step 0.01 when its steps can cross the ball 2.5 times (>= 75 of them), else
    the larger :func:`advcore.attacks.pgd_step_size` (``2.5 eps / steps``: every budget can still cross
    it 2.5 times; the rule MadryLab's robustness library states, not Madry et al. 2018)."""
    rule = pgd_step_size(eps, steps)
    return max(MADRY_STEP, rule) if eps == MADRY_EPS else rule


# =========================================================================== chapter 8: the landscape


def landscape_settings(profile: Profile | str | None = None) -> dict[str, Any]:
    """PGD settings of the landscape experiment for ``profile``.

    Madry et al. (MNIST, Appendix A): eps 0.3, PGD "until the loss plateaus" (their Fig. 3 plots
    100 iterations; the landscape's step size is not stated, we use the training step 0.01), 10^5
    restarts. With fewer steps (cpu, smoke) the step grows to ``2.5 eps / steps`` so that
    every restart can still travel across the ball.
    """
    prof = current_profile(profile)
    steps = prof.landscape_steps
    return {
        "eps": MADRY_EPS,
        "step_size": _eval_step_size(MADRY_EPS, steps),
        "steps": steps,
        "restarts": prof.landscape_restarts,
        "traced": min(prof.landscape_traced, prof.landscape_restarts),
        "keep_deltas": min(256, prof.landscape_restarts),
        "examples": prof.landscape_examples,
    }


def _pick_examples(models_: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, count: int,
                   device: torch.device) -> list[int]:
    """The first ``count`` test images every model classifies correctly (clean), in test-set order."""
    with torch.no_grad():
        correct = torch.ones(len(y), dtype=torch.bool)
        for model in models_.values():
            correct &= (model(x.to(device)).argmax(1).cpu() == y)
    chosen = torch.nonzero(correct).flatten()[:count].tolist()
    return chosen + [i for i in range(len(y)) if i not in chosen][: count - len(chosen)]


def _landscape_piece(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any], *,
                     seed: int, device: torch.device, progress: bool) -> dict[str, Any]:
    """One example, one model: PGD from ``restarts`` random starts, and what its maxima look like."""
    generator = torch.Generator(device=device).manual_seed(seed)  # same starts for every model
    scape = pgd_landscape(model, x.to(device), y.to(device), eps=settings["eps"], step_size=settings["step_size"],
                          steps=settings["steps"], restarts=settings["restarts"], traced=settings["traced"],
                          keep_deltas=settings["keep_deltas"], generator=generator, progress=progress)
    maxima = distinct_maxima(scape, 0)
    off_diagonal = maxima.cosine[~torch.eye(maxima.cosine.shape[0], dtype=torch.bool)]
    sizes = maxima.cluster_sizes[:5] + [0] * (5 - len(maxima.cluster_sizes[:5]))
    return {
        # float32, not float16: a robust model's losses under attack go down to 1e-10 (float16 keeps
        # nothing below 6e-8 and only a few digits below 6e-5); 4 bytes per restart is 0.4 MB per 10^5
        "final_losses": scape.final_losses[0].float(),
        "traces": scape.traces[0].float(),
        "class_counts": torch.bincount(scape.final_predictions[0], minlength=10)[:10],
        "deltas": scape.final_deltas[0, :SHOWN_DELTAS].half(),
        "n_clusters": maxima.n_clusters,
        "cluster_sizes": torch.tensor(sizes),
        "cosine_hist": torch.from_numpy(np.histogram(off_diagonal.numpy(), bins=COSINE_BINS)[0]),
        "median_mean_abs_distance": float(maxima.mean_abs_distance[
            ~torch.eye(maxima.cosine.shape[0], dtype=torch.bool)].median()),
        "n_predicted_classes": maxima.n_predicted_classes,
    }


def landscape(profile: Profile | str | None = None, *, device: torch.device | str | None = None,
              progress: bool = False) -> dict[str, Any]:
    """The landscape of the inner maximization (Madry et al. 2018, Appendix A, Fig. 3-4).

    For each of ``profile.landscape_examples`` MNIST test images (the first ones both models
    classify correctly) and for the plain and the PGD-trained CNN of the zoo: PGD from
    ``profile.landscape_restarts`` uniformly random starts in the eps-ball
    (:func:`advcore.landscape.pgd_landscape`; the same starts for both models), the loss at
    every iteration of the first ``landscape_traced`` restarts, the final loss of every
    restart, and a distinct-maxima analysis (:func:`advcore.landscape.distinct_maxima`).

    Returns:
        A dict with ``models`` (labels), ``zoo_names``, ``examples`` (test-set indices),
        ``labels``, the PGD ``settings`` and arrays, ``M`` models by ``E`` examples:
        ``final_losses (M, E, R)`` float32, ``traces (M, E, T, steps + 1)``,
        ``class_counts (M, E, 10)`` (class predicted at the final iterates), ``deltas
        (M, E, 8, 1, 28, 28)`` (eight final perturbations), ``images (E, 1, 28, 28)``,
        ``n_clusters``, ``largest_cluster (M, E)`` (fractions), ``cosine_hist (M, E, 40)``
        with ``cosine_bins``, ``median_mean_abs_distance (M, E)``, ``n_predicted_classes (M, E)``,
        and ``seconds`` per model.
    """
    prof = current_profile(profile)
    device = torch.device(device) if device is not None else default_device()
    settings = landscape_settings(prof)
    _, _, test_set = data.mnist_splits(prof)
    x_all, y_all = test_set.tensors
    nets = {label: zoo.get(name, profile=prof, device=device) for label, name in MNIST_MODELS.items()}
    chosen = _pick_examples(nets, x_all, y_all, settings["examples"], device)

    pieces: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for label, model in nets.items():
        pieces[label] = []
        with cache_ledger() as ledger:  # the seconds of computing the pieces, now or in an earlier run
            for index in chosen:
                payload = {"model": zoo.model_key(MNIST_MODELS[label], profile=prof), "example": index,
                           "settings": settings, "device": device.type}
                pieces[label].append(_cached("landscape", payload, lambda: _landscape_piece(
                    model, x_all[index:index + 1], y_all[index:index + 1], settings, seed=index,
                    device=device, progress=progress), profile=prof))
        seconds[label] = ledger["computed_seconds"] + ledger["from_cache_seconds"]

    def stack(key: str, dtype: Any = None) -> np.ndarray:
        array = np.stack([np.stack([np.asarray(p[key]) for p in pieces[label]]) for label in nets])
        return array.astype(dtype) if dtype is not None else array

    restarts_kept = settings["keep_deltas"]
    return {
        "models": list(nets),
        "zoo_names": [MNIST_MODELS[label] for label in nets],
        "zoo_descriptions": [zoo.describe(MNIST_MODELS[label], profile=prof) for label in nets],
        "examples": chosen,
        "labels": [int(y_all[i]) for i in chosen],
        "settings": settings,
        "images": x_all[chosen].numpy().astype(np.float16),
        "final_losses": stack("final_losses", np.float32),
        "traces": stack("traces", np.float32),
        "class_counts": stack("class_counts", np.int64),
        "deltas": stack("deltas", np.float16),
        "n_clusters": stack("n_clusters", np.int64),
        "cluster_sizes": stack("cluster_sizes", np.int64),
        "largest_cluster": stack("cluster_sizes")[..., 0].astype(np.float64) / restarts_kept,
        "cosine_hist": stack("cosine_hist", np.int64),
        "cosine_bins": COSINE_BINS,
        "median_mean_abs_distance": stack("median_mean_abs_distance", np.float64),
        "n_predicted_classes": stack("n_predicted_classes", np.int64),
        "seconds": seconds,
    }


# =========================================================================== chapter 9: robust training


def _binned(values: list[float], max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Per-step records averaged over equal bins: at most ``max_points`` (step, mean) pairs."""
    array = np.asarray(values, dtype=np.float64)
    width = max(1, math.ceil(len(array) / max_points))
    count = len(array) // width * width
    steps = np.arange(1, len(array) + 1, dtype=np.float64)
    if count < len(array):  # a last, shorter bin
        tail_steps, tail = steps[count:].mean(keepdims=True), array[count:].mean(keepdims=True)
    else:
        tail_steps, tail = np.empty(0), np.empty(0)
    means = np.concatenate([array[:count].reshape(-1, width).mean(1), tail])
    centers = np.concatenate([steps[:count].reshape(-1, width).mean(1), tail_steps])
    return centers.astype(np.float32), means.astype(np.float32)


def _step_seconds(make_model: Callable[[], nn.Module], batches: TensorDataset, objective: training.Objective,
                  *, batch_size: int, device: torch.device) -> float:
    """Wall time of one training step of ``objective``, averaged over the steps of ``batches``."""
    model = make_model()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    training.train(model, batches, objective=objective, epochs=1, batch_size=batch_size, monitor=None,
                   eval_train_examples=1, progress=False, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / math.ceil(len(batches) / batch_size)


@dataclass(frozen=True)
class _RobustSetup:
    """What the robust-training comparison measures on one dataset."""

    eps: float
    test_set: TensorDataset
    attacks: dict[str, Callable[[], Any]]  # name -> maker of a fresh attack (None: clean), one per evaluation
    make_model: Callable[[], nn.Module]
    batch_size: int
    step_objectives: dict[str, training.Objective]  # the training steps whose cost is timed
    timing_data: Callable[[int], TensorDataset]  # the first n training examples


def _mnist_setup(prof: Profile, device: torch.device) -> _RobustSetup:
    eps, eval_steps, eval_restarts = MADRY_EPS, prof.pgd_eval_steps, prof.pgd_eval_restarts
    eval_step = _eval_step_size(eps, eval_steps)
    return _RobustSetup(
        eps=eps, test_set=data.mnist_splits(prof)[2],
        attacks={
            "natural": lambda: None,
            "FGSM": lambda: AttackSpec("fgsm", eps),
            "PGD-40 (step 0.01)": _pgd_eval(eps, 40, 1, MADRY_STEP, device),
            f"PGD-{eval_steps}, {eval_restarts} restart{'s' if eval_restarts > 1 else ''} (step {eval_step:.3g})":
                _pgd_eval(eps, eval_steps, eval_restarts, eval_step, device),
        },
        make_model=models.MadryCNN, batch_size=prof.cnn_batch_size,
        step_objectives={
            "standard": training.StandardObjective(),
            f"PGD-{prof.pgd_train_steps} (this profile's training)": training.PGDObjective(
                eps=eps, step_size=prof.pgd_train_step_size, steps=prof.pgd_train_steps),
            "PGD-40 (Madry et al.'s training)": training.PGDObjective(eps=eps, step_size=MADRY_STEP, steps=40),
        },
        timing_data=lambda n: TensorDataset(*[t[:n] for t in data.mnist_splits(prof)[0].tensors]),
    )


def _cifar_setup(prof: Profile, device: torch.device) -> _RobustSetup:
    eps = CIFAR_EPS
    return _RobustSetup(
        eps=eps, test_set=data.load_cifar10("test", limit=prof.cifar_test),
        attacks={
            "natural": lambda: None,
            "FGSM": lambda: AttackSpec("fgsm", eps),
            "PGD-7 (step 2/255)": _pgd_eval(eps, 7, 1, CIFAR_EVAL_STEP, device),
            "PGD-20 (step 2/255)": _pgd_eval(eps, 20, 1, CIFAR_EVAL_STEP, device),
        },
        make_model=partial(models.PreActResNet18, width=prof.resnet_width), batch_size=prof.resnet_batch_size,
        step_objectives={
            "standard": training.StandardObjective(),
            f"PGD-{prof.pgd_train_steps_cifar} (this profile's training)": training.PGDObjective(
                eps=eps, step_size=prof.pgd_train_step_size_cifar, steps=prof.pgd_train_steps_cifar),
            "PGD-7 (Madry et al.'s paper)": training.PGDObjective(
                eps=eps, step_size=number("madry.cifar.train_step_size").value, steps=7),
        },
        timing_data=lambda n: TensorDataset(*data.load_cifar10("train", limit=n).tensors),
    )


def _robust_part(prof: Profile, device: torch.device, *, dataset: str, progress: bool) -> dict[str, Any]:
    """Histories, accuracy table and training cost for one dataset (``mnist`` or ``cifar10``)."""
    names = MNIST_MODELS if dataset == "mnist" else CIFAR_MODELS
    setup = (_mnist_setup if dataset == "mnist" else _cifar_setup)(prof, device)
    out: dict[str, Any] = {"eps": setup.eps, "test_examples": len(setup.test_set), "models": list(names),
                           "zoo_names": list(names.values())}
    arrays: dict[str, np.ndarray] = {}
    rows, epochs, recipes, train_seconds = [], {}, {}, {}
    for label, name in names.items():
        model = zoo.get(name, profile=prof, device=device)  # trained here when the zoo has no copy yet
        history, manifest = zoo.history(name, profile=prof), zoo.manifest(name, profile=prof)
        recipe = zoo.recipe(name, profile=prof)
        recipes[label] = {"description": zoo.describe(name, profile=prof), "note": recipe.note,
                          "objective": recipe.objective_options, "epochs": recipe.epochs,
                          "trained_on": manifest.get("trained_on")}
        train_seconds[label] = manifest.get("train_seconds")
        epochs[label] = {key: history.epochs[key] for key in
                         ("epoch", "step", "val_clean_acc", "val_adv_acc", "train_adv_loss", "train_clean_loss",
                          "seconds")}
        key = "plain" if label == "plain" else "robust"
        arrays[f"{key}_steps"], arrays[f"{key}_loss"] = _binned(history.steps["loss"])
        arrays[f"{key}_clean_loss_steps"], arrays[f"{key}_clean_loss"] = _binned(history.steps["clean_loss"])
        rows += _accuracies(label, name, model, setup, prof, device, progress=progress)
    out.update(accuracy=rows, epochs=epochs, recipes=recipes, train_seconds=train_seconds,
               step_seconds=_training_costs(setup, device), batch_size=setup.batch_size, device=str(device))
    out["arrays"] = arrays
    return out


def _accuracies(label: str, name: str, model: nn.Module, setup: _RobustSetup, prof: Profile,
                device: torch.device, *, progress: bool) -> list[dict[str, Any]]:
    """Zoo model ``name``'s accuracy under each of the setup's attacks (each a cached piece)."""
    rows = []
    for attack_name, make_attack in setup.attacks.items():
        payload = {"model": zoo.model_key(name, profile=prof), "attack": attack_name, "device": device.type,
                   "n": len(setup.test_set)}
        measured = _cached("robust-training", payload, lambda: {"accuracy": evaluate(
            model, setup.test_set, attack=make_attack(), batch_size=prof.eval_batch_size, device=device,
            progress=progress).accuracy}, profile=prof)
        rows.append({"model": label, "attack": attack_name, "accuracy": measured["accuracy"]})
    return rows


def _training_costs(setup: _RobustSetup, device: torch.device) -> dict[str, float]:
    """Seconds per training step of each of the setup's objectives (after one uncounted warm-up step)."""
    batch_size = setup.batch_size
    timing_batch = setup.timing_data(TIMED_STEPS * batch_size)
    warm_up = TensorDataset(*[t[:batch_size] for t in timing_batch.tensors])
    _step_seconds(setup.make_model, warm_up, setup.step_objectives["standard"], batch_size=batch_size,
                  device=device)  # not counted
    return {label: _step_seconds(setup.make_model, timing_batch, objective, batch_size=batch_size, device=device)
            for label, objective in setup.step_objectives.items()}


def robust_training(profile: Profile | str | None = None, *, device: torch.device | str | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """PGD adversarial training (Madry et al. 2018, Sec. 4): MNIST, and CIFAR-10 when available.

    For the zoo's plain and PGD-trained models (MNIST: Madry et al.'s CNN, eps 0.3; CIFAR-10:
    a pre-activation ResNet-18, eps 8/255): the per-step training loss (for the PGD-trained
    model, the loss on its PGD examples -- the lecture's figure), per-epoch clean and
    adversarial validation accuracy, test accuracy under no attack, FGSM and PGD, the
    zoo's training time, and the measured time of one training step per objective.

    Returns:
        A dict with ``mnist`` and ``cifar10`` parts (``cifar10["available"]`` says whether
        it ran and, if not, why) and, at the top level, the per-step arrays
        ``mnist_plain_steps``, ``mnist_plain_loss``, ``mnist_robust_steps``,
        ``mnist_robust_loss``, ... (the same with ``cifar10_`` when available).
    """
    prof = current_profile(profile)
    device = torch.device(device) if device is not None else default_device()
    result: dict[str, Any] = {}
    for dataset in ("mnist", "cifar10"):
        if dataset == "cifar10" and not data.cifar10_available():
            result[dataset] = {"available": False, "reason": (
                "CIFAR-10 is not available here: it is not in the cache or the data mirror and cannot "
                "be downloaded (offline). On a machine with internet (e.g. Colab) it is downloaded.")}
            continue
        part = _robust_part(prof, device, dataset=dataset, progress=progress)
        for key, array in part.pop("arrays").items():
            result[f"{dataset}_{key}"] = array
        result[dataset] = {"available": True, **part}
    return result


#: How chapter 9 names the committed long runs' evaluations (``advcore.longrun.EVALUATIONS``):
#: as the live experiment names the same attacks, so the two tables line up.
RUN_EVALUATION_NAMES = {"fgsm": "FGSM", "pgd40": "PGD-40 (step 0.01)", "pgd100x20": "PGD-100, 20 restarts (step 0.01)"}


def _evaluation_name(which: str, states: dict[str, tuple[dict[str, Any], dict[str, Any]]], test_examples: int) -> str:
    """Chapter 9's column name for committed evaluation ``which`` of the runs in ``states`` (label ->
    (state, evaluations)): it says on how many test images when not on all ``test_examples``, per
    model when the models were evaluated on different numbers (one column for both models)."""
    counts = {label: evaluations[which]["test_examples"] for label, (_, evaluations) in states.items()
              if which in evaluations}
    name = RUN_EVALUATION_NAMES[which]
    if set(counts.values()) == {test_examples}:
        return name
    if len(set(counts.values())) == 1:
        return f"{name}, {next(iter(counts.values())):,} images"
    return f"{name}, " + " and ".join(f"{n:,} ({label})" for label, n in counts.items()) + " images"


def robust_training_runs(*, plain: str = "cnn", robust: str = "cnn_pgd_fast",
                         root: str | Path | None = None) -> Result | None:
    """Chapter 9's view of the finished long runs ``plain`` and ``robust`` (``results/runs/``), in
    the layout of :func:`robust_training`'s MNIST part, or ``None`` until both are finished.

    Training curves and per-epoch validation accuracy come from the runs' committed histories;
    test accuracy from their end-of-run test (clean, 10,000 images) and the committed
    evaluations (``python -m advcore.longrun evaluate``; an attack evaluated on fewer images
    says how many in its name). ``describe()`` names the runs, their CPU time, devices,
    commits and how often a piece resumed with a fresh optimizer.
    """
    from advcore import longrun  # longrun builds on the zoo, as this module does: imported when needed

    runs = {"plain": plain, "PGD-trained": robust}
    states = {}
    for label, run in runs.items():
        try:
            state = longrun.load_state(run, root=root)
            evaluations = longrun.load_evaluations(run, root=root)
        except longrun.LongRunError as error:
            warnings.warn(f"Not showing the committed runs: {error}", stacklevel=2)
            return None
        if state is None or state["epochs_done"] < state["epochs_total"]:
            return None
        states[label] = (state, evaluations)
    part: dict[str, Any] = {"available": True, "eps": MADRY_EPS, "models": list(runs), "runs": list(runs.values()),
                            "zoo_names": [longrun.RUNS[run].zoo_name for run in runs.values()]}
    arrays: dict[str, np.ndarray] = {}
    rows, epochs, recipes, train_seconds = [], {}, {}, {}
    for label, run in runs.items():
        state, evaluations = states[label]
        rec, history = longrun.recipe(run), longrun.history(run, root=root)
        devices = sorted({piece["device"] for piece in state["pieces"]})
        described = zoo.describe(rec.name, profile=longrun.RUNS[run].profile)
        recipes[label] = {"description": f"results/runs/{run}: {described}", "note": rec.note,
                          "objective": rec.objective_options, "epochs": rec.epochs, "trained_on": ", ".join(devices),
                          "pieces": len(state["pieces"]), "precision": longrun.RUNS[run].precision or "float32",
                          "fresh_optimizer_resumes": sum("fresh optimizer" in note for note in state["notes"]),
                          "weight_updates": len(history.steps["loss"]), "training_images": rec.sizes["mnist_train"],
                          "evaluated_on": {"natural": state["final"]["test_examples"], **{
                              RUN_EVALUATION_NAMES[which]: measured["test_examples"]
                              for which, measured in evaluations.items()}}}
        train_seconds[label] = sum(piece["wall_time_s"] for piece in state["pieces"])
        epochs[label] = {key: history.epochs[key] for key in
                         ("epoch", "step", "val_clean_acc", "val_adv_acc", "train_adv_loss", "train_clean_loss",
                          "seconds")}
        key = "plain" if label == "plain" else "robust"
        arrays[f"mnist_{key}_steps"], arrays[f"mnist_{key}_loss"] = _binned(history.steps["loss"])
        clean_loss = _binned(history.steps["clean_loss"])
        arrays[f"mnist_{key}_clean_loss_steps"], arrays[f"mnist_{key}_clean_loss"] = clean_loss
        final = state["final"]
        rows.append({"model": label, "attack": "natural", "accuracy": 1 - final["clean_error"]})
        for which, name in RUN_EVALUATION_NAMES.items():
            if which in evaluations:
                rows.append({"model": label, "attack": _evaluation_name(which, states, final["test_examples"]),
                             "accuracy": 1 - evaluations[which]["attack_error"]})
    part.update(accuracy=rows, epochs=epochs, recipes=recipes, train_seconds=train_seconds,
                test_examples=states["plain"][0]["final"]["test_examples"])
    pieces = [piece for state, _ in states.values() for piece in state["pieces"]]
    resumed = sum(recipe["fresh_optimizer_resumes"] for recipe in recipes.values())
    commits = sorted({(piece.get("git_commit") or "unknown")[:7] for piece in pieces})
    description = (f"long CPU runs `results/runs/{plain}` and `results/runs/{robust}`: "
                   f"{sum(piece['cpu_time_s'] for piece in pieces) / 3600:.1f} CPU hours "
                   f"({sum(piece['wall_time_s'] for piece in pieces) / 3600:.1f} h wall time) in {len(pieces)} pieces on "
                   f"{' and '.join(sorted({piece['device'] for piece in pieces}))}, "
                   f"{' and '.join(sorted({recipe['precision'] for recipe in recipes.values()}))}, "
                   + (f"at commit {commits[0]}; " if len(commits) == 1 else
                      f"at {len(commits)} commits ({commits[0]} to {commits[-1]}); ")
                   + (f"{resumed} piece(s) resumed from the committed weights with a fresh optimizer" if resumed
                      else "no piece resumed with a fresh optimizer (each continued from its predecessor's full "
                      "checkpoint)"))
    return Result(name="robust-training", arrays=arrays, path=longrun.run_dir(robust, root=root),
                  data={"mnist": part, "cifar10": {"available": False, "reason": "The long CPU runs are MNIST only."}},
                  provenance={"profile": "long runs", "description": description})


EXPERIMENTS: dict[str, Experiment] = {
    "landscape": Experiment(
        "landscape", 8, "PGD from many random starts (gpu: 10^5) on plain vs PGD-trained MNIST CNNs",
        landscape),
    "robust-training": Experiment(
        "robust-training", 9, "PGD adversarial training curves, clean/PGD accuracy, training cost",
        robust_training),
}
