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

from cardio_assets.metrics.attribute_fidelity import matched_means

SHARPNESS_COLUMNS = ("frame", "cells", "n_real", "real_energy", "n_synthetic", "synthetic_energy", "synthetic_over_real")
FRAME_CHANNELS = {"ED": 0, "ES": 1}  # frames are stacked (ED, ES, ED)


def high_frequency_energy(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """(n, channels): standard deviation of each channel minus its Gaussian blur of `sigma` pixels."""
    images = np.asarray(images, dtype=np.float32)
    detail = images - gaussian_filter(images, (0, 0, sigma, sigma))
    return detail.reshape(*images.shape[:2], -1).std(axis=-1)


def sharpness_table(real_energy, real_index: pd.DataFrame, synthetic_energy, synthetic_index: pd.DataFrame) -> pd.DataFrame:
    """One row per frame (ED, ES): mean high-frequency energy (`high_frequency_energy` of each side's
    images, in index order) of real and synthetic images over the cells both hold (synthetic weighted
    to the real cell mix), and synthetic over real."""
    rows = []
    for frame, channel in FRAME_CHANNELS.items():
        m = matched_means(_side(real_index, real_energy, channel), _side(synthetic_index, synthetic_energy, channel))
        rows.append({"frame": frame, "cells": m["cells"], "n_real": m["n_real"], "real_energy": m["real_mean"],
                     "n_synthetic": m["n_synthetic"], "synthetic_energy": m["synthetic_mean"],
                     "synthetic_over_real": m["synthetic_mean"] / m["real_mean"] if m["cells"] else np.nan})
    return pd.DataFrame(rows, columns=list(SHARPNESS_COLUMNS))


def _side(index: pd.DataFrame, energy, channel: int) -> pd.DataFrame:
    energy = np.asarray(energy, dtype=float).reshape(len(index), -1)
    return pd.DataFrame({"cell": index["cell"].to_numpy(), "value": energy[:, channel] if len(index) else np.zeros(0)})
