"""Memorization: how close each synthetic image comes to a real training image.

A kept image that is nearly a copy of one training frame would leak that patient into
the synthetic set; the synthetic step measures every kept image and the `memorization`
asset check reads the distances.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cardio_assets.generation.rows import row_shape, take_rows
from cardio_assets.lake.atomic import atomic_dir

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


# ---------------------------------------------------------------------------- one index for all cells
def block_size(height: int, cells: int = 16) -> int:
    """Side of the square blocks that average an image to at most `cells` x `cells` (divides it exactly)."""
    for n in range(min(cells, height), 0, -1):
        if height % n == 0:
            return height // n
    return height


def block_means(images: np.ndarray, block: int) -> np.ndarray:
    """(N, 3, H, W) -> (N, 3 * H/block * W/block) float32: each block's mean.

    Over equal blocks the mean square of a difference is at least the mean square of its
    block means (Jensen, block by block), so the RMS between two images' block means is a
    lower bound of their RMS: a candidate whose bound exceeds the best distance found so far
    cannot be nearer.
    """
    x = np.asarray(images, dtype=np.float32)
    n, c, h, w = x.shape
    return x.reshape(n, c, h // block, block, w // block, block).mean(axis=(3, 5)).reshape(n, -1)


class NearestRealIndex:
    """Nearest real training image of each synthetic image, exact, from one index built once.

    The index holds every real training image's block means (`block_means`, 16 x 16 per
    channel: 1/16 of a 64-px frame's floats, 1/1024 of a 512-px one), in memory or as a file
    the 36 synthetic partitions share. A query ranks the real images by that lower bound and
    reads full images, `probe` at a time in that order, until the next bound exceeds the best
    RMS found: the answer is the exact nearest image (what `nearest_real_rms` finds by reading
    every real image), having read only the few candidates the bound cannot rule out.
    """

    def __init__(self, means: np.ndarray, real, block: int):
        self.means, self.real, self.block = means, real, block
        self.images_read = 0  # full real images read by queries (the cost the bound saves)

    @classmethod
    def build(cls, real, batch: int = 256) -> "NearestRealIndex":
        n = len(real)
        height = row_shape(real)[-1]
        block = block_size(height)
        parts = [block_means(take_rows(real, np.arange(s, min(s + batch, n))), block) for s in range(0, n, batch)]
        means = np.concatenate(parts) if parts else np.zeros((0, 3 * (height // block) ** 2), np.float32)
        return cls(means, real, block)

    @classmethod
    def open_or_build(cls, folder, real, fingerprint: str) -> "NearestRealIndex":
        """The index stored in `folder` for these rows (same fingerprint), else built and stored."""
        folder = Path(folder)
        meta_file = folder / "meta.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            if meta.get("fingerprint") == fingerprint and meta.get("n") == len(real):
                return cls(np.load(folder / "block_means.npy", mmap_mode="r"), real, int(meta["block"]))
        index = cls.build(real)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(folder) as tmp:  # partitions running at once may both build; either copy is right
            np.save(tmp / "block_means.npy", index.means)
            (tmp / "meta.json").write_text(json.dumps({"fingerprint": fingerprint, "n": len(real), "block": index.block}))
        return index

    def nearest(self, synthetic: np.ndarray, probe: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """For each synthetic image: exact RMS to its nearest real image, and that image's row."""
        s = np.asarray(synthetic, dtype=np.float32)
        rms = np.full(len(s), np.inf)
        rows = np.zeros(len(s), dtype=np.int64)
        if len(s) == 0 or len(self.means) == 0:
            return rms, rows
        queries = block_means(s, self.block)
        means = np.asarray(self.means, dtype=np.float32)
        d = (queries**2).sum(1)[:, None] + (means**2).sum(1)[None, :] - 2 * queries @ means.T
        bounds = np.sqrt(np.maximum(d, 0) / means.shape[1])
        flat = s.reshape(len(s), -1)
        for i in range(len(s)):
            order = np.argsort(bounds[i], kind="stable")
            for start in range(0, len(order), probe):
                candidates = order[start : start + probe]
                if bounds[i, candidates[0]] >= rms[i] + 1e-6:  # float slack: never prune the nearest
                    break
                candidates = np.sort(candidates)
                r = take_rows(self.real, candidates).reshape(len(candidates), -1)
                self.images_read += len(candidates)
                exact = np.sqrt(((r - flat[i]) ** 2).mean(1))
                j = int(exact.argmin())
                if exact[j] < rms[i]:
                    rms[i], rows[i] = exact[j], candidates[j]
        return rms, rows

