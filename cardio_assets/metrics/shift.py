"""In and out of distribution, side by side: what each strategy loses on a vendor or site it never saw.

Ktena et al. found generated data helps most out of distribution; this table is where that shows or
does not: per strategy, balanced accuracy in distribution and out of distribution (mean over seeds
[95% bootstrap CI]), the drop between them, and the paired gain over real-only training in each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _cell(rows: pd.DataFrame, strategy: str, metric: str, group: str) -> tuple[float, float, float]:
    hit = rows[(rows["strategy"] == strategy) & (rows["metric"] == metric) & (rows["group"] == group)]
    if not len(hit):
        return np.nan, np.nan, np.nan
    first = hit.iloc[0]
    return float(first["mean"]), float(first["ci_low"]), float(first["ci_high"])


def _text(value: tuple[float, float, float], signed: bool = False) -> str:
    mean, lo, hi = value
    if not np.isfinite(mean):
        return "n/a"
    sign = "+" if signed else ""
    ci = f" [{lo:{sign}.3f}, {hi:{sign}.3f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{mean:{sign}.3f}{ci}"


def shift_values(fairness: pd.DataFrame, in_set: str, out_set: str, strategies, reference: str = "real",
                 group: str = "Overall") -> pd.DataFrame:
    """Numbers per strategy: balanced accuracy in and out (ba_in, ba_out), drop = out - in, gain over
    `reference` in and out (gain_in, gain_out); means over seeds, NaN where absent."""
    rows = []
    ins = fairness[fairness["evaluation_set"] == in_set]
    outs = fairness[fairness["evaluation_set"] == out_set]
    for strategy in strategies:
        rows.append({
            "strategy": strategy,
            "ba_in": _cell(ins, strategy, "balanced_accuracy", group)[0],
            "ba_out": _cell(outs, strategy, "balanced_accuracy", group)[0],
            "gain_in": _cell(ins, strategy, f"balanced_accuracy_vs_{reference}", group)[0],
            "gain_out": _cell(outs, strategy, f"balanced_accuracy_vs_{reference}", group)[0],
        })
    table = pd.DataFrame(rows)
    table["drop"] = table["ba_out"] - table["ba_in"]
    return table


def shift_table(fairness: pd.DataFrame, in_set: str, out_set: str, strategies, labels: dict[str, str] | None = None,
                reference: str = "real", group: str = "Overall") -> pd.DataFrame:
    """The report's table: one row per strategy, texts with CIs (the drop without: the two sets hold
    different patients, so it has no paired resamples)."""
    labels = labels or {}
    ins = fairness[fairness["evaluation_set"] == in_set]
    outs = fairness[fairness["evaluation_set"] == out_set]
    values = shift_values(fairness, in_set, out_set, strategies, reference, group).set_index("strategy")
    rows = []
    for strategy in strategies:
        gain = f"balanced_accuracy_vs_{reference}"
        rows.append({
            "strategy": labels.get(strategy, strategy),
            "in distribution": _text(_cell(ins, strategy, "balanced_accuracy", group)),
            "out of distribution": _text(_cell(outs, strategy, "balanced_accuracy", group)),
            "out - in": f"{values.loc[strategy, 'drop']:+.3f}" if np.isfinite(values.loc[strategy, "drop"]) else "n/a",
            f"vs {labels.get(reference, reference)}, in": "" if strategy == reference else _text(_cell(ins, strategy, gain, group), signed=True),
            f"vs {labels.get(reference, reference)}, out": "" if strategy == reference else _text(_cell(outs, strategy, gain, group), signed=True),
        })
    return pd.DataFrame(rows)
