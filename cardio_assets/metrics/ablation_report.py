"""The conditioning ablation's report: label-only against label + attributes, in and out of distribution."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cardio_assets.lake.atomic import atomic_write_text
from cardio_assets.metrics.report_format import EVALUATION_SET_TITLES, OOD_PAIRS, markdown_table, write_csv
from cardio_assets.metrics.shift import shift_table, shift_values
from cardio_assets.metrics.table2 import table2

# real-only is the reference; the synthetic strategies are trained once per arm
ABLATION_STRATEGIES = ("real", "real_plus_synth_1x", "synth_only")
LABEL_ONLY_SUFFIX = " (label only)"
LABELS = {"real": "Real", "real_plus_synth_1x": "Real + synth 1x (label + attributes)",
          "real_plus_synth_1x" + LABEL_ONLY_SUFFIX: "Real + synth 1x (label only)",
          "synth_only": "Synth only (label + attributes)", "synth_only" + LABEL_ONLY_SUFFIX: "Synth only (label only)"}


def ablation_strategies(fairness: pd.DataFrame) -> list[str]:
    present = set(fairness["strategy"])
    order = ["real"] + [s + arm for s in ABLATION_STRATEGIES[1:] for arm in ("", LABEL_ONLY_SUFFIX)]
    return [s for s in order if s in present]


def write_ablation_report(fairness: pd.DataFrame, out_dir, kept_images: dict[str, int]) -> tuple[dict[str, Path], pd.DataFrame]:
    """Markdown and CSVs in `out_dir`; returns ({name: path}, the numbers of the in/out comparison on the test sets)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strategies = ablation_strategies(fairness)
    sets = set(fairness["evaluation_set"])
    paths: dict[str, Path] = {"fairness_csv": write_csv(fairness, out / "ablation_fairness_metrics.csv")}
    md = ["# Conditioning ablation: label only against label + attributes", "",
          "Two generators with the same backbone, training frames, masks, steps and seeds: one prompted with the "
          "diagnosis alone, one with the diagnosis, sex, age and BMI (the main pipeline's). Each arm's synthetic frames "
          "train the same classifier strategies with the same seeds; balanced accuracy [95% bootstrap CI] in "
          "distribution and on the held-out vendor or site, and the paired gain over real-only training.", "",
          "Synthetic images kept after QC: " + ", ".join(f"{arm} {int(n)}" for arm, n in kept_images.items())
          + " (the label-only arm's QC checks masks only).", ""]
    summary = pd.DataFrame()
    for in_set, out_set in OOD_PAIRS:
        if in_set not in sets:
            continue
        if out_set in sets:
            md += [f"## {EVALUATION_SET_TITLES[in_set]} / {EVALUATION_SET_TITLES[out_set]}", ""]
            for group in ("Overall", "Age < 60", "Normal BMI"):
                md += [f"{group}:", "", markdown_table(shift_table(fairness, in_set, out_set, strategies, LABELS, "real", group),
                                                       index=False), ""]
            values = shift_values(fairness, in_set, out_set, strategies)
            paths[f"shift_{out_set}"] = write_csv(values, out / f"ablation_{out_set}.csv")
            if in_set == "test":
                summary = values
        else:
            md += [f"## {EVALUATION_SET_TITLES[in_set]}", "", "No vendor or site held out: in distribution only.", ""]
    md += ["## Table 2 of every arm", ""]
    for e in [e for e in EVALUATION_SET_TITLES if e in sets]:
        md += [f"### {EVALUATION_SET_TITLES[e]}", "", markdown_table(table2(fairness, e, strategies, labels=LABELS, with_ci=True)), ""]
    paths["report"] = atomic_write_text(out / "conditioning_ablation.md", "\n".join(md) + "\n")
    return paths, summary
