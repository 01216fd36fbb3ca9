"""ResNet-18 for HF classification, with its input pipeline (resize + normalisation).

No weights are ever downloaded: torchvision's `resnet18(weights=None)` is built and, when
the user configures one, a local state_dict file (e.g. torchvision's ImageNet
`resnet18-f37072fd.pth`) is loaded into it before the classification layer is replaced.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM_INIT = "random initialisation (no local weights configured)"


class PretrainedWeightsError(RuntimeError):
    """A configured local weights file is missing, unreadable or does not fit ResNet-18."""


def _load_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained ResNet-18 weights file not found: {path} "
            "(set pretrained_weights to a local torchvision resnet18 state_dict, or to None for random init)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise PretrainedWeightsError(f"cannot read pretrained weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path} does not hold a state_dict (got {type(state).__name__})")
    return state


def build_resnet18(num_classes: int = 2, pretrained_weights: str | Path | None = None) -> tuple[nn.Module, str]:
    """A torchvision ResNet-18 with a fresh `num_classes` head, and a description for reports.

    With `pretrained_weights`, the file's state_dict is loaded into the full 1000-class
    network first (strictly: a file that does not fit ResNet-18 is an error naming it),
    then `fc` is replaced.
    """
    model = torchvision.models.resnet18(weights=None)
    if pretrained_weights is None:
        description = RANDOM_INIT
    else:
        path = Path(pretrained_weights).expanduser()
        state = _load_state_dict(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise PretrainedWeightsError(
                f"weights in {path} do not match torchvision's resnet18: {str(exc)[:500]}"
            ) from exc
        description = f"ImageNet weights from {path}"
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, description


class InputPipeline(nn.Module):
    """Float images in [0, 1] (N, 3, H, W) -> resized to `image_size`, ImageNet-normalised."""

    def __init__(self, image_size: int):
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.image_size)
        # channels-last convolutions: ResNet-18 at 64 px trains 4-10% faster on 2 CPU cores
        # (benchmarks/classifier.py; inference within noise)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


class HFClassifier(nn.Module):
    """Input pipeline + ResNet-18; `forward` gives logits, `features` the penultimate layer.

    `compute_dtype` bf16: weights stay fp32, convolutions run under bf16 autocast (outputs are
    fp32). ResNet-18 at 64 px trains 1.8x faster this way on a CPU with AMX (2 cores: 172 -> 316 images/s).
    """

    def __init__(self, backbone: nn.Module, image_size: int, description: str = "",
                 compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.preprocess = InputPipeline(image_size)
        self.backbone = backbone
        self.description = description
        self.compute_dtype = compute_dtype

    def _autocast(self, x: torch.Tensor):
        return torch.autocast(x.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        with self._autocast(x):
            return self.backbone(x).float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d average-pooled features before `fc` (for FID with a CMR-trained network)."""
        b = self.backbone
        x = self.preprocess(x)
        with self._autocast(x):
            x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
            x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
            return torch.flatten(b.avgpool(x), 1).float()


class PenultimateFeatures(nn.Module):
    """Wraps an HFClassifier so that calling it returns its penultimate features."""

    def __init__(self, classifier: HFClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def build_classifier(image_size: int, pretrained_weights: str | Path | None = None,
                     num_classes: int = 2, compute_dtype: torch.dtype = torch.float32) -> HFClassifier:
    backbone, description = build_resnet18(num_classes, pretrained_weights)
    return HFClassifier(backbone.to(memory_format=torch.channels_last), image_size, description, compute_dtype)
