import pandas as pd

from cardio_assets.metrics.headlines import headline_lines


def _row(strategy, attribute, group, metric, mean):
    return {"strategy": strategy, "evaluation_set": "test", "attribute": attribute, "group": group, "metric": metric, "mean": mean}


def test_headlines_show_rare_groups_and_gap_change_against_real():
    rows = []
    for strategy, overall, young, gap in (("real", 0.74, 0.77, 0.10), ("real_plus_synth_1x", 0.75, 0.82, 0.06)):
        rows += [_row(strategy, "overall", "Overall", "balanced_accuracy", overall),
                 _row(strategy, "age_band", "Age < 60", "balanced_accuracy", young),
                 _row(strategy, "sex", "(all groups)", "balanced_accuracy_gap", gap)]
    lines = headline_lines(pd.DataFrame(rows), "test")
    assert lines[1].startswith("real ") and "0.740" in lines[1] and "0.770" in lines[1]
    assert "0.820" in lines[2] and "-40%" in lines[2]  # (0.06 - 0.10) / 0.10
