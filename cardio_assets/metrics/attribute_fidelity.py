"""Attributes as the generator draws them: the attribute predictors' mean probability of each
image's own class, on real frames the predictors never trained on and on the kept synthetic frames.

A synthetic mean well above the real one is a caricature: classifier-free guidance over-draws
the prompted class (at guidance 3 the demo's synthetic normal-BMI frames got p(normal) 0.72-0.84
against 0.64 for real ones, which FID saw as Normal BMI's worst ratio). Well below it, the
generator does not follow that word of the prompt. Where QC checks an attribute against a floor,
the kept synthetic frames were selected on this very probability, which lifts their mean a little.

The comparison is within cells. The predictors' output for one class depends on the image's other
attributes (a female heart-failure frame looks less female to a predictor trained on a cohort
whose heart failure is mostly male), and the synthetic frames' cell mix is nothing like the real
one (the rare cells are what the method generates most). So the synthetic mean is each cell's
synthetic mean weighted by that cell's share of the real frames, over the cells both sides hold,
and the real mean is over those same cells: the difference is the generator's, not the mix's.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cardio_assets.classify.train import as_frames

ATTRIBUTE_FIDELITY_COLUMNS = ("attribute", "class", "cells", "n_real", "real_mean_p", "n_synthetic", "synthetic_mean_p",
                              "difference")

Probabilities = Callable[[np.ndarray], Sequence[dict[str, dict[str, float]]]]


def attribute_fidelity(probabilities: Probabilities, real_images, real_index: pd.DataFrame, synthetic_images,
                       synthetic_index: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """One row per attribute and class, over the cells of that class that hold real and synthetic
    images: how many cells, n and mean own-class probability of each side (synthetic weighted to
    the real cell mix), synthetic minus real. Indexes need a `cell` column and the attributes'.
    `probabilities(images)` gives per image {attribute: {class: p}} (`AttributePredictor.probabilities`);
    images (arrays, memmaps or lazy `Frames`) are read and predicted once, a chunk at a time."""
    predicted_real = _predict(probabilities, real_images, len(real_index))
    predicted_synthetic = _predict(probabilities, synthetic_images, len(synthetic_index))
    rows = []
    for attribute in attributes:
        real = pd.DataFrame({"cell": real_index["cell"].to_numpy(), "label": real_index[attribute].to_numpy(),
                             "p": _own(predicted_real, real_index, attribute)})
        synthetic = pd.DataFrame({"cell": synthetic_index["cell"].to_numpy(), "label": synthetic_index[attribute].to_numpy(),
                                  "p": _own(predicted_synthetic, synthetic_index, attribute)})
        for label in sorted(pd.unique(pd.concat([real["label"], synthetic["label"]]).dropna())):
            rows.append({"attribute": attribute, "class": label,
                         **matched_means(real[real["label"] == label], synthetic[synthetic["label"] == label])})
    return pd.DataFrame(rows, columns=list(ATTRIBUTE_FIDELITY_COLUMNS))


def matched_means(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict:
    """Both sides' mean of `p` over the `cell`s they share, each cell weighted by its real image
    count: {cells, n_real, real_mean_p, n_synthetic, synthetic_mean_p, difference}."""
    real_cells = real.groupby("cell")["p"].agg(["mean", "size"])
    synthetic_cells = synthetic.groupby("cell")["p"].agg(["mean", "size"])
    shared = real_cells.index.intersection(synthetic_cells.index)
    if not len(shared):
        return {"cells": 0, "n_real": 0, "real_mean_p": np.nan, "n_synthetic": 0, "synthetic_mean_p": np.nan, "difference": np.nan}
    weight = real_cells.loc[shared, "size"] / real_cells.loc[shared, "size"].sum()
    real_mean = float((weight * real_cells.loc[shared, "mean"]).sum())
    synthetic_mean = float((weight * synthetic_cells.loc[shared, "mean"]).sum())
    return {"cells": len(shared), "n_real": int(real_cells.loc[shared, "size"].sum()), "real_mean_p": real_mean,
            "n_synthetic": int(synthetic_cells.loc[shared, "size"].sum()), "synthetic_mean_p": synthetic_mean,
            "difference": synthetic_mean - real_mean}


def _predict(probabilities: Probabilities, images, n: int) -> list[dict[str, dict[str, float]]]:
    return [p for chunk in chunks(images, n) for p in probabilities(chunk)]


def chunks(images, n: int, size: int = 1024):
    """Arrays, memmaps or lazy `Frames` as float32 arrays of at most `size` images, in order."""
    frames = as_frames(images) if n else None
    for start in range(0, n, size):
        yield np.asarray(frames.take(np.arange(start, min(n, start + size))), dtype=np.float32)


def _own(predicted: Sequence[dict[str, dict[str, float]]], index: pd.DataFrame, attribute: str) -> np.ndarray:
    if not len(index):
        return np.zeros(0)
    return np.array([p[attribute].get(label, np.nan) for p, label in zip(predicted, index[attribute])], dtype=float)
