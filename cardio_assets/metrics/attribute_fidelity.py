"""Attributes as the generator draws them: the attribute predictors' mean probability of each
image's own class, on real frames the predictors never trained on and on the kept synthetic frames.

A synthetic mean well above the real one is a caricature: classifier-free guidance over-draws
the prompted class (at guidance 3 the demo's synthetic normal-BMI frames got p(normal) 0.72-0.84
against 0.64 for real ones, which FID saw as Normal BMI's worst ratio). Well below it, the
generator does not follow that word of the prompt. Where QC checks an attribute against a floor,
the kept synthetic frames were selected on this very probability, which lifts their mean a little.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cardio_assets.classify.train import as_frames

ATTRIBUTE_FIDELITY_COLUMNS = ("attribute", "class", "n_real", "real_mean_p", "n_synthetic", "synthetic_mean_p", "difference")

Probabilities = Callable[[np.ndarray], Sequence[dict[str, dict[str, float]]]]


def attribute_fidelity(probabilities: Probabilities, real_images, real_index: pd.DataFrame, synthetic_images,
                       synthetic_index: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """One row per attribute and class: n and mean own-class probability of real and synthetic
    images, and synthetic minus real. `probabilities(images)` gives per image {attribute: {class: p}}
    (`AttributePredictor.probabilities`); images (arrays, memmaps or lazy `Frames`) are read and
    predicted once, a chunk at a time."""
    predicted_real = _predict(probabilities, real_images, len(real_index))
    predicted_synthetic = _predict(probabilities, synthetic_images, len(synthetic_index))
    rows = []
    for attribute in attributes:
        real_p = _own(predicted_real, real_index, attribute)
        synthetic_p = _own(predicted_synthetic, synthetic_index, attribute)
        labels = pd.unique(pd.concat([real_index[attribute], synthetic_index[attribute]]).dropna())
        for label in sorted(labels):
            r = real_p[(real_index[attribute] == label).to_numpy()]
            s = synthetic_p[(synthetic_index[attribute] == label).to_numpy()]
            real_mean = float(np.nanmean(r)) if len(r) else float("nan")
            synthetic_mean = float(np.nanmean(s)) if len(s) else float("nan")
            rows.append({"attribute": attribute, "class": label, "n_real": len(r), "real_mean_p": real_mean,
                         "n_synthetic": len(s), "synthetic_mean_p": synthetic_mean,
                         "difference": synthetic_mean - real_mean})
    return pd.DataFrame(rows, columns=list(ATTRIBUTE_FIDELITY_COLUMNS))


def _predict(probabilities: Probabilities, images, n: int, chunk: int = 1024) -> list[dict[str, dict[str, float]]]:
    frames = as_frames(images) if n else None
    out: list[dict[str, dict[str, float]]] = []
    for start in range(0, n, chunk):
        out += probabilities(np.asarray(frames.take(np.arange(start, min(n, start + chunk))), dtype=np.float32))
    return out


def _own(predicted: Sequence[dict[str, dict[str, float]]], index: pd.DataFrame, attribute: str) -> np.ndarray:
    if not len(index):
        return np.zeros(0)
    return np.array([p[attribute].get(label, np.nan) for p, label in zip(predicted, index[attribute])], dtype=float)
