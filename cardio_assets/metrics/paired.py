"""Paired comparison of a strategy with the reference strategy (`real`) on one evaluation set.

The same bootstrap resamples of the same patients score both strategies. Rows: the
difference's mean (of the seed means), std over seeds (paired by seed), CI and `p_share`
(a two-sided bootstrap p-value); for gaps also the relative change (gap / reference gap - 1,
the paper's "37% smaller").
"""

from __future__ import annotations

import numpy as np

from cardio_assets.metrics.summary import StrategySummary, ci95, fairness_row, nanmean, nanstd, p_share


def paired_rows(strategy: str, evaluation_set: str, attribute: str, order, n_patients, n_hf, metric: str,
                cur: StrategySummary, ref: StrategySummary, common: list[int], reference: str, fn=None,
                name: str | None = None) -> list[dict]:
    """Rows `{metric}_vs_{reference}` for the groups of `order`; with `fn` (an attribute
    metric reducing the groups to one value, called `name`) one row for the whole attribute."""
    pts_c, boot_c = cur.values[attribute][metric]
    pts_r, boot_r = ref.values[attribute][metric]
    f = fn if fn is not None else (lambda v: v)
    point_c = f(nanmean(pts_c, 0)[None, :])[0] if fn else nanmean(pts_c, 0)
    point_r = f(nanmean(pts_r, 0)[None, :])[0] if fn else nanmean(pts_r, 0)
    diff_mean = np.atleast_1d(point_c - point_r)
    if common:
        ic = [cur.seeds.index(sd) for sd in common]
        ir = [ref.seeds.index(sd) for sd in common]
        per_seed = f(pts_c[ic]) - f(pts_r[ir])
        diff_std = np.atleast_1d(nanstd(per_seed, 0))
    else:
        diff_std = np.full(len(diff_mean), np.nan)
    diff_boot = f(boot_c) - f(boot_r)
    if diff_boot.ndim == 1:
        diff_boot = diff_boot[:, None]
    lo, hi = ci95(diff_boot)
    p = p_share(diff_boot)
    label = name or metric
    rows = []
    for k, group in enumerate(order):
        rows.append(fairness_row(strategy, evaluation_set, attribute, group, n_patients[k], n_hf[k],
                                 f"{label}_vs_{reference}", diff_mean[k], diff_std[k], np.atleast_1d(lo)[k],
                                 np.atleast_1d(hi)[k], np.atleast_1d(p)[k], len(common)))
    if fn is not None and label.endswith("_gap"):
        rel_mean, rel_boot = _relative_change(diff_mean, point_r, f(boot_c), f(boot_r))
        lo_r, hi_r = ci95(rel_boot)
        rows.append(fairness_row(strategy, evaluation_set, attribute, order[0], n_patients[0], n_hf[0],
                                 f"{label}_relative_change_vs_{reference}", rel_mean[0], np.nan,
                                 np.atleast_1d(lo_r)[0], np.atleast_1d(hi_r)[0], np.atleast_1d(p_share(rel_boot))[0],
                                 len(common)))
    return [r for r in rows if np.isfinite(r["mean"]) or np.isfinite(r["ci_low"])]


def _relative_change(diff_mean: np.ndarray, point_r, boot_c: np.ndarray,
                     boot_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A gap's change relative to the reference gap: of the means, and per resample (B, 1)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_mean = np.atleast_1d(np.where(np.atleast_1d(point_r) != 0, diff_mean / np.atleast_1d(point_r), np.nan))
        rel_boot = np.where(boot_r != 0, (boot_c - boot_r) / boot_r, np.nan)[:, None]
    return rel_mean, rel_boot
