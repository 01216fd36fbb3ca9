"""Synthetic CMR frame generation: latent-diffusion backbone + ControlNet, sampling, QC.

Plain Python (no Dagster); `cardio_assets` assets wrap these functions. Heavy libraries
(diffusers, transformers) are imported inside functions where practical, and nothing touches
CUDA at import time.
"""

from cardio_assets.compute import configure_backend, resolve_device, resolve_dtype, seed_everything
from cardio_assets.generation.backbone import Backbone, load_backbone
from cardio_assets.generation.backbone_training import train_small_backbone
from cardio_assets.generation.config import DiffusionConfig
from cardio_assets.generation.control import control_image
from cardio_assets.generation.controlnet import CheckpointMismatch, train_controlnet
from cardio_assets.generation.data_parallel import train_controlnet_data_parallel
from cardio_assets.generation.grid import sample_grid
from cardio_assets.generation.qc import (
    QCItem,
    QCThresholds,
    attribute_agreement,
    calibrate_thresholds,
    calibration_rows,
    generate_with_qc,
    make_check,
    mask_adherence,
)
from cardio_assets.generation.sampling import Sampler, generate, sample_seed

__all__ = [
    "Backbone",
    "CheckpointMismatch",
    "DiffusionConfig",
    "QCItem",
    "QCThresholds",
    "Sampler",
    "attribute_agreement",
    "calibrate_thresholds",
    "calibration_rows",
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
    "train_controlnet_data_parallel",
    "train_small_backbone",
]
