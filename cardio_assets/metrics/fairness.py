"""Fairness metrics of the HF classifiers, per subgroup, with bootstrap CIs and paired tests.

Input: the predictions of `cardio_assets.classify.strategies.run_strategy` (one row per
strategy x seed x evaluation set x patient). Output: one long table,
`summary.FAIRNESS_COLUMNS`, from which Table 2 and the report are cut.

Definitions
- group metrics (`group_metrics`): balanced accuracy (scikit-learn), AUROC, false-negative
  rate FNR of HF patients, accuracy, per group of `groups.ATTRIBUTES`. The 36 cells hold
  one class each, so only accuracy (sensitivity of an HF cell or specificity of a healthy
  cell) and FNR of HF cells are defined there.
- per attribute (`summary.ATTRIBUTE_METRICS`): gap = best minus worst group balanced
  accuracy; worst-group balanced accuracy; underdiagnosis gap = worst minus best group FNR;
  AUROC gap; on the seed-averaged group values.
- mean and std over the seeds of a strategy; 95% CI over `bootstrap_n` two-level resamples
  (seeded): the evaluation patients, resampled within each of the 36 cells (`bootstrap`), and
  the strategy's training runs (seeds), drawn with replacement (`seed_resamples`), so the CI
  holds the variation between equivalent training runs as well as the patients' (`summary`).
- paired comparison with the reference strategy (`real`) on the same resamples (`paired`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cardio_assets.metrics.bootstrap import (
    bootstrap_class_metrics,
    bootstrap_group_auroc,
    stratified_bootstrap_weights,
)
from cardio_assets.metrics.group_metrics import GROUP_METRICS, group_metrics
from cardio_assets.metrics.groups import ALL_GROUPS, ATTRIBUTES, GROUP_ORDER, group_labels, strategy_sort_key
from cardio_assets.metrics.paired import paired_rows
from cardio_assets.metrics.summary import (
    ATTRIBUTE_METRICS,
    FAIRNESS_COLUMNS,
    StrategySummary,
    ci95,
    fairness_row,
    nanmean,
    nanstd,
)


def fairness_metrics(predictions: pd.DataFrame, bootstrap_n: int = 1000, seed: int = 0, reference: str = "real",
                     attributes=ATTRIBUTES) -> pd.DataFrame:
    """The long fairness table (`FAIRNESS_COLUMNS`) of every strategy and evaluation set."""
    rows: list[dict] = []
    for e, evaluation_set in enumerate(sorted(predictions["evaluation_set"].unique())):
        sub = predictions[predictions["evaluation_set"] == evaluation_set]
        rng = np.random.default_rng([seed, e])
        rows += _evaluation_set_rows(sub, evaluation_set, bootstrap_n, rng, reference, attributes, (seed, e))
    out = pd.DataFrame(rows, columns=list(FAIRNESS_COLUMNS))
    return out


@dataclass
class _Patients:
    """The patients of one evaluation set, their bootstrap resamples, and their groups."""

    evaluation_set: str
    position: pd.Series  # patient id -> column of `weights`
    y: np.ndarray  # (n,) HF label as float
    weights: np.ndarray  # (B, n) bootstrap counts
    groups: dict[str, tuple[list[str], np.ndarray]]  # attribute -> (groups in report order, one-hot (n, K))

    def counts(self, attribute: str) -> tuple[np.ndarray, np.ndarray]:
        """Patients and HF patients per group."""
        _, onehot = self.groups[attribute]
        return onehot.sum(axis=0).astype(int), (onehot * self.y[:, None]).sum(axis=0).astype(int)


@dataclass
class _RunValues:
    point: dict[str, pd.DataFrame]  # attribute -> group_metrics
    boot: dict[str, dict[str, np.ndarray]]  # attribute -> metric -> (B, K)


def seed_resamples(n_seeds: int, n_resamples: int, key: tuple[int, ...]) -> np.ndarray:
    """(n_resamples, n_seeds) positions of the seeds each resample averages: a strategy's runs
    drawn with replacement. The draw depends only on `key` and the seed count, so strategies
    with the same seeds draw the same runs: their paired differences stay paired by seed."""
    return np.random.default_rng([*key, n_seeds]).integers(0, n_seeds, size=(n_resamples, n_seeds))


def _evaluation_set_rows(sub: pd.DataFrame, evaluation_set: str, bootstrap_n: int, rng: np.random.Generator,
                         reference: str, attributes, key: tuple[int, ...]) -> list[dict]:
    patients = _evaluation_patients(sub, evaluation_set, bootstrap_n, rng, attributes)
    values = {(strategy, int(run_seed)): _run_values(run, patients, attributes)
              for (strategy, run_seed), run in sub.groupby(["strategy", "seed"], sort=True)}
    strategies = sorted({s for s, _ in values}, key=strategy_sort_key)
    rows: list[dict] = []
    summaries: dict[str, StrategySummary] = {}
    for strategy in strategies:
        summaries[strategy] = _summarise(strategy, values, attributes, bootstrap_n, key)
        rows += _strategy_rows(strategy, summaries[strategy], patients, attributes)
    if reference in summaries:
        for strategy in strategies:
            if strategy != reference:
                rows += _comparison_rows(strategy, summaries[strategy], summaries[reference], reference, patients,
                                         attributes)
    return rows


def _evaluation_patients(sub: pd.DataFrame, evaluation_set: str, bootstrap_n: int, rng: np.random.Generator,
                         attributes) -> _Patients:
    info = (sub.sort_values("patient_id").drop_duplicates("patient_id")
            .set_index("patient_id")[["cell", "sex", "age_band", "bmi_band", "label"]])
    patients = info.index.to_numpy()
    weights = stratified_bootstrap_weights(info["cell"].fillna("(missing)").to_numpy(), bootstrap_n, rng)
    groups = {}
    for attribute in attributes:
        labels = group_labels(info.reset_index(), attribute)
        order = [g for g in GROUP_ORDER[attribute] if g in set(labels)] + sorted(set(labels) - set(GROUP_ORDER[attribute]))
        groups[attribute] = (order, (labels[:, None] == np.array(order, dtype=object)[None, :]).astype(float))
    return _Patients(evaluation_set, pd.Series(np.arange(len(patients)), index=patients),
                     info["label"].to_numpy(dtype=float), weights, groups)


def _run_values(run: pd.DataFrame, patients: _Patients, attributes) -> _RunValues:
    """One run's point estimates (MetricFrame) and bootstrap arrays (vectorised, same
    definitions); patients the run did not score weigh nothing."""
    n = len(patients.position)
    present, pred, score = np.zeros(n), np.zeros(n), np.zeros(n)
    pos = patients.position.loc[run["patient_id"]].to_numpy()
    present[pos] = 1.0
    pred[pos] = run["prediction"].to_numpy(dtype=float)
    score[pos] = run["score"].to_numpy(dtype=float)
    w = patients.weights * present[None, :]
    point, boot = {}, {}
    for attribute in attributes:
        order, onehot = patients.groups[attribute]
        point[attribute] = group_metrics(run, attribute).reindex(order)
        boot[attribute] = bootstrap_class_metrics(w, onehot, patients.y, pred)
        boot[attribute]["auroc"] = bootstrap_group_auroc(w, onehot, present, patients.y, score)
    return _RunValues(point, boot)


def _summarise(strategy: str, values: dict[tuple[str, int], _RunValues], attributes, bootstrap_n: int,
               key: tuple[int, ...]) -> StrategySummary:
    """Stack a strategy's runs over seeds: per-seed points, and resamples that average the
    runs each resample drew (`seed_resamples`) on that resample's patients."""
    seeds = sorted(sd for s, sd in values if s == strategy)
    runs = seed_resamples(len(seeds), bootstrap_n, key)[:, :, None]  # (B, S, 1)
    resample = np.arange(bootstrap_n)[:, None, None]
    summary = StrategySummary(seeds, {})
    for attribute in attributes:
        summary.values[attribute] = {}
        for metric in GROUP_METRICS:
            pts = np.stack([values[(strategy, sd)].point[attribute][metric].to_numpy(dtype=float) for sd in seeds])
            boots = np.stack([values[(strategy, sd)].boot[attribute][metric] for sd in seeds])  # (S, B, K)
            k = np.arange(boots.shape[2])[None, None, :]
            drawn = boots[runs, resample, k]  # (B, S, K): resample b's patients scored by the runs it drew
            summary.values[attribute][metric] = (pts, nanmean(drawn, axis=1))  # (S, K), (B, K)
    return summary


def _attribute_metric_names(attribute: str) -> list[str]:
    if attribute == "overall":
        return []  # one group: no gaps
    if attribute == "cell":
        return ["underdiagnosis_gap"]  # one class per cell: no balanced-accuracy gaps; the FNR gap of HF cells stays
    return list(ATTRIBUTE_METRICS)


def _strategy_rows(strategy: str, summary: StrategySummary, patients: _Patients, attributes) -> list[dict]:
    """Mean, std over seeds and CI of every group metric and attribute metric."""
    e, n_seeds = patients.evaluation_set, len(summary.seeds)
    rows: list[dict] = []
    for attribute in attributes:
        order, _ = patients.groups[attribute]
        n_patients, n_hf = patients.counts(attribute)
        for metric in GROUP_METRICS:
            pts, boot_mean = summary.values[attribute][metric]
            mean, std = nanmean(pts, 0), nanstd(pts, 0)
            lo, hi = ci95(boot_mean)
            for k, group in enumerate(order):
                rows.append(fairness_row(strategy, e, attribute, group, n_patients[k], n_hf[k], metric,
                                         mean[k], std[k], lo[k], hi[k], np.nan, n_seeds))
        for name in _attribute_metric_names(attribute):
            base, fn = ATTRIBUTE_METRICS[name]
            pts, boot_mean = summary.values[attribute][base]
            mean = fn(nanmean(pts, 0)[None, :])[0]
            std = nanstd(fn(pts), 0)
            lo, hi = ci95(fn(boot_mean))
            if np.isfinite(mean) or np.isfinite(lo):
                rows.append(fairness_row(strategy, e, attribute, ALL_GROUPS, n_patients.sum(), n_hf.sum(), name,
                                         mean, std, lo, hi, np.nan, n_seeds))
    return rows


def _comparison_rows(strategy: str, cur: StrategySummary, ref: StrategySummary, reference: str,
                     patients: _Patients, attributes) -> list[dict]:
    """Paired differences to the reference strategy, on the seeds both ran."""
    e = patients.evaluation_set
    common = [sd for sd in cur.seeds if sd in ref.seeds]
    rows: list[dict] = []
    for attribute in attributes:
        order, _ = patients.groups[attribute]
        n_patients, n_hf = patients.counts(attribute)
        for metric in GROUP_METRICS:
            rows += paired_rows(strategy, e, attribute, order, n_patients, n_hf, metric, cur, ref, common, reference)
        if attribute in ("overall", "cell"):
            continue
        for name, (base, fn) in ATTRIBUTE_METRICS.items():
            rows += paired_rows(strategy, e, attribute, [ALL_GROUPS], [n_patients.sum()], [n_hf.sum()], base, cur,
                                ref, common, reference, fn=fn, name=name)
    return rows
