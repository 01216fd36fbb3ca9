"""Group metrics under bootstrap resamples of patients, all resamples and groups at once.

A resample is a row of integer weights: how often each patient was drawn. Patients are
resampled within each of the 36 cells, so every group keeps its size and its HF count in
every resample. The metrics follow `group_metrics`' definitions; one scikit-learn call per
resample and group would take about a minute per run at 1000 resamples, so they are
computed from weighted counts here.
The counts are sums of integers, hence exact, and the balanced accuracy is bit for bit
sklearn's `balanced_accuracy_score` with the same `sample_weight` (see the tests).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardio_assets.metrics.group_metrics import two_classes


def stratified_bootstrap_weights(strata: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) counts: how often each item is drawn when every stratum is resampled
    with replacement to its own size."""
    strata = np.asarray(strata)
    weights = np.zeros((n_resamples, len(strata)), dtype=np.float64)
    for value in pd.unique(strata):
        members = np.flatnonzero(strata == value)
        m = len(members)
        weights[:, members] = rng.multinomial(m, np.full(m, 1.0 / m), size=n_resamples)
    return weights


def bootstrap_class_metrics(weights: np.ndarray, onehot: np.ndarray, y: np.ndarray,
                            pred: np.ndarray) -> dict[str, np.ndarray]:
    """(B, K) balanced accuracy, FNR and accuracy under bootstrap weights (B, n), for the K
    groups of `onehot` (n, K) at once."""
    cols = np.concatenate([
        onehot * y[:, None], onehot * (1 - y)[:, None],
        onehot * (y * pred)[:, None], onehot * ((1 - y) * (1 - pred))[:, None],
    ], axis=1)
    k = onehot.shape[1]
    sums = weights @ cols
    pos, neg, tp, tn = (sums[:, i * k:(i + 1) * k] for i in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / pos
        tnr = tn / neg
        ba = np.where((pos > 0) & (neg > 0), 0.5 * (tpr + tnr), np.nan)
        fnr = np.where(pos > 0, 1.0 - tpr, np.nan)
        acc = np.where(pos + neg > 0, (tp + tn) / (pos + neg), np.nan)
    return {"balanced_accuracy": ba, "fnr": fnr, "accuracy": acc}


def weighted_auroc(weights: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUROC under each row of integer weights (B, n): the weighted Mann-Whitney statistic,
    ties counted one half. NaN where a class has no weight."""
    order = np.argsort(score, kind="stable")
    s, yy, w = score[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    wp = np.add.reduceat(w * yy, starts, axis=1)
    wn = np.add.reduceat(w * (1 - yy), starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    num = np.sum(wp * (below + 0.5 * wn), axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def bootstrap_group_auroc(weights: np.ndarray, onehot: np.ndarray, present: np.ndarray, y: np.ndarray,
                          score: np.ndarray) -> np.ndarray:
    """(B, K) AUROC per group among the patients `present` in the run; NaN for a group
    without both classes."""
    out = np.full((len(weights), onehot.shape[1]), np.nan)
    for k in range(onehot.shape[1]):
        members = np.flatnonzero(onehot[:, k] * present)
        if two_classes(y[members]):
            out[:, k] = weighted_auroc(weights[:, members], y[members], score[members])
    return out
