"""The fairness report's tables, cut from the long fairness table: per group, per
attribute (gaps, worst group) and paired differences to the reference strategy."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardio_assets.metrics.groups import ALL_GROUPS, ATTRIBUTE_TITLES, GROUP_ORDER, TABLE2_ROWS, strategy_sort_key
from cardio_assets.metrics.report_format import format_ci, format_diff, format_mean_std


def report_strategies(fairness: pd.DataFrame, strategies=None) -> list[str]:
    """The strategies to report: those given, else every one in the table, in the standard order."""
    if strategies is not None:
        return list(strategies)
    return sorted(fairness["strategy"].unique(), key=strategy_sort_key)


def report_labels(strategies, labels: dict[str, str] | None) -> dict[str, str]:
    """Column titles of the strategies: their `STRATEGIES` labels unless given."""
    from cardio_assets.classify.strategies import STRATEGIES

    out = {s: STRATEGIES[s].label if s in STRATEGIES else s for s in strategies}
    out.update(labels or {})
    return out


def group_table(fairness: pd.DataFrame, evaluation_set: str, attributes, metric: str, strategies,
                labels: dict[str, str], with_ci: bool = False) -> pd.DataFrame:
    """Rows: the groups of `attributes` (n, HF), columns: one per strategy, mean ± std [CI]."""
    sub = fairness[(fairness["evaluation_set"] == evaluation_set) & (fairness["metric"] == metric)]
    rows = []
    for attribute in attributes:
        a = sub[sub["attribute"] == attribute]
        order = [g for g in GROUP_ORDER.get(attribute, []) if g in set(a["group"])]
        order += sorted(set(a["group"]) - set(order))
        for group in order:
            g = a[a["group"] == group]
            first = g.iloc[0]
            row = {"group": group, "n": int(first["n_patients"]), "HF": int(first["n_hf"])}
            for s in strategies:
                hit = g[g["strategy"] == s]
                if not len(hit):
                    row[labels[s]] = "n/a"
                    continue
                h = hit.iloc[0]
                row[labels[s]] = (format_ci(h["mean"], h["std"], h["ci_low"], h["ci_high"]) if with_ci
                                  else format_mean_std(h["mean"], h["std"]))
            rows.append(row)
    return pd.DataFrame(rows).set_index("group") if rows else pd.DataFrame()


def attribute_metric_table(fairness, evaluation_set, metric, strategies, labels, reference="real",
                           attributes=("sex", "bmi_band", "age_band", "sex_x_age", "sex_x_bmi", "demographic_cell",
                                       "cell")) -> pd.DataFrame:
    """One row per attribute and strategy: an attribute metric (a gap, the worst group) with
    its CI, and its change versus the reference."""
    sub = fairness[(fairness["evaluation_set"] == evaluation_set) & (fairness["group"] == ALL_GROUPS)]
    rows = []
    for attribute in attributes:
        a = sub[sub["attribute"] == attribute]
        if not len(a[a["metric"] == metric]):
            continue
        for s in strategies:
            hit = a[(a["strategy"] == s) & (a["metric"] == metric)]
            if not len(hit):
                continue
            h = hit.iloc[0]
            row = {"attribute": ATTRIBUTE_TITLES.get(attribute, attribute), "strategy": labels[s],
                   metric: format_ci(h["mean"], h["std"], h["ci_low"], h["ci_high"])}
            d = a[(a["strategy"] == s) & (a["metric"] == f"{metric}_vs_{reference}")]
            r = a[(a["strategy"] == s) & (a["metric"] == f"{metric}_relative_change_vs_{reference}")]
            row[f"change vs {reference}"] = (format_diff(d["mean"].iloc[0], d["ci_low"].iloc[0], d["ci_high"].iloc[0],
                                                         d["p_share"].iloc[0]) if len(d) else "")
            if metric.endswith("_gap"):
                row["relative change"] = f"{100 * r['mean'].iloc[0]:+.1f}%" if len(r) and np.isfinite(
                    r["mean"].iloc[0]) else ""
            rows.append(row)
    return pd.DataFrame(rows)


def paired_table(fairness: pd.DataFrame, evaluation_set: str, strategies, labels, reference="real",
                 metric="balanced_accuracy") -> pd.DataFrame:
    """Table 2 rows (+ worst groups), difference to the reference with CI and p_share."""
    sub = fairness[fairness["evaluation_set"] == evaluation_set]
    rows = []
    keys = list(TABLE2_ROWS) + [(a, ALL_GROUPS) for a in ("sex", "bmi_band", "age_band", "sex_x_age", "sex_x_bmi")]
    for attribute, group in keys:
        m = metric if group != ALL_GROUPS else "worst_group_balanced_accuracy"
        g = sub[(sub["attribute"] == attribute) & (sub["group"] == group) & (sub["metric"] == f"{m}_vs_{reference}")]
        if not len(g):
            continue
        name = group if group != ALL_GROUPS else f"worst group ({ATTRIBUTE_TITLES[attribute]})"
        row = {"group": name}
        for s in strategies:
            if s == reference:
                continue
            hit = g[g["strategy"] == s]
            row[labels[s]] = (format_diff(hit["mean"].iloc[0], hit["ci_low"].iloc[0], hit["ci_high"].iloc[0],
                                          hit["p_share"].iloc[0]) if len(hit) else "n/a")
        rows.append(row)
    return pd.DataFrame(rows).set_index("group") if rows else pd.DataFrame()
