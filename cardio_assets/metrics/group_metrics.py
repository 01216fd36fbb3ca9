"""Point estimates per group for one run (one strategy, seed and evaluation set).

Balanced accuracy = (TPR + TNR) / 2 (sklearn `balanced_accuracy_score`), AUROC (sklearn
`roc_auc_score`), false-negative rate FNR = FN / (TP + FN) of HF patients, and accuracy,
per group with fairlearn's `MetricFrame`. A group without both classes gets NaN for
balanced accuracy and AUROC (and FNR when it holds no HF patient), with its counts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import sklearn
from fairlearn.metrics import MetricFrame
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from cardio_assets.metrics.groups import GROUP_ORDER, group_labels

GROUP_METRICS = ("balanced_accuracy", "auroc", "fnr", "accuracy")


def two_classes(y_true) -> bool:
    y = np.asarray(y_true)
    return len(y) > 0 and y.min() != y.max()


def balanced_accuracy(y_true, y_pred) -> float:
    """sklearn's balanced accuracy, NaN unless both classes are present."""
    if not two_classes(y_true):
        return float("nan")
    return float(balanced_accuracy_score(y_true, y_pred))


def auroc(y_true, y_score) -> float:
    if not two_classes(y_true):
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
    """Point estimates for one run with fairlearn's MetricFrame: one row per group (in
    report order), columns n_patients, n_hf and `GROUP_METRICS`."""
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
