"""Training images and label maps as rows, read a batch at a time.

A source is an in-memory array, a memory-mapped one, or a lazy view of the data lake (anything
with `__len__` and `take(positions)`, such as `cardio_assets.classify.train.Frames`). Training
reads only the rows a step needs, so a step's memory does not grow with the cohort: the
generator's peak RAM is its models, a batch, and the latent cache up to
`DiffusionConfig.cache_in_memory_max_bytes` (memory-mapped beyond).
"""

from __future__ import annotations

import numpy as np

PROBE_ROWS = 256


def take_rows(source, positions, dtype=np.float32) -> np.ndarray:
    """The rows at `positions` (in that order), as a `dtype` array in memory."""
    positions = np.asarray(positions, dtype=np.int64)
    if isinstance(source, np.ndarray):
        return np.asarray(source[positions], dtype=dtype)
    return np.asarray(source.take(positions), dtype=dtype)


def probe_positions(n: int, limit: int = PROBE_ROWS) -> np.ndarray:
    """At most `limit` evenly spaced positions: what a cheap check or fingerprint reads."""
    return np.arange(0, n, max(1, -(-n // limit)))


def row_shape(source) -> tuple[int, ...]:
    """The shape of one row, (3, H, W)."""
    if isinstance(source, np.ndarray):
        return tuple(source.shape[1:])
    return tuple(source.image_shape)
