"""Memorization: how close each synthetic image comes to a real training image.

A kept image that is nearly a copy of one training frame would leak that patient into
the synthetic set; the synthetic step measures every kept image and the `memorization`
asset check reads the distances.
"""

from __future__ import annotations

import numpy as np

# Memorization: a synthetic image whose nearest real training image is closer than this
# (root-mean-square pixel difference, images in [0, 1]) is flagged as a near-copy. Two
# different real patients' frames sit at about 0.1-0.2 on the phantom; the acquisition
# noise alone puts two scans of one patient at ~0.02. See the check's metadata for the
# real-to-real baseline measured on the same run.
MEMORIZATION_RMS = 0.03


def nearest_real_rms(synthetic: np.ndarray, real, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each synthetic image: RMS distance to its nearest real image, and that image's row.

    real: an array, or lazy frames with `take(rows)` (`classify.train.Frames`), read `batch`
    rows at a time: memory stays at one batch whatever the size of the training set.
    """
    s = np.asarray(synthetic, dtype=np.float32).reshape(len(synthetic), -1)
    best = np.full(len(s), np.inf, dtype=np.float64)
    arg = np.zeros(len(s), dtype=np.int64)
    s_sq = (s**2).sum(1)
    for start in range(0, len(real), batch):
        rows = np.arange(start, min(start + batch, len(real)))
        r = np.asarray(real[start : start + batch] if isinstance(real, np.ndarray) else real.take(rows), dtype=np.float32)
        r = r.reshape(-1, s.shape[1])
        d = s_sq[:, None] + (r**2).sum(1)[None, :] - 2 * s @ r.T
        i = d.argmin(1)
        m = d[np.arange(len(s)), i]
        better = m < best
        best[better], arg[better] = m[better], start + i[better]
    return np.sqrt(np.maximum(best, 0) / s.shape[1]), arg
