"""Experiment sizes: one notebook, three profiles.

Every experiment in the book reads its sizes from here, so one environment variable,
``ADVCORE_PROFILE``, scales the whole book:

* ``smoke`` -- tests and CI: every notebook runs in seconds; numbers are not meaningful.
* ``cpu``   -- the rendered book on a 2-core laptop: the whole book in minutes.
* ``gpu``   -- paper scale (Goodfellow et al. 2015; Madry et al. 2018) on a GPU.

The default is ``gpu`` when CUDA is available and ``cpu`` otherwise.

Example::

    from advcore.profiles import current_profile
    profile = current_profile()
    print(profile.name, profile.mnist_train)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from advcore.attacks import pgd_step_size
from advcore.papers import CIFAR_EPS, MADRY_EPS, number

PROFILE_ENV = "ADVCORE_PROFILE"
PROFILE_NAMES = ("smoke", "cpu", "gpu")


@dataclass(frozen=True)
class Profile:
    """The sizes of every experiment for one profile.

    Field groups: data sizes (number of examples), training budgets (epochs and PGD
    steps inside training), and attack/evaluation sizes. Chapters never hard-code these.
    """

    name: str

    # --- data (numbers of examples) ---
    mnist_train: int  # training examples drawn from the 60k MNIST training set
    mnist_val: int  # held out of the training set for (adversarial) early stopping
    mnist_test: int  # test examples evaluated (<= 10k)
    cifar_train: int
    cifar_test: int

    # --- training ---
    batch_size: int  # softmax regression and the MLPs (the CNN and ResNet have their own below)
    eval_batch_size: int
    epochs_linear: int  # softmax regression
    epochs_mlp: int  # maxout / sigmoid / ReLU MLPs
    epochs_cnn: int  # Madry et al.'s MNIST CNN
    epochs_resnet: int  # CIFAR-10 ResNet
    pgd_train_steps: int  # PGD iterations inside adversarial training (Madry: 40 on MNIST)
    # (training fields added for the zoo, advcore.zoo; batch sizes are per-architecture)
    pgd_train_step_size: float  # Madry: 0.01 for 40 steps; fewer: attacks.pgd_step_size (robustness library's rule)
    pgd_train_warmup: float  # fraction of PGD training with eps ramped up from 0 (Madry: none)
    cnn_batch_size: int  # Madry et al.: 50
    resnet_batch_size: int  # Madry et al. (CIFAR-10): 128
    lr_mlp: float  # Adam learning rate of softmax regression and the MLPs
    lr_cnn: float  # Adam learning rate of the Madry CNN (Madry et al.: 1e-4 over 100k steps)
    lr_resnet: float  # SGD learning rate of the ResNet (Madry et al.: 0.1, /10 at 50% and 75%)
    # The maxout networks' optimizer. smoke/cpu: Adam for a short budget; gpu (the paper-scale
    # runs committed under results/runs/): SGD with momentum, step decay and max-norm, after
    # the pylearn2 setup of Goodfellow et al. (2013) (see advcore.zoo for where we deviate).
    optimizer_maxout: str  # "adam" or "sgd" (momentum 0.9)
    lr_maxout: float
    lr_milestones_maxout: tuple[float, ...]  # fractions of training where the lr drops by 10x
    max_norm_maxout: float | None  # pylearn2's max_col_norm (1.9365), None: unconstrained
    epochs_maxout: int  # the 240-unit maxout networks
    maxout_large_units: int  # the larger FGSM-trained maxout network (Goodfellow et al.: 1600)
    epochs_mlp_large: int  # its epochs (early stopping keeps the best on adversarial val. error)
    early_stopping_patience: int  # epochs without improvement before stopping (0: never stop)
    epochs_surrogate: int  # the black-box surrogate MLP (trained on the small val. tail)
    committed_runs: bool  # zoo.get loads a finished paper-scale run committed under results/runs/ (advcore.longrun)
    pgd_train_steps_cifar: int  # Madry et al.'s paper: 7 steps of 2/255 at eps 8/255 (released config: 10)
    pgd_train_step_size_cifar: float
    resnet_width: int  # channels of the ResNet's first stage (standard: 64)
    # PGD training of the CNN with a fast start (zoo "cnn_pgd_fast"): the first fast_start_cnn of
    # training uses Wong et al. (2020)'s one-step FGSM from a random start, then PGD as above.
    # Not Madry et al.'s recipe: a schedule a CPU can afford (advcore.longrun).
    epochs_cnn_fast_start: int
    fast_start_cnn: float  # fraction of training steps in the fast phase
    lr_cnn_fast_start: float  # Adam lr of the fast phase; the PGD phase uses lr_cnn (10x lower, or equal)

    # --- attacks and evaluation ---
    pgd_eval_steps: int  # PGD iterations when evaluating robustness (Madry: 100)
    pgd_eval_restarts: int  # random restarts when evaluating (Madry: 20)
    landscape_examples: int  # examples whose inner-max landscape is explored
    landscape_restarts: int  # random PGD starts per example (Madry: 10^5)
    landscape_steps: int  # PGD iterations per restart
    landscape_traced: int  # restarts whose loss is recorded at every iteration (lecture: 20)
    sweep_points: int  # epsilon values in an epsilon sweep (paper Fig. 4)
    transfer_examples: int  # examples in a transfer matrix

    def replace(self, **changes: int | float | str) -> "Profile":
        """A copy with some sizes changed (e.g. a quick test)."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        mnist_train=1_000,
        mnist_val=200,
        mnist_test=200,
        cifar_train=500,
        cifar_test=100,
        batch_size=100,
        eval_batch_size=500,
        epochs_linear=2,
        epochs_mlp=2,
        epochs_cnn=1,
        epochs_resnet=1,
        pgd_train_steps=3,
        pgd_train_step_size=pgd_step_size(MADRY_EPS, 3),  # 0.25
        pgd_train_warmup=0.3,
        cnn_batch_size=50,
        resnet_batch_size=100,
        lr_mlp=1e-3,
        lr_cnn=1e-3,
        lr_resnet=0.05,
        optimizer_maxout="adam",
        lr_maxout=1e-3,
        lr_milestones_maxout=(),
        max_norm_maxout=None,
        epochs_maxout=2,
        maxout_large_units=1_600,
        committed_runs=False,
        epochs_mlp_large=2,
        early_stopping_patience=0,
        epochs_surrogate=5,
        pgd_train_steps_cifar=2,
        pgd_train_step_size_cifar=pgd_step_size(CIFAR_EPS, 2),  # 10/255
        resnet_width=8,
        epochs_cnn_fast_start=1,
        fast_start_cnn=0.5,
        lr_cnn_fast_start=1e-3,
        pgd_eval_steps=5,
        pgd_eval_restarts=1,
        landscape_examples=2,
        landscape_restarts=64,
        landscape_steps=10,
        landscape_traced=5,
        sweep_points=21,
        transfer_examples=200,
    ),
    "cpu": Profile(
        name="cpu",
        mnist_train=10_000,
        mnist_val=1_000,
        mnist_test=1_000,
        cifar_train=5_000,
        cifar_test=500,
        batch_size=128,
        eval_batch_size=1_000,
        epochs_linear=5,
        epochs_mlp=5,
        epochs_cnn=2,
        epochs_resnet=1,
        pgd_train_steps=7,
        # The rule, rounded as first chosen (0.107, and 6.67/255 below): the cpu zoo's models keep their keys.
        pgd_train_step_size=round(pgd_step_size(MADRY_EPS, 7), 3),
        pgd_train_warmup=0.3,
        cnn_batch_size=50,
        resnet_batch_size=128,
        lr_mlp=1e-3,
        lr_cnn=1e-3,
        lr_resnet=0.05,
        optimizer_maxout="adam",
        lr_maxout=1e-3,
        lr_milestones_maxout=(),
        max_norm_maxout=None,
        epochs_maxout=5,
        maxout_large_units=1_600,
        committed_runs=True,
        epochs_mlp_large=2,
        early_stopping_patience=0,
        epochs_surrogate=20,
        pgd_train_steps_cifar=3,
        pgd_train_step_size_cifar=round(pgd_step_size(CIFAR_EPS, 3) * 255, 2) / 255,
        resnet_width=16,
        epochs_cnn_fast_start=2,
        fast_start_cnn=0.5,
        lr_cnn_fast_start=1e-3,
        pgd_eval_steps=20,
        pgd_eval_restarts=1,
        landscape_examples=3,
        landscape_restarts=1_000,
        landscape_steps=40,
        landscape_traced=20,
        sweep_points=101,
        transfer_examples=1_000,
    ),
    "gpu": Profile(
        name="gpu",
        mnist_train=55_000,
        mnist_val=5_000,
        mnist_test=10_000,
        cifar_train=50_000,
        cifar_test=10_000,
        batch_size=100,  # Goodfellow et al.'s maxout MNIST setup (pylearn2): batch 100
        eval_batch_size=2_000,
        epochs_linear=20,
        epochs_mlp=100,
        epochs_cnn=91,  # Madry et al.: 100k steps of batch 50 over 55k examples
        epochs_resnet=205,  # Madry et al.: 80k steps of batch 128 over 50k examples
        pgd_train_steps=40,
        pgd_train_step_size=number("madry.mnist.train_step_size").value,  # Madry et al.: 0.01
        pgd_train_warmup=0.0,
        cnn_batch_size=50,
        resnet_batch_size=128,
        lr_mlp=1e-3,
        lr_cnn=1e-4,
        lr_resnet=0.1,
        optimizer_maxout="sgd",
        lr_maxout=0.02,  # with momentum 0.9: a step like pylearn2's lr .1 with momentum .5
        lr_milestones_maxout=(0.5, 0.75),
        max_norm_maxout=1.9365,  # pylearn2's mnist_pi.yaml (Goodfellow et al. 2013)
        epochs_maxout=200,
        maxout_large_units=1_600,
        committed_runs=True,
        epochs_mlp_large=100,
        early_stopping_patience=20,
        epochs_surrogate=50,
        pgd_train_steps_cifar=7,
        pgd_train_step_size_cifar=number("madry.cifar.train_step_size").value,  # 2/255 (paper and released config)
        resnet_width=64,
        epochs_cnn_fast_start=30,
        fast_start_cnn=1 / 3,
        lr_cnn_fast_start=1e-3,
        pgd_eval_steps=100,
        pgd_eval_restarts=20,
        landscape_examples=5,
        landscape_restarts=100_000,
        landscape_steps=100,
        landscape_traced=20,
        sweep_points=201,
        transfer_examples=10_000,
    ),
}


def default_profile_name() -> str:
    """``gpu`` when CUDA is available, else ``cpu``."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def current_profile(name: Profile | str | None = None) -> Profile:
    """The profile named ``name``, else ``$ADVCORE_PROFILE``, else the default; a :class:`Profile`
    passed in is returned as it is (so every ``profile=`` option of advcore resolves here).

    Raises:
        ValueError: the name is not one of ``smoke``, ``cpu``, ``gpu``.
    """
    if isinstance(name, Profile):
        return name
    chosen = name or os.environ.get(PROFILE_ENV, "").strip() or default_profile_name()
    chosen = chosen.lower()
    if chosen not in PROFILES:
        raise ValueError(
            f"Unknown profile {chosen!r} (from {PROFILE_ENV} or the argument). "
            f"Choose one of {', '.join(PROFILE_NAMES)}, e.g. `export {PROFILE_ENV}=cpu`."
        )
    return PROFILES[chosen]


def default_device() -> torch.device:
    """The CUDA device when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
