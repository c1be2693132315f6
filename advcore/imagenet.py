"""A pretrained ImageNet classifier, the panda photo and the class names (chapter 1).

Goodfellow et al. (2015) attack GoogLeNet (Szegedy et al. 2015). Online, this module loads
torchvision's pretrained GoogLeNet; offline, it builds the ResNet-50 of the data mirror
(``$ADVCORE_DATA/imagenet/resnet50-v1-caffe.pth``) exactly as its JSON describes. Either
way the returned model takes RGB images in [0, 1] of shape ``(N, 3, 224, 224)`` and returns
ImageNet-1k logits ``(N, 1000)``: the normalization lives inside the model, so attacks can
clip to [0, 1] as they would for MNIST.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as transforms

from advcore.data import DataUnavailableError, fetch_verified, is_online, mirror_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GIANT_PANDA = 388
GIBBON = 368
NEMATODE = 111

Source = Literal["auto", "googlenet", "mirror"]


@dataclass(frozen=True)
class PretrainedClassifier:
    """A pretrained ImageNet model on [0, 1] input, and where it came from."""

    model: nn.Module  # (N, 3, 224, 224) in [0, 1] -> logits (N, 1000); in eval mode
    name: str  # what produced the figures, e.g. "GoogLeNet (torchvision IMAGENET1K_V1)"
    source: Literal["googlenet", "mirror"]


def _normalized(model: nn.Module) -> nn.Module:
    """``model`` preceded by ImageNet normalization, so it takes [0, 1] images."""
    from advcore.models import Normalize  # lazy: models imports nothing from here

    return Normalize(model, IMAGENET_MEAN, IMAGENET_STD).eval()


def _mirror_resnet50() -> PretrainedClassifier:
    """The mirror's ResNet-50 with v1 strides, built and fed as its JSON says."""
    mirror = mirror_dir()
    spec_path = mirror / "imagenet" / "resnet50-v1-caffe.json" if mirror else None
    if spec_path is None or not spec_path.is_file():
        raise DataUnavailableError(
            "No pretrained ImageNet classifier is available: torchvision's GoogLeNet weights "
            "cannot be downloaded (offline) and no data mirror with "
            "imagenet/resnet50-v1-caffe.{json,pth} is set. Set ADVCORE_DATA to such a mirror "
            "(e.g. `export ADVCORE_DATA=../shared/data`) or run with internet access."
        )
    spec = json.loads(spec_path.read_text())
    weights = fetch_verified(
        spec["weights"],
        expected=spec["sha256"],
        algorithm="sha256",
        cache_subdir="imagenet",
        mirror_paths=[f"imagenet/{spec['weights']}"],
        what="The ResNet-50 weights",
        how_to_get="Restore them in the mirror's imagenet/ folder.",
    )
    resnet = torchvision.models.resnet50(weights=None)
    # ResNet v1 (He et al. 2016) downsamples in the 1x1 conv; torchvision's v1.5 in the 3x3.
    for stage in (resnet.layer2, resnet.layer3, resnet.layer4):
        stage[0].conv1.stride = (2, 2)
        stage[0].conv2.stride = (1, 1)
    resnet.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return PretrainedClassifier(_normalized(resnet), f"ResNet-50 v1 ({spec['name']}, offline mirror)", "mirror")


def _googlenet() -> PretrainedClassifier:
    """torchvision's GoogLeNet, the architecture attacked by Goodfellow et al. (2015)."""
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    model = torchvision.models.googlenet(weights=weights)
    return PretrainedClassifier(_normalized(model), "GoogLeNet (torchvision IMAGENET1K_V1)", "googlenet")


def pretrained_classifier(*, source: Source = "auto") -> PretrainedClassifier:
    """A pretrained ImageNet classifier taking [0, 1] images ``(N, 3, 224, 224)``.

    Args:
        source: ``"googlenet"`` (torchvision weights, needs internet the first time),
            ``"mirror"`` (the data mirror's ResNet-50), or ``"auto"``: GoogLeNet when its
            weights are cached or downloadable, else the mirror's ResNet-50.

    Raises:
        DataUnavailableError: neither source can be had; the message says how to fix it.
    """
    if source not in ("auto", "googlenet", "mirror"):
        raise ValueError(f"source must be 'auto', 'googlenet' or 'mirror', not {source!r}.")
    if source == "mirror":
        return _mirror_resnet50()
    weights_url = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_url)
    if source == "googlenet" or cached.is_file() or is_online(weights_url):
        try:
            return _googlenet()
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            if source == "googlenet":
                raise DataUnavailableError(f"GoogLeNet weights could not be loaded: {error}") from error
            warnings.warn(f"GoogLeNet weights could not be loaded ({error}); using the mirror.", stacklevel=2)
    return _mirror_resnet50()


# --------------------------------------------------------------------------- images


_PREPROCESS = transforms.Compose([
    transforms.Resize(256, antialias=True),
    transforms.CenterCrop(224),
    transforms.ToImage(),
    transforms.ToDtype(torch.float32, scale=True),
])


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """An RGB image resized to 256, center-cropped to 224: ``(1, 3, 224, 224)`` in [0, 1]."""
    with Image.open(path) as image:
        return _PREPROCESS(image.convert("RGB")).unsqueeze(0)


def _asset(name: str) -> Path:
    return Path(str(resources.files("advcore") / "assets" / name))


def load_panda() -> torch.Tensor:
    """The giant-panda photo of the FGSM demo as ``(1, 3, 224, 224)`` in [0, 1].

    Read from the mirror when ``$ADVCORE_DATA`` is set, else from the copy shipped with
    the package (so Colab needs no download).
    """
    mirror = mirror_dir()
    mirrored = mirror / "imagenet" / "panda.jpg" if mirror else None
    return load_image(mirrored if mirrored and mirrored.is_file() else _asset("panda.jpg"))


def class_names() -> list[str]:
    """The 1000 ImageNet class names in index order (388: ``giant_panda``, 368: ``gibbon``)."""
    index = json.loads(_asset("imagenet_class_index.json").read_text())
    return [index[str(i)][1] for i in range(len(index))]


@torch.no_grad()
def top_predictions(model: nn.Module, images: torch.Tensor, *, k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable ``(class name, probability)`` pairs for each image in a batch."""
    probabilities = model(images).softmax(dim=1)
    values, indices = probabilities.topk(k, dim=1)
    names = class_names()
    return [[(names[i], float(p)) for p, i in zip(row_p, row_i)] for row_p, row_i in zip(values, indices)]
