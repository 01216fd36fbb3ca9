"""Synthetic CMR frame generation: latent-diffusion backbone + ControlNet, sampling, QC.

Plain Python (no Dagster); `cardio_assets` assets wrap these functions. Heavy libraries
(diffusers, transformers) are imported inside functions where practical, and nothing touches
CUDA at import time.
"""

from .config import DiffusionConfig
from .control import control_image
from .device import configure_backend, resolve_device, resolve_dtype, seed_everything
from .grid import sample_grid
from .qc import (
    QCItem,
    QCThresholds,
    attribute_agreement,
    calibrate_thresholds,
    generate_with_qc,
    make_check,
    mask_adherence,
)
from .sampling import Sampler, generate, sample_seed
from .backbone import Backbone, load_backbone, train_small_backbone
from .controlnet import CheckpointMismatch, train_controlnet

__all__ = [
    "Backbone",
    "CheckpointMismatch",
    "DiffusionConfig",
    "QCItem",
    "QCThresholds",
    "Sampler",
    "attribute_agreement",
    "calibrate_thresholds",
    "configure_backend",
    "control_image",
    "generate",
    "generate_with_qc",
    "load_backbone",
    "make_check",
    "mask_adherence",
    "resolve_device",
    "resolve_dtype",
    "sample_grid",
    "sample_seed",
    "seed_everything",
    "train_controlnet",
    "train_small_backbone",
]
