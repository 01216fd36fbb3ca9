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

from typing import Sequence

import numpy as np
import pandas as pd

ATTRIBUTE_FIDELITY_COLUMNS = ("attribute", "class", "cells", "n_real", "real_mean_p", "n_synthetic", "synthetic_mean_p",
                              "difference")

Probabilities = Sequence[dict[str, dict[str, float]]]  # per image {attribute: {class: p}}


def attribute_fidelity(real_probabilities: Probabilities, real_index: pd.DataFrame, synthetic_probabilities: Probabilities,
                       synthetic_index: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """One row per attribute and class, over the cells of that class that hold real and synthetic
    images: how many cells, n and mean own-class probability of each side (synthetic weighted to
    the real cell mix), synthetic minus real. Indexes need a `cell` column and the attributes';
    the probabilities are `AttributePredictor.probabilities` of each side's images, in index order
    (`classify.train.per_image` computes them with a reading of the images that other tables share)."""
    rows = []
    for attribute in attributes:
        real = pd.DataFrame({"cell": real_index["cell"].to_numpy(), "label": real_index[attribute].to_numpy(),
                             "value": _own(real_probabilities, real_index, attribute)})
        synthetic = pd.DataFrame({"cell": synthetic_index["cell"].to_numpy(), "label": synthetic_index[attribute].to_numpy(),
                                  "value": _own(synthetic_probabilities, synthetic_index, attribute)})
        for label in sorted(pd.unique(pd.concat([real["label"], synthetic["label"]]).dropna())):
            m = matched_means(real[real["label"] == label], synthetic[synthetic["label"] == label])
            rows.append({"attribute": attribute, "class": label, "cells": m["cells"], "n_real": m["n_real"], "real_mean_p": m["real_mean"],
                         "n_synthetic": m["n_synthetic"], "synthetic_mean_p": m["synthetic_mean"], "difference": m["difference"]})
    return pd.DataFrame(rows, columns=list(ATTRIBUTE_FIDELITY_COLUMNS))


def matched_means(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict:
    """Both sides' mean of `value` over the `cell`s they share, each cell weighted by its real image
    count: {cells, n_real, real_mean, n_synthetic, synthetic_mean, difference}."""
    real_cells = real.groupby("cell")["value"].agg(["mean", "size"])
    synthetic_cells = synthetic.groupby("cell")["value"].agg(["mean", "size"])
    shared = real_cells.index.intersection(synthetic_cells.index)
    if not len(shared):
        return {"cells": 0, "n_real": 0, "real_mean": np.nan, "n_synthetic": 0, "synthetic_mean": np.nan, "difference": np.nan}
    weight = real_cells.loc[shared, "size"] / real_cells.loc[shared, "size"].sum()
    real_mean = float((weight * real_cells.loc[shared, "mean"]).sum())
    synthetic_mean = float((weight * synthetic_cells.loc[shared, "mean"]).sum())
    return {"cells": len(shared), "n_real": int(real_cells.loc[shared, "size"].sum()), "real_mean": real_mean,
            "n_synthetic": int(synthetic_cells.loc[shared, "size"].sum()), "synthetic_mean": synthetic_mean,
            "difference": synthetic_mean - real_mean}


def _own(predicted: Probabilities, index: pd.DataFrame, attribute: str) -> np.ndarray:
    if len(predicted) != len(index):
        raise ValueError(f"{len(predicted)} predictions for {len(index)} images")
    return np.array([p[attribute].get(label, np.nan) for p, label in zip(predicted, index[attribute])], dtype=float)
