"""Fairness (Table 2 and beyond) and realism (Table 1: FID/KID, diversity) metrics and reports.

`fairness.fairness_metrics(predictions)` -> long table; `fairness.table2(...)`;
`realism.realism_table(real, synthetic, extractor)`; `report.write_fairness_report(...)`,
`report.write_realism_report(...)`.
"""
