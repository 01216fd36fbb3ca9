"""Debiased sampling of training images: rare cells are drawn more often (the paper's step 6).

Each training image is drawn with probability proportional to 1 / (images in its cell), so every
cell is seen about equally often, but no image more than `cap` times as often as an image of the
largest cell: a cell with two training patients must not be replayed until it is memorized.
`cap = 1` is uniform sampling.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def cell_balanced_weights(cells: Sequence[str], cap: float) -> np.ndarray:
    """Per-image sampling probabilities (sum 1) for images labelled with their cell."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1 (1 = uniform), got {cap}")
    keys, inverse, counts = np.unique(np.asarray(cells, dtype=object).astype(str), return_inverse=True, return_counts=True)
    per_image = np.minimum(1.0 / counts, cap / counts.max())[inverse]
    return per_image / per_image.sum()


def draw_rows(n: int, batch_size: int, generator: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """A batch of row indices: uniform, or by `weights` (with replacement, like the uniform draw)."""
    if weights is None:
        return torch.randint(0, n, (batch_size,), generator=generator)
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator)
