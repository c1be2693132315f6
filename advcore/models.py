"""The models of the lecture, all mapping images in [0, 1] to logits.

* :class:`SoftmaxRegression` -- the "shallow softmax" of Goodfellow et al. (2015), Sec. 4.
* :class:`MaxoutMLP` -- Goodfellow et al.'s MNIST maxout network: two maxout hidden layers
  (240 units of 5 pieces by default; the paper's larger model has 1600) with dropout.
* :class:`HiddenPerturbMLP` -- an MLP with sigmoid or ReLU hidden units whose hidden
  activations can be perturbed (Goodfellow et al., Sec. 6: adversarial perturbation of
  hidden layers; the output layer is never perturbed).
* :class:`MadryCNN` -- Madry et al.'s (2018) MNIST network: conv 5x5x32, 2x2 max-pool,
  conv 5x5x64, 2x2 max-pool, fully connected 1024, 10 logits.
* :class:`PreActResNet18` -- a pre-activation ResNet-18 (He et al. 2016) for CIFAR-10,
  with CIFAR-10 normalization inside so it also takes [0, 1] images.
* :class:`Normalize` -- wraps any model so it takes [0, 1] images and normalizes inside.

Example::

    from advcore.models import MadryCNN
    model = MadryCNN()
    logits = model(torch.rand(8, 1, 28, 28))   # (8, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MNIST_SHAPE = (1, 28, 28)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "HiddenPerturbMLP",
    "MadryCNN",
    "Maxout",
    "MaxoutMLP",
    "Normalize",
    "PreActResNet18",
    "SoftmaxRegression",
    "apply_constraints",
    "clip_row_norms_",
]


def clip_row_norms_(weight: torch.Tensor, max_norm: float) -> None:
    """Scale, in place, every row of ``weight`` (out, in) whose L2 norm exceeds ``max_norm`` down to it.

    The max-norm constraint of Goodfellow et al. (2013)'s maxout networks (pylearn2's
    ``max_col_norm``: pylearn2 stores weights as (in, out), so its columns are our rows, one
    per output unit or linear piece): after every update each unit's incoming weight vector
    is projected back into the ball of radius ``max_norm``.
    """
    with torch.no_grad():
        norms = weight.norm(dim=1, keepdim=True)
        weight.mul_(torch.clamp(max_norm / norms.clamp_min(1e-12), max=1.0))


def apply_constraints(model: nn.Module) -> None:
    """Apply the weight constraint of every submodule that has one (a ``constrain_()`` method).

    :func:`advcore.train.train` calls it after every optimizer step. Constraints are
    projections, so applying one twice changes nothing.
    """
    for module in model.modules():
        constrain = getattr(module, "constrain_", None)
        if callable(constrain):
            constrain()


class Normalize(nn.Module):
    """``model((x - mean) / std)``: a model with input normalization that takes [0, 1] images.

    Attacks see (and clip to) the [0, 1] image space; the normalization is part of the
    model, so its gradient flows through it.

    Args:
        model: the network that expects normalized inputs.
        mean, std: per-channel statistics (one value per input channel).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel; got {len(mean)} and {len(std)}.")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}.")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression on the flattened image: ``logits = W x + b``.

    Goodfellow et al. (2015), Sec. 4: the "shallow softmax" that misclassifies 99.9% of
    MNIST test images under FGSM with eps = 0.25 -- a linear model is enough.
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): the max over ``pieces`` linear functions."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        if pieces < 1:
            raise ValueError(f"pieces must be >= 1, got {pieces}.")
        self.out_features = out_features
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)  # (..., pieces * out_features), piece-major: a contiguous max is faster
        return z.view(*z.shape[:-1], self.pieces, self.out_features).amax(dim=-2)


class MaxoutMLP(nn.Module):
    """Goodfellow et al.'s permutation-invariant MNIST maxout network.

    ``dropout(input) -> maxout -> dropout -> maxout -> dropout -> linear -> logits``.
    The pylearn2 model of the paper has two maxout layers of 240 units with 5 pieces,
    input dropout 0.2 and hidden dropout 0.5; the adversarially trained larger model
    has 1600 units per layer.

    Args:
        hidden: units per maxout layer (240; 1600 for the larger model).
        pieces: linear pieces per unit.
        layers: number of maxout layers.
        input_dropout, dropout: drop probabilities of the input and of hidden units.
        max_norm: if set, the max-norm constraint of the maxout paper (pylearn2's
            ``max_col_norm``, 1.9365 in its MNIST model): after every training step each
            linear piece's and each output unit's incoming weights are scaled back to at most
            this L2 norm (:meth:`constrain_`, called by :func:`apply_constraints`).
    """

    def __init__(
        self,
        hidden: int = 240,
        *,
        pieces: int = 5,
        layers: int = 2,
        input_dropout: float = 0.2,
        dropout: float = 0.5,
        max_norm: float | None = None,
        in_features: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be a positive number or None, got {max_norm!r}.")
        self.max_norm = max_norm
        blocks: list[nn.Module] = [nn.Flatten(), nn.Dropout(input_dropout)]
        width = in_features
        for _ in range(layers):
            blocks += [Maxout(width, hidden, pieces), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def constrain_(self) -> None:
        """Project every linear map's rows back into the max-norm ball (no-op without ``max_norm``)."""
        if self.max_norm is None:
            return
        for module in self.net.modules():
            if isinstance(module, nn.Linear):
                clip_row_norms_(module.weight, self.max_norm)


class HiddenPerturbMLP(nn.Module):
    """An MLP with sigmoid or ReLU hidden layers whose activations can be perturbed.

    ``model(x)`` is the ordinary forward pass. ``model.forward_hidden(x, perturbations)``
    adds ``perturbations[i]`` to the i-th hidden layer's activations (after the
    nonlinearity, before the next layer) and returns ``(logits, hidden_activations)``;
    the output layer (the logits) is never perturbed -- perturbing it would only teach
    the network to make its logits huge (the lecture's exercise).

    Args:
        hidden: the widths of the hidden layers.
        activation: ``"sigmoid"`` or ``"relu"``.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (256, 256),
        *,
        activation: Literal["sigmoid", "relu"] = "relu",
        in_features: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation must be 'sigmoid' or 'relu', not {activation!r}.")
        if not hidden:
            raise ValueError("HiddenPerturbMLP needs at least one hidden layer.")
        self.activation = activation
        widths = [in_features, *hidden]
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(widths[-1], num_classes)

    def _act(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) if self.activation == "sigmoid" else F.relu(z)

    def forward_hidden(
        self, x: torch.Tensor, perturbations: Sequence[torch.Tensor | None] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the (possibly perturbed) hidden activations, one per hidden layer.

        Args:
            perturbations: ``None`` or one tensor (or ``None``) per hidden layer, added to
                that layer's activations.
        """
        if perturbations is not None and len(perturbations) != len(self.hidden_layers):
            raise ValueError(
                f"Expected {len(self.hidden_layers)} hidden perturbations, got {len(perturbations)}."
            )
        h = x.flatten(1)
        activations = []
        for i, layer in enumerate(self.hidden_layers):
            h = self._act(layer(h))
            if perturbations is not None and perturbations[i] is not None:
                h = h + perturbations[i]
            activations.append(h)
        return self.output(h), activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_hidden(x)[0]


class MadryCNN(nn.Module):
    """Madry et al.'s (2018) MNIST network (their released ``mnist_challenge`` model).

    conv 5x5, 32 filters, ReLU, 2x2 max-pool -> conv 5x5, 64 filters, ReLU, 2x2 max-pool
    -> fully connected 1024, ReLU -> 10 logits. Convolutions use "same" padding as in the
    released TensorFlow code, so the feature map entering the dense layer is 7x7x64.

    Each max-pool runs before its ReLU: the same function and the same gradients, bit for bit
    (ReLU is non-decreasing, so ``max(relu(a), relu(b)) = relu(max(a, b))``, and both orders
    route the gradient to the same pixel, or to none), on a quarter of the elements: measured
    1.2x faster for PGD on a CPU (``benchmarks/README.md``). ``relu_before_pool=True`` builds
    the released code's order (conv, ReLU, pool), e.g. as a reference; the parameters' names
    are the same in both, so either loads the other's weights.
    """

    def __init__(self, num_classes: int = 10, *, relu_before_pool: bool = False) -> None:
        super().__init__()

        def block(in_channels: int, out_channels: int) -> list[nn.Module]:
            conv, pool = nn.Conv2d(in_channels, out_channels, 5, padding=2), nn.MaxPool2d(2)
            return [conv, nn.ReLU(), pool] if relu_before_pool else [conv, pool, nn.ReLU()]

        self.features = nn.Sequential(*block(1, 32), *block(32, 64))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 1024),
            nn.ReLU(),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv with an identity (or 1x1 conv) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 for 32x32 images (He et al. 2016), normalizing inside.

    Takes [0, 1] images; subtracts ``mean`` and divides by ``std`` (CIFAR-10's by
    default) before the first convolution. ``width`` is the channel count of the first
    stage (64 in the standard network; smaller values give a cheaper network of the same
    shape for CPU runs).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        width: int = 64,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.conv1 = nn.Conv2d(len(mean), width, 3, padding=1, bias=False)
        stages = []
        in_planes = width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            stages.append(nn.Sequential(_PreActBlock(in_planes, planes, stride), _PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1((x - self.mean) / self.std)
        out = F.relu(self.bn(self.stages(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
