"""The subgroup-cell table: counts, prevalence, shares and the paper's sampling weights."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardio_assets.cohort.cells import ALL_CELLS


def summarize_cells(cohort: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (all 36, empty ones included).

    - `hf_prevalence`: HF share of the cell's demographic group (sex x age x BMI) in the
      study cohort, the same for its healthy and HF cells;
    - `share_of_cohort`: the cell's share of study patients with a cell;
    - `sampling_weight`: the paper's debiased sampling weight, inversely proportional to
      the cell's size in distribution (its train, validation and test patients: not the
      out-of-distribution vendors' or sites'), normalised to sum to 1 over non-empty cells
      (0 for empty cells);
    - `vendors`, `sites`: the cell's study patients per vendor and site ("A 12 · B 3").
    """
    study = cohort[(cohort["subset"] != "heldout") & cohort["cell"].notna()]
    split_of = dict(zip(splits["patient_id"], splits["split"]))
    per_cell = study.groupby("cell").size()
    heldout = cohort[cohort["subset"] == "heldout"].groupby("cell").size()
    demo_key = study["cell"].str.rsplit("-", n=1).str[0]
    demo_total = demo_key.value_counts()
    demo_hf = demo_key[study["diagnosis"] == "hf"].value_counts()
    split_counts = study.assign(split=study["patient_id"].map(split_of)).groupby(["cell", "split"]).size()

    rows = []
    for cell in ALL_CELLS:
        n = int(per_cell.get(cell.key, 0))
        total = int(demo_total.get(cell.demographic_key, 0))
        rows.append({
            "cell": cell.key,
            "sex": cell.sex,
            "age_band": cell.age_band,
            "bmi_band": cell.bmi_band,
            "diagnosis": cell.diagnosis,
            "n_patients": n,
            "n_train": int(split_counts.get((cell.key, "train"), 0)),
            "n_val": int(split_counts.get((cell.key, "val"), 0)),
            "n_test": int(split_counts.get((cell.key, "test"), 0)),
            "n_heldout": int(heldout.get(cell.key, 0)),
            "n_ood_test": int(split_counts.get((cell.key, "ood_test"), 0)),
            "vendors": _counts_text(study.loc[study["cell"] == cell.key, "vendor"]),
            "sites": _counts_text(study.loc[study["cell"] == cell.key, "site"]),
            "hf_prevalence": (int(demo_hf.get(cell.demographic_key, 0)) / total) if total else np.nan,
            "share_of_cohort": n / len(study) if len(study) else 0.0,
        })
    table = pd.DataFrame(rows)
    in_distribution = table["n_train"] + table["n_val"] + table["n_test"]
    inverse = np.where(in_distribution > 0, 1.0 / in_distribution.clip(lower=1), 0.0)
    table["sampling_weight"] = inverse / inverse.sum() if inverse.sum() > 0 else 0.0
    return table


def _counts_text(values: pd.Series) -> str:
    counts = values.fillna("unknown").astype(str).value_counts().sort_index()
    return " · ".join(f"{name} {n}" for name, n in counts.items())


def without_cell_counts(cohort: pd.DataFrame) -> dict[str, int]:
    """Patients kept without a cell, per reason ("no age", "no sex", ...); a patient lacking
    two attributes counts under both."""
    reasons = cohort.loc[cohort["cell"].isna(), "no_cell_reason"].dropna()
    counts = reasons.str.split("; ").explode().value_counts()
    return {str(k): int(v) for k, v in counts.items()}
