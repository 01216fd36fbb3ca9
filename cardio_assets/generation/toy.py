"""Toy short-axis label maps and images for tests and benchmarks of the generator.

Not the phantom cohort (that lives in `cardio_assets.phantom`): just shapes of the right
kind, fast to make at any size. A mid-ventricular slice: circular LV cavity, myocardial ring,
RV crescent to the image's left; ES has a smaller LV cavity and thicker wall. Heart failure
dilates the LV and lowers its ejection; BMI thickens a bright subcutaneous fat ring; age
adds noise; sex scales the heart. Images are bSSFP-like: blood bright, muscle dark.
"""

from __future__ import annotations

import numpy as np

from cardio_assets.cohort.cells import ALL_CELLS, prompt
from cardio_assets.cohort.labels import LV, MYO, RV

_AGE = {"lt60": 50.0, "60to70": 65.0, "ge70": 75.0}
_BMI = {"normal": 22.0, "overweight": 27.5, "obese": 33.0}


def _disc(yy, xx, cy, cx, r):
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def toy_labels(size: int, rng: np.random.Generator, hf: bool = False, scale: float = 1.0) -> np.ndarray:
    """One (3, size, size) uint8 label map [ED, ES, ED]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cy = size * (0.5 + rng.uniform(-0.06, 0.06))
    cx = size * (0.55 + rng.uniform(-0.06, 0.06))
    r_ed = size * scale * rng.uniform(0.13, 0.16) * (1.2 if hf else 1.0)
    wall = size * scale * rng.uniform(0.045, 0.06) * (0.85 if hf else 1.0)
    ef = rng.uniform(0.25, 0.35) if hf else rng.uniform(0.55, 0.65)
    out = []
    for phase in ("ED", "ES"):
        r = r_ed if phase == "ED" else r_ed * np.sqrt(1.0 - ef)
        r_out = np.sqrt(r * r + (r_ed + wall) ** 2 - r_ed**2)  # myocardial area conserved
        lab = np.zeros((size, size), np.uint8)
        rv_r = (r_ed + wall) * (1.05 if phase == "ED" else 0.85)
        rv = _disc(yy, xx, cy - 0.1 * rv_r, cx - (r_ed + wall) * 1.05, rv_r)
        lab[rv] = RV
        lab[_disc(yy, xx, cy, cx, r_out)] = MYO
        lab[_disc(yy, xx, cy, cx, r)] = LV
        out.append(lab)
    return np.stack([out[0], out[1], out[0]])


def paint(labels: np.ndarray, rng: np.random.Generator | None = None, blood: float = 0.85, myo: float = 0.3,
          background: float = 0.35, fat: float = 0.0, noise: float = 0.03) -> np.ndarray:
    """A (3, H, W) float32 image in [0, 1] painted from a (3, H, W) label map."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0) if rng is None else rng
    size = labels.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c = size / 2
    rad = np.sqrt(((yy - c) / 0.46) ** 2 + ((xx - c) / 0.5) ** 2) / size
    body = rad < 1.0
    base = np.where(body, background, 0.02).astype(np.float32)
    lungs = body & (np.abs(xx - c) > size * 0.12) & (yy < size * 0.45)
    base[lungs] = 0.08
    if fat > 0:
        base[body & (rad > 1.0 - fat)] = 0.8
    texture = gaussian_filter(rng.normal(0, 1, (size, size)).astype(np.float32), sigma=max(size / 32, 0.7))
    out = []
    for ch in range(3):
        lab = labels[ch]
        img = base.copy()
        img[(lab == LV) | (lab == RV)] = blood
        img[lab == MYO] = myo
        img = gaussian_filter(img, sigma=max(size / 96, 0.4)) + 0.04 * texture
        out.append(img)
    out[2] = out[0]
    img = np.stack(out) + noise * rng.normal(0, 1, (3, size, size)).astype(np.float32)
    img[2] = img[0]
    lo, hi = img.min(), img.max()
    return ((img - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def toy_dataset(n: int, size: int, seed: int = 0, cells=None):
    """(images float32 (n,3,S,S) in [0,1], labels uint8 (n,3,S,S), prompts, cell keys)."""
    rng = np.random.default_rng(seed)
    cells = list(ALL_CELLS) if cells is None else list(cells)
    images = np.empty((n, 3, size, size), np.float32)
    labels = np.empty((n, 3, size, size), np.uint8)
    prompts, keys = [], []
    for i in range(n):
        cell = cells[int(rng.integers(len(cells)))]
        hf = cell.diagnosis == "hf"
        scale = 1.08 if cell.sex == "male" else 0.95
        lab = toy_labels(size, rng, hf=hf, scale=scale)
        fat = {"normal": 0.0, "overweight": 0.08, "obese": 0.16}[cell.bmi_band]
        noise = {"lt60": 0.02, "60to70": 0.035, "ge70": 0.05}[cell.age_band]
        labels[i] = lab
        images[i] = paint(lab, rng, fat=fat, noise=noise)
        prompts.append(prompt(cell.sex, _AGE[cell.age_band], _BMI[cell.bmi_band], cell.diagnosis))
        keys.append(cell.key)
    return images, labels, prompts, keys
