"""The fairness report: Markdown, CSV tables and PNG plots, written atomically.

`write_fairness_report(fairness, out_dir, runs)` takes the long table of
`fairness.fairness_metrics`, writes its files and returns {name: path}. The Markdown has
one section per `FAIRNESS_SECTIONS`, each with a subsection per evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cardio_assets.lake.atomic import atomic_write_text
from cardio_assets.metrics.fairness_plots import plot_gap_vs_accuracy, plot_group_accuracy
from cardio_assets.metrics.fairness_tables import (
    attribute_metric_table,
    group_table,
    paired_table,
    report_labels,
    report_strategies,
)
from cardio_assets.metrics.report_format import EVALUATION_SET_TITLES, OOD_PAIRS, markdown_table, write_csv
from cardio_assets.metrics.shift import shift_table
from cardio_assets.metrics.table2 import table2

FAIRNESS_SECTIONS = (
    "Models used", "Table 2: balanced accuracy per group", "Per-cell results", "Intersectional subgroups",
    "Gaps and their change versus real", "Underdiagnosis gap", "AUROC", "Paired comparisons against real",
    "In and out of distribution", "Plots",
)


# the rare groups, where synthetic data should help most, shown in and out of distribution too
SHIFT_GROUPS = ("Age < 60", "Normal BMI")


@dataclass
class _Report:
    """What every section reads, and the files written so far."""

    fairness: pd.DataFrame
    out: Path
    strategies: list[str]
    labels: dict[str, str]
    reference: str
    evaluation_sets: list[str]
    paths: dict[str, Path] = field(default_factory=dict)


def write_fairness_report(fairness: pd.DataFrame, out_dir, runs: pd.DataFrame | None = None, strategies=None,
                          labels: dict[str, str] | None = None, reference: str = "real",
                          title: str = "Fairness of the heart-failure classifiers") -> dict[str, Path]:
    """Markdown report + CSV tables + PNG plots in `out_dir`; returns {name: path}.

    `runs`: one row per strategy x seed (`classify.strategies.run_record`), for the models
    section (weights provenance, best epoch, threshold, alpha)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strategies = report_strategies(fairness, strategies)
    evaluation_sets = [e for e in EVALUATION_SET_TITLES if e in set(fairness["evaluation_set"])]
    evaluation_sets += sorted(set(fairness["evaluation_set"]) - set(evaluation_sets))
    report = _Report(fairness, out, strategies, report_labels(strategies, labels), reference, evaluation_sets)
    md = [f"# {title}", ""] + _introduction(report)
    md += _models_used(runs)
    md += _table2_section(report)
    md += _per_cell_results(report)
    md += _intersectional_subgroups(report)
    md += _gaps(report)
    md += _underdiagnosis_gap(report)
    md += _auroc(report)
    md += _paired_comparisons(report)
    md += _distribution_shift(report)
    md += _plots(report)
    report.paths["fairness_csv"] = write_csv(fairness, out / "fairness_metrics.csv")
    if runs is not None and len(runs):
        report.paths["runs_csv"] = write_csv(runs, out / "runs.csv")
    report.paths["report"] = atomic_write_text(out / "fairness_report.md", "\n".join(md) + "\n")
    return report.paths


def _subsection(evaluation_set: str) -> list[str]:
    return [f"### {EVALUATION_SET_TITLES.get(evaluation_set, evaluation_set)}", ""]


def _introduction(r: _Report) -> list[str]:
    n_seeds = r.fairness.groupby("strategy")["n_seeds"].max().to_dict() if len(r.fairness) else {}
    return [
        "Balanced accuracy = (TPR + TNR) / 2. Values are mean ± std over seeds (runs); brackets hold 95% "
        "confidence intervals from bootstrap resamples of patients (within cells) and of each strategy's training "
        "runs (its seeds, with replacement), seeded: with few seeds the run-to-run part is understated. The decision "
        "threshold of each run was chosen on its validation set. "
        + ", ".join(f"{r.labels[s]}: {int(n_seeds.get(s, 0))} seed(s)" for s in r.strategies) + ".",
        "",
    ]


def _models_used(runs: pd.DataFrame | None) -> list[str]:
    md = ["## Models used", ""]
    if runs is None or not len(runs):
        return md + ["Run records were not given to the report.", ""]
    cols = [c for c in ("strategy", "seed", "model_description", "best_epoch", "val_balanced_accuracy", "threshold",
                        "alpha", "n_train_real", "n_train_synthetic", "seconds", "skipped_reason") if c in runs]
    table = runs[cols].copy()
    if "best_epoch" in table:
        table["best_epoch"] = (table["best_epoch"] + 1).astype("Int64")  # strategies that could not run have none
    md += [markdown_table(table, index=False), ""]
    provenance = sorted(set(runs["model_description"].dropna().astype(str))) if "model_description" in runs else []
    return md + [f"- {p}" for p in provenance] + [""]


def _table2_section(r: _Report) -> list[str]:
    md = ["## Table 2: balanced accuracy per group", "",
          "Mean ± std over seeds [95% bootstrap CI over patients and runs].", ""]
    for e in r.evaluation_sets:
        t2 = table2(r.fairness, e, r.strategies, labels=r.labels, with_ci=True)
        r.paths[f"table2_{e}"] = write_csv(t2, r.out / f"table2_{e}.csv", index=True)
        md += _subsection(e) + [markdown_table(t2), ""]
    return md


def _per_cell_results(r: _Report) -> list[str]:
    md = ["## Per-cell results", "",
          "Each of the 36 cells holds one class, so its accuracy is the sensitivity of an HF cell or the "
          "specificity of a healthy cell. Balanced accuracy per demographic cell (sex x age x BMI) follows.", ""]
    for e in r.evaluation_sets:
        md += _subsection(e) + [
            markdown_table(group_table(r.fairness, e, ["cell"], "accuracy", r.strategies, r.labels)), "",
            markdown_table(group_table(r.fairness, e, ["demographic_cell"], "balanced_accuracy", r.strategies,
                                       r.labels)), ""]
    return md


def _intersectional_subgroups(r: _Report) -> list[str]:
    md = ["## Intersectional subgroups", ""]
    for e in r.evaluation_sets:
        md += _subsection(e) + [
            markdown_table(group_table(r.fairness, e, ["sex_x_age", "sex_x_bmi"], "balanced_accuracy", r.strategies,
                                       r.labels, with_ci=True)), ""]
    return md


def _gaps(r: _Report) -> list[str]:
    md = ["## Gaps and their change versus real", "",
          "Gap = best minus worst group balanced accuracy, computed on the seed-averaged group values; "
          "change = strategy minus real on the same bootstrap resamples (p: two-sided bootstrap share). "
          "Gaps over many small groups are biased upwards by their noise; compare them between strategies.", ""]
    for e in r.evaluation_sets:
        md += _subsection(e) + [
            markdown_table(_attribute_table(r, e, "balanced_accuracy_gap"), index=False), "",
            "Worst-group balanced accuracy:", "",
            markdown_table(_attribute_table(r, e, "worst_group_balanced_accuracy"), index=False), ""]
    return md


def _underdiagnosis_gap(r: _Report) -> list[str]:
    md = ["## Underdiagnosis gap", "",
          "False-negative rate (share of HF patients missed) per group, and the underdiagnosis gap = worst minus "
          "best group FNR.", ""]
    for e in r.evaluation_sets:
        md += _subsection(e) + [
            markdown_table(group_table(r.fairness, e, ["sex", "bmi_band", "age_band"], "fnr", r.strategies, r.labels,
                                       with_ci=True)), "",
            markdown_table(_attribute_table(r, e, "underdiagnosis_gap"), index=False), ""]
    return md


def _auroc(r: _Report) -> list[str]:
    md = ["## AUROC", ""]
    for e in r.evaluation_sets:
        md += _subsection(e) + [
            markdown_table(group_table(r.fairness, e, ["overall", "sex", "bmi_band", "age_band"], "auroc",
                                       r.strategies, r.labels, with_ci=True)), "",
            markdown_table(_attribute_table(r, e, "auroc_gap", attributes=("sex", "bmi_band", "age_band",
                                                                            "sex_x_age", "sex_x_bmi")),
                           index=False), ""]
    return md


def _attribute_table(r: _Report, evaluation_set: str, metric: str, **kwargs) -> pd.DataFrame:
    return attribute_metric_table(r.fairness, evaluation_set, metric, r.strategies, r.labels, r.reference, **kwargs)


def _paired_comparisons(r: _Report) -> list[str]:
    md = ["## Paired comparisons against real", "",
          f"Balanced accuracy of each strategy minus {r.labels.get(r.reference, r.reference)} on the same patients: "
          "difference of the seed means [95% bootstrap CI] and p = 2 x min(share of resampled differences <= 0, "
          "share >= 0).", ""]
    for e in r.evaluation_sets:
        pt = paired_table(r.fairness, e, r.strategies, r.labels, r.reference)
        md += _subsection(e) + [markdown_table(pt) if len(pt) else f"No `{r.reference}` runs to compare with.", ""]
    return md


def _distribution_shift(r: _Report) -> list[str]:
    md = ["## In and out of distribution", ""]
    pairs = [(i, o) for i, o in OOD_PAIRS if i in r.evaluation_sets and o in r.evaluation_sets]
    if not pairs:
        return md + ["No out-of-distribution evaluation in this run (no vendor or site held out).", ""]
    md += ["Balanced accuracy on the scanners the models trained on and on the held-out vendor or site they never "
           "saw [95% bootstrap CI]; out - in is the loss from the shift; vs real is the paired gain over real-only "
           "training on the same patients, in and out of distribution.", ""]
    for in_set, out_set in pairs:
        md += [f"### {EVALUATION_SET_TITLES[in_set]} / {EVALUATION_SET_TITLES[out_set]}", ""]
        for group in ("Overall",) + SHIFT_GROUPS:
            table = shift_table(r.fairness, in_set, out_set, r.strategies, r.labels, r.reference, group)
            name = f"distribution_shift_{out_set}" + ("" if group == "Overall" else f"_{group}")
            if group == "Overall":
                r.paths[name] = write_csv(table, r.out / f"{name}.csv")
            md += [f"{group}:", "", markdown_table(table, index=False), ""]
    return md


def _plots(r: _Report) -> list[str]:
    md = ["## Plots", ""]
    for e in r.evaluation_sets:
        p1 = plot_group_accuracy(r.fairness, e, r.strategies, r.labels, r.out / f"balanced_accuracy_by_group_{e}.png")
        p2 = plot_gap_vs_accuracy(r.fairness, e, r.strategies, r.labels, r.out / f"gap_vs_accuracy_{e}.png")
        r.paths[f"balanced_accuracy_by_group_{e}"] = p1
        r.paths[f"gap_vs_accuracy_{e}"] = p2
        md += [f"![Balanced accuracy per group, {e}]({p1.name})", "", f"![Gap vs accuracy, {e}]({p2.name})", ""]
    return md
