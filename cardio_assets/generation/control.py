"""Array conventions shared by training and sampling.

- images: float32 (N, 3, H, W) in [0, 1], channels [ED, ES, ED]; models see them in [-1, 1].
- controls: uint8 (N, 3, H, W) canonical label maps [ED, ES, ED] (0 bg, 1 LV, 2 MYO, 3 RV).
- the ControlNet conditioning image, by `DiffusionConfig.control_encoding`:
  "grey": labels / 4.0, 3 channels (the public code's convention, an RGB-like image);
  "onehot": one channel per structure and phase (ED LV, MYO, RV, ES LV, MYO, RV), 6 channels.
  One-hot spares a small ControlNet from decoding structures out of grey levels (LV 0.25 and RV
  0.75 differ only in brightness) and gives ED and ES their own channels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

LABEL_SCALE = 4.0
CONTROL_ENCODINGS = ("grey", "onehot")
ONEHOT_LABELS = (1, 2, 3)  # LV, MYO, RV; background is the absence of all three


def control_channels(encoding: str) -> int:
    """Channels of the conditioning image (the ControlNet's `conditioning_channels`)."""
    if encoding not in CONTROL_ENCODINGS:
        raise ValueError(f"unknown control encoding {encoding!r}; expected one of {CONTROL_ENCODINGS}")
    return 3 if encoding == "grey" else 2 * len(ONEHOT_LABELS)


def control_image(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Label maps (N, 3, H, W) or (3, H, W), uint8 -> float32 tensor labels / 4.0 in [0, 0.75]."""
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.ndim not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"labels must be (N, 3, H, W) or (3, H, W), got {tuple(t.shape)}")
    return t.to(torch.float32) / LABEL_SCALE


def _probe(array: np.ndarray, limit: int = 256) -> np.ndarray:
    """At most `limit` evenly spaced items (cheap on large memory-mapped arrays)."""
    return array if len(array) <= limit else array[:: -(-len(array) // limit)]


def check_images(images: np.ndarray) -> None:
    """Shape check, and a range check on up to 256 evenly spaced images."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {images.shape}")
    probe = _probe(images)
    if probe.size and not (np.isfinite(probe).all() and probe.min() >= -1e-4 and probe.max() <= 1 + 1e-4):
        raise ValueError("images must be finite and in [0, 1]")


def check_controls(controls: np.ndarray, n: int | None = None) -> None:
    if controls.ndim != 4 or controls.shape[1] != 3:
        raise ValueError(f"controls must be (N, 3, H, W), got {controls.shape}")
    if n is not None and len(controls) != n:
        raise ValueError(f"{len(controls)} controls for {n} images/prompts")
    if controls.size and int(_probe(controls).max()) > 3:
        raise ValueError("controls hold labels outside {0, 1, 2, 3}")


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of float (N, C, H, W) to size x size; no-op when equal."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of label maps (keeps label values)."""
    if labels.shape[-2:] == (size, size):
        return labels
    return F.interpolate(labels.float(), size=(size, size), mode="nearest-exact").to(labels.dtype)


def to_model_space(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] numpy (N, 3, H, W) -> float32 tensor in [-1, 1] at size x size."""
    t = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32)
    return resize_images(t, size) * 2.0 - 1.0


def onehot_control(labels: torch.Tensor) -> torch.Tensor:
    """Label maps (N, 3, H, W) [ED, ES, ED] -> float (N, 6, H, W): ED LV/MYO/RV, ES LV/MYO/RV."""
    phases = labels[:, :2]  # the third channel repeats ED
    return torch.cat([(phases == k) for k in ONEHOT_LABELS], dim=1)[:, [0, 2, 4, 1, 3, 5]].to(torch.float32)


def control_tensor(controls: np.ndarray, size: int, encoding: str = "grey") -> torch.Tensor:
    """uint8 labels (N, 3, H, W) -> ControlNet conditioning float tensor at size x size."""
    control_channels(encoding)  # validates the name
    t = resize_labels(torch.as_tensor(np.ascontiguousarray(controls)), size)
    return control_image(t) if encoding == "grey" else onehot_control(t)
