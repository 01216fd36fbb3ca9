"""Fairness metrics of the HF classifiers, per subgroup, with bootstrap CIs and paired tests.

Input: the predictions of `cardio_assets.classify.strategies.run_strategy` (one row per
strategy x seed x evaluation set x patient). Output: one long table,
`FAIRNESS_COLUMNS`, from which Table 2 and the report are cut.

Definitions
- balanced accuracy = (TPR + TNR) / 2 (sklearn `balanced_accuracy_score`), AUROC
  (sklearn `roc_auc_score`) and false-negative rate FNR = FN / (TP + FN) of HF patients,
  per group with fairlearn's `MetricFrame`. A group without both classes gets NaN for
  balanced accuracy and AUROC (and FNR when it holds no HF patient), with its counts.
- groups: Overall; sex; BMI band; age band (the rows of the paper's Table 2);
  intersections sex x age and sex x BMI; the 18 demographic cells (sex x age x BMI);
  the 36 cells (one class each, so only accuracy, i.e. sensitivity of an HF cell or
  specificity of a healthy cell, and FNR of HF cells are defined).
- per attribute: gap = best minus worst group balanced accuracy; worst-group balanced
  accuracy; underdiagnosis gap = worst minus best group FNR (RoentGen-v2, with HF as the
  finding); AUROC gap. They are computed on the seed-averaged group values (as the
  paper's "gap 37% smaller" is computed from Table 2's means); `std` is their spread
  over seeds.
- mean and std: over the seeds (runs) of a strategy (std with ddof=1; 0 for one seed).
- 95% CI: 2.5 and 97.5 percentiles over `bootstrap_n` resamples of the evaluation
  patients (seeded). Patients are resampled within each of the 36 cells, so every group
  keeps its size and its HF count in every resample; each resample is scored for every
  seed and averaged over seeds, like the mean.
- paired comparison with the reference strategy (`real`): the same resamples of the same
  patients score both strategies; the difference's mean, std over seeds (paired by seed),
  CI, and `p_share` = 2 x min(share of resampled differences <= 0, share >= 0), a
  two-sided bootstrap p-value. For gaps also the relative change (gap / reference gap - 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sklearn
from fairlearn.metrics import MetricFrame
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from cardio_assets.cohort.cells import (
    AGE_BAND_LABELS,
    AGE_BANDS,
    BMI_BAND_LABELS,
    BMI_BANDS,
    CELL_KEYS,
    SEX_LABELS,
    SEXES,
)

FAIRNESS_COLUMNS = (
    "strategy", "evaluation_set", "attribute", "group", "n_patients", "n_hf", "metric",
    "mean", "std", "ci_low", "ci_high", "p_share", "n_seeds",
)
GROUP_METRICS = ("balanced_accuracy", "auroc", "fnr", "accuracy")
ATTRIBUTE_METRICS = ("balanced_accuracy_gap", "worst_group_balanced_accuracy", "underdiagnosis_gap", "auroc_gap")
ALL_GROUPS = "(all groups)"

ATTRIBUTE_TITLES = {
    "overall": "Overall",
    "sex": "Sex",
    "bmi_band": "BMI",
    "age_band": "Age",
    "sex_x_age": "Sex x age",
    "sex_x_bmi": "Sex x BMI",
    "demographic_cell": "Sex x age x BMI",
    "cell": "Cell (36)",
}


def _group_order() -> dict[str, list[str]]:
    sex = [SEX_LABELS[s] for s in SEXES]
    age = [AGE_BAND_LABELS[a] for a in AGE_BANDS]
    bmi = [BMI_BAND_LABELS[b] for b in BMI_BANDS]
    return {
        "overall": ["Overall"],
        "sex": sex,
        "bmi_band": bmi,
        "age_band": age,
        "sex_x_age": [f"{s}, {a}" for s in sex for a in age],
        "sex_x_bmi": [f"{s}, {b}" for s in sex for b in bmi],
        "demographic_cell": [f"{s}, {a}, {b}" for s in sex for a in age for b in bmi],
        "cell": list(CELL_KEYS),
    }


GROUP_ORDER = _group_order()
ATTRIBUTES = tuple(GROUP_ORDER)

# Table 2 of the paper: (attribute, group) rows
TABLE2_ROWS: tuple[tuple[str, str], ...] = (
    ("overall", "Overall"),
    ("sex", "Female"), ("sex", "Male"),
    ("bmi_band", "Normal BMI"), ("bmi_band", "Overweight"), ("bmi_band", "Obese"),
    ("age_band", "Age < 60"), ("age_band", "Age 60-70"), ("age_band", "Age > 70"),
)


def group_labels(frame: pd.DataFrame, attribute: str) -> np.ndarray:
    """The group of every row for one attribute, as the report names it."""
    sex = frame["sex"].map(SEX_LABELS)
    age = frame["age_band"].map(AGE_BAND_LABELS)
    bmi = frame["bmi_band"].map(BMI_BAND_LABELS)
    if attribute == "overall":
        out = pd.Series("Overall", index=frame.index)
    elif attribute == "sex":
        out = sex
    elif attribute == "bmi_band":
        out = bmi
    elif attribute == "age_band":
        out = age
    elif attribute == "sex_x_age":
        out = sex + ", " + age
    elif attribute == "sex_x_bmi":
        out = sex + ", " + bmi
    elif attribute == "demographic_cell":
        out = sex + ", " + age + ", " + bmi
    elif attribute == "cell":
        out = frame["cell"].astype(str)
    else:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {ATTRIBUTES}")
    return out.fillna("(missing)").to_numpy(dtype=object)


# --------------------------------------------------------------------------- metrics


def _two_classes(y_true) -> bool:
    y = np.asarray(y_true)
    return len(y) > 0 and y.min() != y.max()


def balanced_accuracy(y_true, y_pred) -> float:
    """sklearn's balanced accuracy, NaN unless both classes are present."""
    if not _two_classes(y_true):
        return float("nan")
    return float(balanced_accuracy_score(y_true, y_pred))


def auroc(y_true, y_score) -> float:
    if not _two_classes(y_true):
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def _auroc_of_scores(y_true, y_pred, y_score) -> float:
    return auroc(y_true, y_score)


def false_negative_rate(y_true, y_pred) -> float:
    """FN / (TP + FN): the share of HF patients the model misses; NaN without HF patients."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    positives = y_true == 1
    if not positives.any():
        return float("nan")
    return float(np.mean(y_pred[positives] == 0))


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def group_metrics(run: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Point estimates for one run (one strategy, seed and evaluation set) with fairlearn's
    MetricFrame: one row per group (in report order), columns n_patients, n_hf and
    `GROUP_METRICS`."""
    groups = group_labels(run, attribute)
    y = run["label"].to_numpy(dtype=int)
    with warnings.catch_warnings(), sklearn.config_context(skip_parameter_validation=True):
        warnings.simplefilter("ignore")
        by_group = MetricFrame(
            metrics={"balanced_accuracy": balanced_accuracy, "fnr": false_negative_rate, "accuracy": accuracy,
                     "auroc": _auroc_of_scores},
            y_true=y, y_pred=run["prediction"].to_numpy(dtype=int),
            sensitive_features=pd.Series(groups, name="group"),
            sample_params={"auroc": {"y_score": run["score"].to_numpy(dtype=float)}},
        ).by_group
    counts = pd.DataFrame({"group": groups, "label": y}).groupby("group")["label"].agg(["size", "sum"])
    out = pd.concat([counts.rename(columns={"size": "n_patients", "sum": "n_hf"}), by_group], axis=1)
    order = [g for g in GROUP_ORDER.get(attribute, []) if g in out.index]
    order += sorted(g for g in out.index if g not in order)
    out = out.loc[order]
    out.index.name = "group"
    return out[["n_patients", "n_hf", *GROUP_METRICS]].astype(float).astype({"n_patients": int, "n_hf": int})


# --------------------------------------------------------------------------- bootstrap engine


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


def _boot_counts(weights: np.ndarray, onehot: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """(B, K) balanced accuracy, FNR and accuracy under bootstrap weights, all groups at once."""
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


@dataclass
class _RunValues:
    point: dict[str, pd.DataFrame]  # attribute -> group_metrics
    boot: dict[str, dict[str, np.ndarray]]  # attribute -> metric -> (B, K)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _nanstd(a: np.ndarray, axis: int) -> np.ndarray:
    n = np.sum(np.isfinite(a), axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(a, axis=axis, ddof=1)
    return np.where(n > 1, std, np.where(n == 1, 0.0, np.nan))


def _ci(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(samples, [2.5, 97.5], axis=0)
    return lo, hi


def _p_share(diffs: np.ndarray) -> np.ndarray:
    finite = np.isfinite(diffs)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        le = np.sum((diffs <= 0) & finite, axis=0) / n
        ge = np.sum((diffs >= 0) & finite, axis=0) / n
        return np.where(n > 0, np.minimum(1.0, 2.0 * np.minimum(le, ge)), np.nan)


def _gap(values: np.ndarray) -> np.ndarray:
    """max - min over the last axis among finite entries; NaN with fewer than two."""
    finite = np.isfinite(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmax(values, axis=-1) - np.nanmin(values, axis=-1)
    return np.where(finite.sum(axis=-1) >= 2, out, np.nan)


def _worst(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmin(values, axis=-1)
    return np.where(finite.sum(axis=-1) >= 1, out, np.nan)


DERIVED = {
    "balanced_accuracy_gap": ("balanced_accuracy", _gap),
    "worst_group_balanced_accuracy": ("balanced_accuracy", _worst),
    "underdiagnosis_gap": ("fnr", _gap),
    "auroc_gap": ("auroc", _gap),
}


def fairness_metrics(predictions: pd.DataFrame, bootstrap_n: int = 1000, seed: int = 0, reference: str = "real",
                     attributes=ATTRIBUTES) -> pd.DataFrame:
    """The long fairness table (`FAIRNESS_COLUMNS`) of every strategy and evaluation set."""
    rows: list[dict] = []
    for e, evaluation_set in enumerate(sorted(predictions["evaluation_set"].unique())):
        sub = predictions[predictions["evaluation_set"] == evaluation_set]
        rng = np.random.default_rng([seed, e])
        rows += _evaluation_set_rows(sub, evaluation_set, bootstrap_n, rng, reference, attributes)
    out = pd.DataFrame(rows, columns=list(FAIRNESS_COLUMNS))
    return out


def _evaluation_set_rows(sub: pd.DataFrame, evaluation_set: str, bootstrap_n: int, rng: np.random.Generator,
                         reference: str, attributes) -> list[dict]:
    info = (sub.sort_values("patient_id").drop_duplicates("patient_id")
            .set_index("patient_id")[["cell", "sex", "age_band", "bmi_band", "label"]])
    patients = info.index.to_numpy()
    position = pd.Series(np.arange(len(patients)), index=patients)
    y = info["label"].to_numpy(dtype=float)
    weights = stratified_bootstrap_weights(info["cell"].fillna("(missing)").to_numpy(), bootstrap_n, rng)
    onehots = {}
    for attribute in attributes:
        labels = group_labels(info.reset_index(), attribute)
        order = [g for g in GROUP_ORDER[attribute] if g in set(labels)] + sorted(set(labels) - set(GROUP_ORDER[attribute]))
        onehots[attribute] = (order, (labels[:, None] == np.array(order, dtype=object)[None, :]).astype(float))

    # per run: point estimates (MetricFrame) and bootstrap arrays (vectorised, same definitions)
    values: dict[tuple[str, int], _RunValues] = {}
    for (strategy, run_seed), run in sub.groupby(["strategy", "seed"], sort=True):
        present = np.zeros(len(patients))
        pred = np.zeros(len(patients))
        score = np.zeros(len(patients))
        pos = position.loc[run["patient_id"]].to_numpy()
        present[pos] = 1.0
        pred[pos] = run["prediction"].to_numpy(dtype=float)
        score[pos] = run["score"].to_numpy(dtype=float)
        w = weights * present[None, :]
        point, boot = {}, {}
        for attribute in attributes:
            order, onehot = onehots[attribute]
            point[attribute] = group_metrics(run, attribute).reindex(order)
            b = _boot_counts(w, onehot, y, pred)
            au = np.full((bootstrap_n, len(order)), np.nan)
            for k in range(len(order)):
                members = np.flatnonzero(onehot[:, k] * present)
                if _two_classes(y[members]):
                    au[:, k] = weighted_auroc(w[:, members], y[members], score[members])
            b["auroc"] = au
            boot[attribute] = b
        values[(strategy, int(run_seed))] = _RunValues(point, boot)

    strategies = sorted({s for s, _ in values}, key=_strategy_sort_key)
    rows: list[dict] = []
    summary: dict[str, dict] = {}
    for strategy in strategies:
        seeds = sorted(sd for s, sd in values if s == strategy)
        summary[strategy] = {"seeds": seeds}
        for attribute in attributes:
            order, onehot = onehots[attribute]
            n_patients = onehot.sum(axis=0).astype(int)
            n_hf = (onehot * y[:, None]).sum(axis=0).astype(int)
            per_metric = {}
            for metric in GROUP_METRICS:
                pts = np.stack([values[(strategy, sd)].point[attribute][metric].to_numpy(dtype=float) for sd in seeds])
                boots = np.stack([values[(strategy, sd)].boot[attribute][metric] for sd in seeds])
                boot_mean = _nanmean(boots, axis=0)  # (B, K)
                per_metric[metric] = (pts, boot_mean)
                mean, std = _nanmean(pts, 0), _nanstd(pts, 0)
                lo, hi = _ci(boot_mean)
                for k, group in enumerate(order):
                    rows.append(_row(strategy, evaluation_set, attribute, group, n_patients[k], n_hf[k], metric,
                                     mean[k], std[k], lo[k], hi[k], np.nan, len(seeds)))
            summary[strategy][attribute] = per_metric
            if attribute in ("overall", "cell"):
                # one group, or one class per group: no balanced-accuracy gaps; the FNR gap of HF cells stays
                derived_names = ["underdiagnosis_gap"] if attribute == "cell" else []
            else:
                derived_names = list(DERIVED)
            for name in derived_names:
                base, fn = DERIVED[name]
                pts, boot_mean = per_metric[base]
                mean = fn(_nanmean(pts, 0)[None, :])[0]
                std = _nanstd(fn(pts), 0)
                lo, hi = _ci(fn(boot_mean))
                if np.isfinite(mean) or np.isfinite(lo):
                    rows.append(_row(strategy, evaluation_set, attribute, ALL_GROUPS, n_patients.sum(),
                                     n_hf.sum(), name, mean, std, lo, hi, np.nan, len(seeds)))

    if reference in summary:
        ref = summary[reference]
        for strategy in strategies:
            if strategy == reference:
                continue
            cur = summary[strategy]
            common = [sd for sd in cur["seeds"] if sd in ref["seeds"]]
            for attribute in attributes:
                order, onehot = onehots[attribute]
                n_patients = onehot.sum(axis=0).astype(int)
                n_hf = (onehot * y[:, None]).sum(axis=0).astype(int)
                for metric in GROUP_METRICS:
                    rows += _paired_rows(strategy, evaluation_set, attribute, order, n_patients, n_hf, metric,
                                         cur, ref, common, reference, fn=None)
                if attribute in ("overall", "cell"):
                    continue
                for name, (base, fn) in DERIVED.items():
                    rows += _paired_rows(strategy, evaluation_set, attribute, [ALL_GROUPS], [n_patients.sum()],
                                         [n_hf.sum()], base, cur, ref, common, reference, fn=fn, name=name)
    return rows


def _paired_rows(strategy, evaluation_set, attribute, order, n_patients, n_hf, metric, cur, ref, common, reference,
                 fn=None, name=None) -> list[dict]:
    pts_c, boot_c = cur[attribute][metric]
    pts_r, boot_r = ref[attribute][metric]
    seeds_c, seeds_r = cur["seeds"], ref["seeds"]
    f = fn if fn is not None else (lambda v: v)
    point_c = f(_nanmean(pts_c, 0)[None, :])[0] if fn else _nanmean(pts_c, 0)
    point_r = f(_nanmean(pts_r, 0)[None, :])[0] if fn else _nanmean(pts_r, 0)
    diff_mean = np.atleast_1d(point_c - point_r)
    if common:
        ic = [seeds_c.index(sd) for sd in common]
        ir = [seeds_r.index(sd) for sd in common]
        per_seed = f(pts_c[ic]) - f(pts_r[ir])
        diff_std = np.atleast_1d(_nanstd(per_seed, 0))
    else:
        diff_std = np.full(len(diff_mean), np.nan)
    diff_boot = f(boot_c) - f(boot_r)
    if diff_boot.ndim == 1:
        diff_boot = diff_boot[:, None]
    lo, hi = _ci(diff_boot)
    p = _p_share(diff_boot)
    label = name or metric
    rows = []
    for k, group in enumerate(order):
        rows.append(_row(strategy, evaluation_set, attribute, group, n_patients[k], n_hf[k], f"{label}_vs_{reference}",
                         diff_mean[k], diff_std[k], np.atleast_1d(lo)[k], np.atleast_1d(hi)[k],
                         np.atleast_1d(p)[k], len(common)))
    if fn is not None and label.endswith("_gap"):  # relative change of a gap (the paper's "37% smaller")
        with np.errstate(invalid="ignore", divide="ignore"):
            rel_mean = np.atleast_1d(np.where(np.atleast_1d(point_r) != 0, diff_mean / np.atleast_1d(point_r), np.nan))
            rel_boot = np.where(f(boot_r) != 0, (f(boot_c) - f(boot_r)) / f(boot_r), np.nan)[:, None]
        lo_r, hi_r = _ci(rel_boot)
        rows.append(_row(strategy, evaluation_set, attribute, order[0], n_patients[0], n_hf[0],
                         f"{label}_relative_change_vs_{reference}", rel_mean[0], np.nan,
                         np.atleast_1d(lo_r)[0], np.atleast_1d(hi_r)[0], np.atleast_1d(_p_share(rel_boot))[0],
                         len(common)))
    return [r for r in rows if np.isfinite(r["mean"]) or np.isfinite(r["ci_low"])]


def _row(strategy, evaluation_set, attribute, group, n_patients, n_hf, metric, mean, std, lo, hi, p, n_seeds) -> dict:
    return {
        "strategy": strategy, "evaluation_set": evaluation_set, "attribute": attribute, "group": group,
        "n_patients": int(n_patients), "n_hf": int(n_hf), "metric": metric, "mean": float(mean),
        "std": float(std), "ci_low": float(lo), "ci_high": float(hi), "p_share": float(p), "n_seeds": int(n_seeds),
    }


def _strategy_sort_key(name: str):
    from cardio_assets.classify.strategies import STRATEGY_NAMES

    return (STRATEGY_NAMES.index(name) if name in STRATEGY_NAMES else len(STRATEGY_NAMES), name)


# --------------------------------------------------------------------------- tables


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table2(fairness: pd.DataFrame, evaluation_set: str = "test", strategies=None,
           metric: str = "balanced_accuracy", labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The paper's Table 2: rows Overall; Female, Male; Normal BMI, Overweight, Obese;
    Age < 60, Age 60-70, Age > 70. Columns: prevalence (HF share of the evaluation
    patients of the row), then one per strategy with `mean ± std` over seeds."""
    sub = fairness[(fairness["evaluation_set"] == evaluation_set) & (fairness["metric"] == metric)]
    if strategies is None:
        strategies = sorted(sub["strategy"].unique(), key=_strategy_sort_key)
    labels = labels or {}
    out = []
    for attribute, group in TABLE2_ROWS:
        row_sel = sub[(sub["attribute"] == attribute) & (sub["group"] == group)]
        row: dict = {"group": group}
        if len(row_sel):
            first = row_sel.iloc[0]
            row["prevalence"] = f"{100.0 * first['n_hf'] / first['n_patients']:.2f}%" if first["n_patients"] else "n/a"
        else:
            row["prevalence"] = "n/a"
        for strategy in strategies:
            hit = row_sel[row_sel["strategy"] == strategy]
            row[labels.get(strategy, strategy)] = (format_mean_std(hit["mean"].iloc[0], hit["std"].iloc[0])
                                                   if len(hit) else "n/a")
        out.append(row)
    return pd.DataFrame(out).set_index("group")
