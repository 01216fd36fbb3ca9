"""The fairness report's PNG plots, written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cardio_assets.lake.atomic import atomic_write_file  # noqa: E402
from cardio_assets.metrics.groups import ATTRIBUTE_TITLES, TABLE2_ROWS  # noqa: E402
from cardio_assets.metrics.report_format import EVALUATION_SET_TITLES  # noqa: E402


def plot_group_accuracy(fairness: pd.DataFrame, evaluation_set: str, strategies, labels, path: Path) -> Path:
    """Balanced accuracy per Table 2 group, one bar per strategy, 95% CI as error bars."""
    sub = fairness[(fairness["evaluation_set"] == evaluation_set) & (fairness["metric"] == "balanced_accuracy")]
    groups = [g for _, g in TABLE2_ROWS]
    # about 1,100 px wide at 120 dpi: fits the Dagster UI's metadata dialog with the legend inside
    fig, ax = plt.subplots(figsize=(9.2, 4.8))
    width = 0.8 / max(1, len(strategies))
    x = np.arange(len(groups))
    for i, s in enumerate(strategies):
        means, lo, hi = [], [], []
        for attribute, group in TABLE2_ROWS:
            hit = sub[(sub["strategy"] == s) & (sub["attribute"] == attribute) & (sub["group"] == group)]
            m = hit["mean"].iloc[0] if len(hit) else np.nan
            means.append(m)
            lo.append(m - hit["ci_low"].iloc[0] if len(hit) and np.isfinite(hit["ci_low"].iloc[0]) else 0.0)
            hi.append(hit["ci_high"].iloc[0] - m if len(hit) and np.isfinite(hit["ci_high"].iloc[0]) else 0.0)
        ax.bar(x + (i - (len(strategies) - 1) / 2) * width, means, width, label=labels[s],
               yerr=np.clip(np.array([lo, hi]), 0, None), capsize=2)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel("balanced accuracy (mean over seeds, 95% CI)")
    ax.set_ylim(0.0, 1.32)  # headroom above 1.0 for the legend
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_title(f"Balanced accuracy per group: {EVALUATION_SET_TITLES.get(evaluation_set, evaluation_set)}")
    ax.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)
    return _save_png(fig, path)


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_gap_vs_accuracy(fairness: pd.DataFrame, evaluation_set: str, strategies, labels, path: Path) -> Path:
    """One panel per attribute: overall balanced accuracy (x) vs its gap (y), a point per strategy."""
    sub = fairness[fairness["evaluation_set"] == evaluation_set]
    attributes = ("sex", "age_band", "bmi_band")
    fig, axes = plt.subplots(1, len(attributes), figsize=(9.2, 4.2), sharey=True)
    overall = sub[(sub["attribute"] == "overall") & (sub["metric"] == "balanced_accuracy")]
    for ax, attribute in zip(np.atleast_1d(axes), attributes):
        gaps = sub[(sub["attribute"] == attribute) & (sub["metric"] == "balanced_accuracy_gap")]
        for i, s in enumerate(strategies):
            o, g = overall[overall["strategy"] == s], gaps[gaps["strategy"] == s]
            if not len(o) or not len(g):
                continue
            # one colour and marker per strategy, named once in the figure's legend: labels next to
            # the points overlapped where strategies score alike
            ax.errorbar(o["mean"].iloc[0], g["mean"].iloc[0], xerr=_nz(o["std"].iloc[0]), yerr=_nz(g["std"].iloc[0]),
                        fmt=MARKERS[i % len(MARKERS)], color=f"C{i}",
                        capsize=2, label=labels[s])
        ax.set_title(f"{ATTRIBUTE_TITLES[attribute]} gap")
        ax.set_xlabel("overall balanced accuracy")
    np.atleast_1d(axes)[0].set_ylabel("balanced accuracy gap (best - worst group)")
    fig.suptitle(f"Fairness vs accuracy: {EVALUATION_SET_TITLES.get(evaluation_set, evaluation_set)}")
    handles, names = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return _save_png(fig, path)


def _nz(value: float) -> float:
    """An error bar of 0 where the spread is undefined (one seed)."""
    return float(value) if np.isfinite(value) else 0.0


def _save_png(fig, path: Path) -> Path:
    try:
        return atomic_write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)
