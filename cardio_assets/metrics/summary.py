"""From per-seed values and bootstrap resamples to the rows of the long fairness table.

- mean and std: over the seeds (runs) of a strategy (std with ddof=1; 0 for one seed).
- 95% CI: 2.5 and 97.5 percentiles over the bootstrap resamples; a resample draws patients
  (within cells) and the strategy's seeds (with replacement), and averages the drawn seeds'
  values on the drawn patients, like the mean. With few seeds the run-to-run part is
  understated (a bootstrap of S runs has (S - 1) / S of their variance): read the std too.
- per attribute (`ATTRIBUTE_METRICS`): gap = best minus worst group value; worst-group
  balanced accuracy. They are computed on the seed-averaged group values (as the paper's
  "gap 37% smaller" is computed from Table 2's means); `std` is their spread over seeds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

FAIRNESS_COLUMNS = (
    "strategy", "evaluation_set", "attribute", "group", "n_patients", "n_hf", "metric",
    "mean", "std", "ci_low", "ci_high", "p_share", "n_seeds",
)


def fairness_row(strategy, evaluation_set, attribute, group, n_patients, n_hf, metric, mean, std, lo, hi, p,
                 n_seeds) -> dict:
    """One row of the long table, in `FAIRNESS_COLUMNS`."""
    return {
        "strategy": strategy, "evaluation_set": evaluation_set, "attribute": attribute, "group": group,
        "n_patients": int(n_patients), "n_hf": int(n_hf), "metric": metric, "mean": float(mean),
        "std": float(std), "ci_low": float(lo), "ci_high": float(hi), "p_share": float(p), "n_seeds": int(n_seeds),
    }


@dataclass
class StrategySummary:
    """A strategy's values on one evaluation set: for every attribute and group metric, the
    per-seed group values (S, K) and the bootstrap resamples of patients and seeds (B, K)."""

    seeds: list[int]
    values: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # attribute -> metric -> (points, resamples)


def nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def nanstd(a: np.ndarray, axis: int) -> np.ndarray:
    n = np.sum(np.isfinite(a), axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(a, axis=axis, ddof=1)
    return np.where(n > 1, std, np.where(n == 1, 0.0, np.nan))


def ci95(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(samples, [2.5, 97.5], axis=0)
    return lo, hi


def p_share(diffs: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value: 2 x min(share of resampled differences <= 0, share >= 0)."""
    finite = np.isfinite(diffs)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        le = np.sum((diffs <= 0) & finite, axis=0) / n
        ge = np.sum((diffs >= 0) & finite, axis=0) / n
        return np.where(n > 0, np.minimum(1.0, 2.0 * np.minimum(le, ge)), np.nan)


def gap(values: np.ndarray) -> np.ndarray:
    """max - min over the last axis among finite entries; NaN with fewer than two."""
    finite = np.isfinite(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmax(values, axis=-1) - np.nanmin(values, axis=-1)
    return np.where(finite.sum(axis=-1) >= 2, out, np.nan)


def worst(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmin(values, axis=-1)
    return np.where(finite.sum(axis=-1) >= 1, out, np.nan)


# per attribute: name -> (the group metric it is made of, how the groups reduce to one value);
# the underdiagnosis gap (RoentGen-v2, with HF as the finding) is worst minus best group FNR
ATTRIBUTE_METRICS = {
    "balanced_accuracy_gap": ("balanced_accuracy", gap),
    "worst_group_balanced_accuracy": ("balanced_accuracy", worst),
    "underdiagnosis_gap": ("fnr", gap),
    "auroc_gap": ("auroc", gap),
}
