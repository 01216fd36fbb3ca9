"""The few lines the demo prints at the end: what the fairness report says, in brief."""

from __future__ import annotations

import pandas as pd

from cardio_assets.metrics.shift import shift_values

# the paper's rarest groups (lowest HF prevalence): where balanced synthetic data should help most
RARE_GROUPS = (("age_band", "Age < 60"), ("bmi_band", "Normal BMI"), ("sex", "Female"))
GAP_ATTRIBUTES = ("sex", "age_band", "bmi_band")
HEADLINE_SETS = (
    ("test", "real test split (cohort prevalence)"),
    ("heldout", "balanced held-out cohort"),
    ("ood_test", "out of distribution: the held-out vendor or site's test patients (its prevalence)"),
    ("ood_heldout", "out of distribution: the held-out vendor or site's balanced held-out cohort"),
)


def headline_lines(fairness: pd.DataFrame, evaluation_set: str) -> list[str]:
    """Overall and rare-group balanced accuracy per strategy, and each gap's change vs real only."""
    table = fairness[fairness["evaluation_set"] == evaluation_set]
    ba = table[table["metric"] == "balanced_accuracy"].set_index(["strategy", "group"])["mean"]
    gaps = table[(table["metric"] == "balanced_accuracy_gap")].set_index(["strategy", "attribute"])["mean"]
    lines = [f"{'strategy':30s} {'overall':>8s} " + " ".join(f"{g:>11s}" for _, g in RARE_GROUPS)
             + " " + " ".join(f"{'gap ' + a.split('_')[0]:>14s}" for a in GAP_ATTRIBUTES)]
    for strategy in table["strategy"].drop_duplicates():
        cells = [f"{ba.get((strategy, 'Overall'), float('nan')):8.3f}"]
        cells += [f"{ba.get((strategy, g), float('nan')):11.3f}" for _, g in RARE_GROUPS]
        for attribute in GAP_ATTRIBUTES:
            gap, ref = gaps.get((strategy, attribute), float("nan")), gaps.get(("real", attribute), float("nan"))
            change = f"{(gap - ref) / ref:+.0%}" if strategy != "real" and ref == ref and ref > 0 else ""
            cells.append(f"{gap:7.3f} {change:>6s}")
        lines.append(f"{strategy:30s} " + " ".join(cells))
    return lines


def shift_lines(fairness: pd.DataFrame, in_set: str, out_set: str) -> list[str]:
    """Per strategy: balanced accuracy in and out of distribution, the drop, and the gain over real in each."""
    values = shift_values(fairness, in_set, out_set, fairness["strategy"].drop_duplicates().tolist())
    lines = [f"{'strategy':32s} {'in':>7s} {'out':>7s} {'out-in':>7s} {'vs real in':>11s} {'vs real out':>12s}"]
    for row in values.itertuples():
        gains = ("", "") if row.strategy == "real" else (f"{row.gain_in:+.3f}", f"{row.gain_out:+.3f}")
        lines.append(f"{row.strategy:32s} {row.ba_in:7.3f} {row.ba_out:7.3f} {row.drop:+7.3f} "
                     f"{gains[0]:>11s} {gains[1]:>12s}")
    return lines
