"""How sharp the synthetic frames are against real ones: the high-frequency energy of each frame
(the standard deviation of the frame minus its Gaussian blur), per ED and ES channel.

The attribute predictors, which give the FID features when no InceptionV3 weights are configured,
train with texture augmentation so that they read anatomy, not sharpness (`classify.train.texture_jitter`):
their FID then weighs a slightly smooth synthetic frame little. This table keeps the smoothness in
sight. Compared within cells as the attributes are (`attribute_fidelity.matched_means`); a ratio
under 1 is a smoother synthetic frame (the VAE does not reproduce the acquisition's noise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from cardio_assets.metrics.attribute_fidelity import chunks, matched_means

SHARPNESS_COLUMNS = ("frame", "cells", "n_real", "real_energy", "n_synthetic", "synthetic_energy", "synthetic_over_real")
FRAME_CHANNELS = {"ED": 0, "ES": 1}  # frames are stacked (ED, ES, ED)


def high_frequency_energy(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """(n, channels): standard deviation of each channel minus its Gaussian blur of `sigma` pixels."""
    images = np.asarray(images, dtype=np.float32)
    detail = images - gaussian_filter(images, (0, 0, sigma, sigma))
    return detail.reshape(*images.shape[:2], -1).std(axis=-1)


def sharpness_table(real_images, real_index: pd.DataFrame, synthetic_images, synthetic_index: pd.DataFrame) -> pd.DataFrame:
    """One row per frame (ED, ES): mean high-frequency energy of real and synthetic images over the
    cells both hold (synthetic weighted to the real cell mix), and synthetic over real."""
    real = _energy(real_images, len(real_index))
    synthetic = _energy(synthetic_images, len(synthetic_index))
    rows = []
    for frame, channel in FRAME_CHANNELS.items():
        m = matched_means(pd.DataFrame({"cell": real_index["cell"].to_numpy(), "p": real[:, channel]}),
                          pd.DataFrame({"cell": synthetic_index["cell"].to_numpy(), "p": synthetic[:, channel]}))
        rows.append({"frame": frame, "cells": m["cells"], "n_real": m["n_real"], "real_energy": m["real_mean_p"],
                     "n_synthetic": m["n_synthetic"], "synthetic_energy": m["synthetic_mean_p"],
                     "synthetic_over_real": m["synthetic_mean_p"] / m["real_mean_p"] if m["cells"] else np.nan})
    return pd.DataFrame(rows, columns=list(SHARPNESS_COLUMNS))


def _energy(images, n: int) -> np.ndarray:
    parts = [high_frequency_energy(chunk) for chunk in chunks(images, n)]
    return np.concatenate(parts) if parts else np.zeros((0, len(FRAME_CHANNELS) + 1))
