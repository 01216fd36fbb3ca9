"""The fairness and realism reports: Markdown, CSV and PNG plots, written atomically.

`write_fairness_report(fairness, out_dir, runs)` and `write_realism_report(realism, out_dir,
diversity)` take the tables of `fairness.fairness_metrics` and `realism.realism_table` /
`realism.diversity_table`, write their files (each to a temporary name, then `os.replace`)
and return {name: path}.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cardio_assets.lake.atomic import atomic_write_file, atomic_write_text  # noqa: E402
from cardio_assets.metrics.fairness import (  # noqa: E402
    ALL_GROUPS,
    ATTRIBUTE_TITLES,
    GROUP_ORDER,
    TABLE2_ROWS,
    _strategy_sort_key,
    format_mean_std,
    table2,
)
from cardio_assets.metrics.realism import REAL_REAL, REAL_SYNTHETIC, TABLE1_ATTRIBUTES  # noqa: E402

EVALUATION_SET_TITLES = {
    "test": "Test set (the cohort's prevalence)",
    "heldout": "Balanced held-out set (equal patients per cell)",
}
FAIRNESS_SECTIONS = (
    "Models used", "Table 2: balanced accuracy per group", "Per-cell results", "Intersectional subgroups",
    "Gaps and their change versus real", "Underdiagnosis gap", "AUROC", "Paired comparisons against real", "Plots",
)
REALISM_SECTIONS = ("Feature extractor", "Table 1: FID (KID) per subgroup", "Diversity")


# --------------------------------------------------------------------------- writing


def _atomic_csv(frame: pd.DataFrame, path: Path, index: bool = False) -> Path:
    return atomic_write_text(path, frame.to_csv(index=index))


def _atomic_savefig(fig, path: Path) -> Path:
    try:
        return atomic_write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (no tabulate dependency)."""
    frame = frame.reset_index() if index else frame
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt_ci(mean: float, std: float, lo: float, hi: float, digits: int = 3) -> str:
    text = format_mean_std(mean, std, digits)
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def _fmt_diff(mean: float, lo: float, hi: float, p: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    text = f"{mean:+.{digits}f}"
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    if np.isfinite(p):
        text += f" p={p:.3f}"
    return text


# --------------------------------------------------------------------------- fairness


def _strategies(fairness: pd.DataFrame, strategies=None) -> list[str]:
    if strategies is not None:
        return list(strategies)
    return sorted(fairness["strategy"].unique(), key=_strategy_sort_key)


def _labels(strategies, labels: dict[str, str] | None) -> dict[str, str]:
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
                row[labels[s]] = (_fmt_ci(h["mean"], h["std"], h["ci_low"], h["ci_high"]) if with_ci
                                  else format_mean_std(h["mean"], h["std"]))
            rows.append(row)
    return pd.DataFrame(rows).set_index("group") if rows else pd.DataFrame()


def _attribute_metric_table(fairness, evaluation_set, metric, strategies, labels, reference="real",
                            attributes=("sex", "bmi_band", "age_band", "sex_x_age", "sex_x_bmi", "demographic_cell",
                                        "cell")) -> pd.DataFrame:
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
                   metric: _fmt_ci(h["mean"], h["std"], h["ci_low"], h["ci_high"])}
            d = a[(a["strategy"] == s) & (a["metric"] == f"{metric}_vs_{reference}")]
            r = a[(a["strategy"] == s) & (a["metric"] == f"{metric}_relative_change_vs_{reference}")]
            row[f"change vs {reference}"] = (_fmt_diff(d["mean"].iloc[0], d["ci_low"].iloc[0], d["ci_high"].iloc[0],
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
            row[labels[s]] = (_fmt_diff(hit["mean"].iloc[0], hit["ci_low"].iloc[0], hit["ci_high"].iloc[0],
                                        hit["p_share"].iloc[0]) if len(hit) else "n/a")
        rows.append(row)
    return pd.DataFrame(rows).set_index("group") if rows else pd.DataFrame()


def plot_group_accuracy(fairness: pd.DataFrame, evaluation_set: str, strategies, labels, path: Path) -> Path:
    """Balanced accuracy per Table 2 group, one bar per strategy, 95% CI as error bars."""
    sub = fairness[(fairness["evaluation_set"] == evaluation_set) & (fairness["metric"] == "balanced_accuracy")]
    groups = [g for _, g in TABLE2_ROWS]
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(groups)), 4.5))
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
    ax.set_ylim(0.0, 1.05)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_title(f"Balanced accuracy per group: {EVALUATION_SET_TITLES.get(evaluation_set, evaluation_set)}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _atomic_savefig(fig, path)


def plot_gap_vs_accuracy(fairness: pd.DataFrame, evaluation_set: str, strategies, labels, path: Path) -> Path:
    """One panel per attribute: overall balanced accuracy (x) vs its gap (y), a point per strategy."""
    sub = fairness[fairness["evaluation_set"] == evaluation_set]
    attributes = ("sex", "age_band", "bmi_band")
    fig, axes = plt.subplots(1, len(attributes), figsize=(4.2 * len(attributes), 4), sharey=True)
    overall = sub[(sub["attribute"] == "overall") & (sub["metric"] == "balanced_accuracy")]
    for ax, attribute in zip(np.atleast_1d(axes), attributes):
        gaps = sub[(sub["attribute"] == attribute) & (sub["metric"] == "balanced_accuracy_gap")]
        for s in strategies:
            o, g = overall[overall["strategy"] == s], gaps[gaps["strategy"] == s]
            if not len(o) or not len(g):
                continue
            ax.errorbar(o["mean"].iloc[0], g["mean"].iloc[0], xerr=_nz(o["std"].iloc[0]), yerr=_nz(g["std"].iloc[0]),
                        fmt="o", capsize=2, label=labels[s])
            ax.annotate(labels[s], (o["mean"].iloc[0], g["mean"].iloc[0]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_title(f"{ATTRIBUTE_TITLES[attribute]} gap")
        ax.set_xlabel("overall balanced accuracy")
    np.atleast_1d(axes)[0].set_ylabel("balanced accuracy gap (best - worst group)")
    fig.suptitle(f"Fairness vs accuracy: {EVALUATION_SET_TITLES.get(evaluation_set, evaluation_set)}")
    return _atomic_savefig(fig, path)


def _nz(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0


def write_fairness_report(fairness: pd.DataFrame, out_dir, runs: pd.DataFrame | None = None, strategies=None,
                          labels: dict[str, str] | None = None, reference: str = "real",
                          title: str = "Fairness of the heart-failure classifiers") -> dict[str, Path]:
    """Markdown report + CSV tables + PNG plots in `out_dir`; returns {name: path}.

    `runs`: one row per strategy x seed (`classify.strategies.run_record`), for the models
    section (weights provenance, best epoch, threshold, alpha)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strategies = _strategies(fairness, strategies)
    labels = _labels(strategies, labels)
    evaluation_sets = [e for e in ("test", "heldout") if e in set(fairness["evaluation_set"])]
    evaluation_sets += sorted(set(fairness["evaluation_set"]) - set(evaluation_sets))
    paths: dict[str, Path] = {}
    md: list[str] = [f"# {title}", ""]
    n_seeds = fairness.groupby("strategy")["n_seeds"].max().to_dict() if len(fairness) else {}
    md += [
        "Balanced accuracy = (TPR + TNR) / 2. Values are mean ± std over seeds (runs); brackets hold 95% "
        "confidence intervals from bootstrap resamples of patients (within cells, seeded). The decision "
        "threshold of each run was chosen on its validation set. "
        + ", ".join(f"{labels[s]}: {int(n_seeds.get(s, 0))} seed(s)" for s in strategies) + ".",
        "",
    ]

    md += ["## Models used", ""]
    if runs is not None and len(runs):
        cols = [c for c in ("strategy", "seed", "model_description", "best_epoch", "val_balanced_accuracy", "threshold",
                            "alpha", "n_train_real", "n_train_synthetic", "seconds", "skipped_reason") if c in runs]
        r = runs[cols].copy()
        if "best_epoch" in r:
            r["best_epoch"] = (r["best_epoch"] + 1).astype("Int64")  # strategies that could not run have none
        md += [markdown_table(r, index=False), ""]
        provenance = sorted(set(runs["model_description"].dropna().astype(str))) if "model_description" in runs else []
        md += [f"- {p}" for p in provenance] + [""]
    else:
        md += ["Run records were not given to the report.", ""]

    md += ["## Table 2: balanced accuracy per group", ""]
    for e in evaluation_sets:
        t2 = table2(fairness, e, strategies, labels=labels)
        paths[f"table2_{e}"] = _atomic_csv(t2, out / f"table2_{e}.csv", index=True)
        md += [f"### {EVALUATION_SET_TITLES.get(e, e)}", "", markdown_table(t2), ""]

    md += ["## Per-cell results", "",
           "Each of the 36 cells holds one class, so its accuracy is the sensitivity of an HF cell or the "
           "specificity of a healthy cell. Balanced accuracy per demographic cell (sex x age x BMI) follows.", ""]
    for e in evaluation_sets:
        md += [f"### {EVALUATION_SET_TITLES.get(e, e)}", "",
               markdown_table(group_table(fairness, e, ["cell"], "accuracy", strategies, labels)), "",
               markdown_table(group_table(fairness, e, ["demographic_cell"], "balanced_accuracy", strategies, labels)),
               ""]

    md += ["## Intersectional subgroups", ""]
    for e in evaluation_sets:
        md += [f"### {EVALUATION_SET_TITLES.get(e, e)}", "",
               markdown_table(group_table(fairness, e, ["sex_x_age", "sex_x_bmi"], "balanced_accuracy", strategies,
                                          labels, with_ci=True)), ""]

    md += ["## Gaps and their change versus real", "",
           "Gap = best minus worst group balanced accuracy, computed on the seed-averaged group values; "
           "change = strategy minus real on the same bootstrap resamples (p: two-sided bootstrap share). "
           "Gaps over many small groups are biased upwards by their noise; compare them between strategies.", ""]
    for e in evaluation_sets:
        md += [f"### {EVALUATION_SET_TITLES.get(e, e)}", "",
               markdown_table(_attribute_metric_table(fairness, e, "balanced_accuracy_gap", strategies, labels,
                                                      reference), index=False), "",
               "Worst-group balanced accuracy:", "",
               markdown_table(_attribute_metric_table(fairness, e, "worst_group_balanced_accuracy", strategies, labels,
                                                      reference), index=False), ""]

    md += ["## Underdiagnosis gap", "",
           "False-negative rate (share of HF patients missed) per group, and the underdiagnosis gap = worst minus "
           "best group FNR.", ""]
    for e in evaluation_sets:
        md += [f"### {EVALUATION_SET_TITLES.get(e, e)}", "",
               markdown_table(group_table(fairness, e, ["sex", "bmi_band", "age_band"], "fnr", strategies, labels,
                                          with_ci=True)), "",
               markdown_table(_attribute_metric_table(fairness, e, "underdiagnosis_gap", strategies, labels,
                                                      reference), index=False), ""]

    md += ["## AUROC", ""]
    for e in evaluation_sets:
        md += [f"### {EVALUATION_SET_TITLES.get(e, e)}", "",
               markdown_table(group_table(fairness, e, ["overall", "sex", "bmi_band", "age_band"], "auroc", strategies,
                                          labels, with_ci=True)), "",
               markdown_table(_attribute_metric_table(fairness, e, "auroc_gap", strategies, labels, reference,
                                                      attributes=("sex", "bmi_band", "age_band", "sex_x_age",
                                                                  "sex_x_bmi")), index=False), ""]

    md += ["## Paired comparisons against real", "",
           f"Balanced accuracy of each strategy minus {labels.get(reference, reference)} on the same patients: "
           "difference of the seed means [95% bootstrap CI] and p = 2 x min(share of resampled differences <= 0, "
           "share >= 0).", ""]
    for e in evaluation_sets:
        pt = paired_table(fairness, e, strategies, labels, reference)
        md += [f"### {EVALUATION_SET_TITLES.get(e, e)}", "",
               markdown_table(pt) if len(pt) else f"No `{reference}` runs to compare with.", ""]

    md += ["## Plots", ""]
    for e in evaluation_sets:
        p1 = plot_group_accuracy(fairness, e, strategies, labels, out / f"balanced_accuracy_by_group_{e}.png")
        p2 = plot_gap_vs_accuracy(fairness, e, strategies, labels, out / f"gap_vs_accuracy_{e}.png")
        paths[f"balanced_accuracy_by_group_{e}"] = p1
        paths[f"gap_vs_accuracy_{e}"] = p2
        md += [f"![Balanced accuracy per group, {e}]({p1.name})", "", f"![Gap vs accuracy, {e}]({p2.name})", ""]

    paths["fairness_csv"] = _atomic_csv(fairness, out / "fairness_metrics.csv")
    if runs is not None and len(runs):
        paths["runs_csv"] = _atomic_csv(runs, out / "runs.csv")
    paths["report"] = atomic_write_text(out / "fairness_report.md", "\n".join(md) + "\n")
    return paths


# --------------------------------------------------------------------------- realism


def table1(realism: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 shape: per attribute, rows real-real / real-synthetic, a column per
    comparison (A - A, A - B, B - B) with `FID mean (std)`, and KID beside it."""
    rows = []
    for title, _, _, _ in TABLE1_ATTRIBUTES:
        a = realism[realism["attribute"] == title]
        if not len(a):
            continue
        comparisons = list(dict.fromkeys(a["comparison"]))
        for kind in (REAL_REAL, REAL_SYNTHETIC):
            k = a[a["kind"] == kind]
            if not len(k):
                continue
            row = {"attribute": title, "kind": kind}
            for i, c in enumerate(comparisons):
                hit = k[k["comparison"] == c]
                h = hit.iloc[0] if len(hit) else None
                row[f"{c} FID"] = (f"{h['fid_mean']:.2f} ({h['fid_std']:.2f})"
                                            if h is not None and np.isfinite(h["fid_mean"]) else "n/a")
                row[f"{c} KID"] = (f"{h['kid_mean']:.4f} ({h['kid_std']:.4f})"
                                            if h is not None and np.isfinite(h["kid_mean"]) else "n/a")
            rows.append(row)
    return pd.DataFrame(rows)


def write_realism_report(realism: pd.DataFrame, out_dir, diversity: pd.DataFrame | None = None,
                         extractor_description: str | None = None,
                         title: str = "Realism of the synthetic frames") -> dict[str, Path]:
    """Markdown (Table 1 shape, KID beside FID, diversity) + CSVs in `out_dir`; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if extractor_description is None and len(realism):
        extractor_description = "; ".join(sorted(set(realism["extractor"].astype(str))))
    md = [f"# {title}", "", "## Feature extractor", "",
          f"FID and KID were computed with torch-fidelity on features of: **{extractor_description or 'unknown'}**.",
          "Values from a feature extractor other than the standard InceptionV3 compare with each other, not with "
          "published FIDs.", ""]
    md += ["## Table 1: FID (KID) per subgroup", "",
           "FID mean (std) over repeated draws of n images per side (equal n); real-real rows split a subgroup's "
           "patients into two disjoint halves when a subgroup is compared with itself (the lower bound). "
           "Real-synthetic rows compare the real first group with the synthetic second group.", ""]
    if len(realism):
        ns = sorted(set(int(n) for n in realism["n"] if np.isfinite(n)))
        reps = sorted(set(int(r) for r in realism["repeats"]))
        md += [f"n per side: {', '.join(map(str, ns))}; repeats: {', '.join(map(str, reps))}.", ""]
        t1 = table1(realism)
        for title_, group in t1.groupby("attribute", sort=False):
            md += [f"### {title_}", "", markdown_table(group.drop(columns="attribute").dropna(axis=1, how="all"),
                                                       index=False), ""]
        paths["table1"] = _atomic_csv(t1, out / "table1.csv")
        paths["realism_csv"] = _atomic_csv(realism, out / "realism_metrics.csv")
    else:
        md += ["No comparisons were computed.", ""]
    md += ["## Diversity", ""]
    if diversity is not None and len(diversity) and diversity["ms_ssim"].notna().any():
        v = diversity["ms_ssim"].dropna()
        md += [f"Mean pairwise MS-SSIM between images generated from the same prompt and mask (lower = more "
               f"diverse): **{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}** over {len(v)} groups "
               f"({int(diversity['n_images'].sum())} images).", ""]
        if "cell" in diversity and diversity["cell"].notna().any():
            per_cell = (diversity.groupby("cell")["ms_ssim"].agg(["count", "mean"])
                        .rename(columns={"count": "groups", "mean": "mean MS-SSIM"}))
            md += [markdown_table(per_cell), ""]
        paths["diversity_csv"] = _atomic_csv(diversity, out / "diversity.csv")
    else:
        md += ["No prompt/mask group held two or more synthetic images; diversity not measured.", ""]
    paths["report"] = atomic_write_text(out / "realism_report.md", "\n".join(md) + "\n")
    return paths
