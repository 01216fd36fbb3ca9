"""The paper's Table 2, cut from the long fairness table."""

from __future__ import annotations

import pandas as pd

from cardio_assets.metrics.groups import TABLE2_ROWS, strategy_sort_key
from cardio_assets.metrics.report_format import format_ci, format_mean_std


def table2(fairness: pd.DataFrame, evaluation_set: str = "test", strategies=None,
           metric: str = "balanced_accuracy", labels: dict[str, str] | None = None, with_ci: bool = False) -> pd.DataFrame:
    """Rows Overall; Female, Male; Normal BMI, Overweight, Obese; Age < 60, Age 60-70,
    Age > 70. Columns: prevalence (HF share of the evaluation patients of the row), then
    one per strategy with `mean ± std` over seeds (and the 95% bootstrap CI, `with_ci`)."""
    sub = fairness[(fairness["evaluation_set"] == evaluation_set) & (fairness["metric"] == metric)]
    if strategies is None:
        strategies = sorted(sub["strategy"].unique(), key=strategy_sort_key)
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
            if not len(hit):
                row[labels.get(strategy, strategy)] = "n/a"
                continue
            first = hit.iloc[0]
            row[labels.get(strategy, strategy)] = (format_ci(first["mean"], first["std"], first["ci_low"], first["ci_high"])
                                                   if with_ci else format_mean_std(first["mean"], first["std"]))
        out.append(row)
    return pd.DataFrame(out).set_index("group")
