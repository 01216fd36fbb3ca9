"""Fairness (Table 2 and beyond) and realism (Table 1: FID/KID, diversity) metrics and reports.

Fairness: `fairness.fairness_metrics(predictions)` -> one long table (per strategy, evaluation
set, group and metric, with bootstrap CIs: `groups`, `group_metrics`, `bootstrap`, `summary`,
`paired`); `table2.table2(...)` reads the paper's Table 2 off it; `fairness_report` writes
the Markdown, CSV and plots (`fairness_tables`, `fairness_plots`, `report_format`).
Realism: `realism.realism_table(real, synthetic, extractor)`, `attribute_fidelity` (each class
as the attribute predictors see it on real and synthetic frames) and `realism_report`.
`headlines` are the few lines the demo prints at the end.
"""
