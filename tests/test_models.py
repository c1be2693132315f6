"""advcore.models: shapes, the papers' architectures, hidden perturbations, normalization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advcore import attacks
from advcore.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    HiddenPerturbMLP,
    MadryCNN,
    Maxout,
    MaxoutMLP,
    Normalize,
    PreActResNet18,
    SoftmaxRegression,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MNIST_MODELS = [
    pytest.param(lambda: SoftmaxRegression(), id="softmax"),
    pytest.param(lambda: MaxoutMLP(), id="maxout"),
    pytest.param(lambda: MaxoutMLP(1600), id="maxout1600"),
    pytest.param(lambda: HiddenPerturbMLP(activation="sigmoid"), id="sigmoid_mlp"),
    pytest.param(lambda: HiddenPerturbMLP(activation="relu"), id="relu_mlp"),
    pytest.param(lambda: MadryCNN(), id="cnn"),
]


@pytest.mark.parametrize("make", MNIST_MODELS)
def test_mnist_models_map_unit_images_to_logits(make) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(5, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # An attack runs on every model unchanged (inputs in [0, 1], gradients flow to the input).
    x_adv = attacks.fgsm(model, x, torch.arange(5), eps=0.1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_adv, x)


def test_madry_cnn_is_the_papers_network() -> None:
    model = MadryCNN()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (5, 5)), (32, 64, (5, 5))]
    assert sum(isinstance(m, nn.MaxPool2d) and m.kernel_size == 2 for m in model.modules()) == 2
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(7 * 7 * 64, 1024), (1024, 10)]
    assert n_params(model) == 3_274_634  # the parameter count of mnist_challenge's model


def test_madry_cnn_pooling_before_relu_is_the_papers_order_bit_for_bit() -> None:
    """The paper's network is conv -> ReLU -> pool; ours pools first (faster): same logits and
    the same input gradient, exactly, and the same parameter names (committed weights load)."""
    torch.manual_seed(0)
    model = MadryCNN().eval()
    papers_order = MadryCNN(relu_before_pool=True).eval()
    papers_order.load_state_dict(model.state_dict())
    assert [type(m) for m in papers_order.features] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2
    assert [type(m) for m in model.features] == [nn.Conv2d, nn.MaxPool2d, nn.ReLU] * 2
    x = torch.rand(64, 1, 28, 28, requires_grad=True)
    x.data[:8] = torch.round(x.data[:8])  # binary images: many tied maxima in the pooling windows
    y = torch.randint(0, 10, (64,))
    ours, theirs = model(x), papers_order(x)
    assert torch.equal(ours, theirs)
    (g_ours,) = torch.autograd.grad(F.cross_entropy(ours, y, reduction="sum"), x)
    (g_theirs,) = torch.autograd.grad(F.cross_entropy(theirs, y, reduction="sum"), x)
    assert torch.equal(g_ours, g_theirs)


def test_maxout_takes_the_max_over_pieces() -> None:
    torch.manual_seed(0)
    layer = Maxout(6, 4, pieces=3)
    x = torch.randn(2, 6)
    z = layer.linear(x)  # piece-major: piece k of unit j is output k * 4 + j
    expected = torch.stack([z[:, [k * 4 + j for k in range(3)]].amax(1) for j in range(4)], 1)
    torch.testing.assert_close(layer(x), expected)


def test_maxout_mlp_has_goodfellows_shape_and_dropout() -> None:
    model = MaxoutMLP()
    maxouts = [m for m in model.modules() if isinstance(m, Maxout)]
    assert [(m.out_features, m.pieces) for m in maxouts] == [(240, 5), (240, 5)]
    assert [m.out_features for m in MaxoutMLP(1600).modules() if isinstance(m, Maxout)] == [1600, 1600]
    x = torch.rand(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is active in training
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # and off in evaluation


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_hidden_perturbations_reach_hidden_layers_only(activation: str) -> None:
    torch.manual_seed(0)
    model = HiddenPerturbMLP((32, 16), activation=activation)
    x = torch.rand(3, 1, 28, 28)
    logits, hidden = model.forward_hidden(x)
    assert [h.shape for h in hidden] == [(3, 32), (3, 16)]
    torch.testing.assert_close(logits, model(x))
    if activation == "sigmoid":
        assert all(((h > 0) & (h < 1)).all() for h in hidden)
    zeros = [torch.zeros_like(h) for h in hidden]
    torch.testing.assert_close(model.forward_hidden(x, zeros)[0], logits)
    # Perturbing the last hidden layer moves the logits linearly through the output layer.
    delta = torch.randn(3, 16)
    moved, _ = model.forward_hidden(x, [None, delta])
    torch.testing.assert_close(moved - logits, delta @ model.output.weight.T)
    with pytest.raises(ValueError, match="2 hidden perturbations"):
        model.forward_hidden(x, [delta])


def test_hidden_perturb_mlp_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        HiddenPerturbMLP(activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden layer"):
        HiddenPerturbMLP(())


def test_normalize_wraps_a_model() -> None:
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    model = Normalize(inner, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), inner((x - mean) / std))
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert set(dict(model.named_buffers())) == {"mean", "std"}  # saved with the model, moved with .to()
    with pytest.raises(ValueError, match="positive"):
        Normalize(inner, mean=(0.5,), std=(0.0,))
    with pytest.raises(ValueError, match="one value per channel"):
        Normalize(inner, mean=(0.5, 0.5), std=(0.2,))


def test_preact_resnet18_for_cifar() -> None:
    # The pre-activation ResNet-18 with a final BN-ReLU (He et al. 2016; Wong et al. 2020's code)
    assert n_params(PreActResNet18()) == 11_172_170
    torch.manual_seed(0)
    model = PreActResNet18(width=8).eval()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    # Normalization is inside: the model equals the same network fed normalized inputs.
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    plain = PreActResNet18(width=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    plain.load_state_dict(model.state_dict() | {"mean": torch.zeros(1, 3, 1, 1), "std": torch.ones(1, 3, 1, 1)})
    torch.testing.assert_close(model(x), plain((x - mean) / std))
