"""Data-quality rules as plain functions: each returns (passed, details).

The Dagster asset checks in `cardio_assets.defs.checks` call these; tests call them
directly on hand-made tables.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cardio_assets.cohort.cells import AGE_RANGE, BMI_RANGE, DIAGNOSES, SEXES, cell_key_or_none
from cardio_assets.cohort.labels import CANONICAL_LABELS
from cardio_assets.cohort.ood import OOD_SPLITS, OodPolicy
from cardio_assets.cohort.splits import EVALUATION_SETS
from cardio_assets.cohort.validation import COHORT_COLUMNS
from cardio_assets.generation.memorization import MEMORIZATION_RMS
from cardio_assets.lake.values import FrameSet


def cohort_schema_problems(cohort: pd.DataFrame) -> list[str]:
    problems = []
    missing = [c for c in COHORT_COLUMNS if c not in cohort.columns]
    if missing:
        return [f"missing columns {missing}"]
    if not cohort["sex"].dropna().isin(SEXES).all():
        problems.append(f"sex values outside {SEXES}: {sorted(set(cohort['sex'].dropna()) - set(SEXES))}")
    if not cohort["diagnosis"].dropna().isin(DIAGNOSES).all():
        problems.append(f"diagnosis values outside {DIAGNOSES}")
    for col, (lo, hi) in (("age", AGE_RANGE), ("bmi", BMI_RANGE)):
        values = cohort[col].dropna()
        out = values[(values < lo) | (values > hi)]
        if len(out):
            problems.append(f"{len(out)} {col} values outside {lo}-{hi}")
    expected = [cell_key_or_none(s, a, b, d) for s, a, b, d in zip(cohort["sex"], cohort["age"], cohort["bmi"], cohort["diagnosis"])]
    # a missing cell is None, NaN or pd.NA depending on the pandas version and the column's dtype
    wrong = [pid for pid, got, want in zip(cohort["patient_id"], cohort["cell"], expected) if (None if pd.isna(got) else got) != want]
    if wrong:
        problems.append(f"{len(wrong)} patients whose cell disagrees with their attributes, e.g. {wrong[:3]}")
    bad_frames = cohort[(cohort["ed_frame"] >= cohort["n_frames"]) | (cohort["es_frame"] >= cohort["n_frames"])]
    if len(bad_frames):
        problems.append(f"{len(bad_frames)} patients with ED/ES outside the cine")
    return problems


def duplicated_ids(table: pd.DataFrame) -> list[str]:
    return sorted(table.loc[table["patient_id"].duplicated(keep=False), "patient_id"].unique().tolist())


def split_leaks(splits: pd.DataFrame, cohort: pd.DataFrame, ood: OodPolicy | None = None) -> list[str]:
    """Patients in more than one split, held-out patients outside 'heldout'/'ood_heldout', patients
    without a split, and (with an out-of-distribution policy) a held-out vendor's or site's patient
    in a training, validation or in-distribution split, or another's in an out-of-distribution one."""
    problems = []
    multi = splits.groupby("patient_id")["split"].nunique()
    if (multi > 1).any():
        problems.append(f"{int((multi > 1).sum())} patients in more than one split")
    heldout_ids = set(cohort.loc[cohort["subset"] == "heldout", "patient_id"])
    misplaced = splits[splits["patient_id"].isin(heldout_ids) & ~splits["split"].isin(["heldout", "ood_heldout"])]
    if len(misplaced):
        problems.append(f"{len(misplaced)} held-out patients in a training/validation/test split")
    unsplit = set(cohort["patient_id"]) - set(splits["patient_id"])
    if unsplit:
        problems.append(f"{len(unsplit)} cohort patients without a split")
    split_of = cohort["patient_id"].map(dict(zip(splits["patient_id"], splits["split"])))
    in_ood_split = split_of.isin(list(OOD_SPLITS.values())).to_numpy()
    held = ood.held_out(cohort).to_numpy() if ood is not None else np.zeros(len(cohort), bool)
    for rows, what in ((held & ~in_ood_split, f"patients of the held-out {ood} in a training, validation or in-distribution split"),
                       (~held & in_ood_split, "patients of the training vendors or sites in an out-of-distribution split")):
        if rows.any():
            problems.append(f"{int(rows.sum())} {what}, e.g. {sorted(cohort.loc[rows, 'patient_id'])[:3]}")
    return problems


def frame_problems(frames: FrameSet, size: int) -> list[str]:
    n = len(frames.index)
    problems = []
    for name, arr in (("images", frames.images), ("controls", frames.controls)):
        if arr.shape != (n, 3, size, size):
            problems.append(f"{name} shape {arr.shape}, expected {(n, 3, size, size)}")
    if problems or n == 0:
        return problems
    lo, hi, finite = np.inf, -np.inf, True
    for start in range(0, n, 512):  # in chunks: the arrays are memory-mapped
        chunk = np.asarray(frames.images[start : start + 512], dtype=np.float32)
        finite &= bool(np.isfinite(chunk).all())
        lo, hi = min(lo, float(np.nanmin(chunk))), max(hi, float(np.nanmax(chunk)))
        labels = np.unique(frames.controls[start : start + 512])
        if not set(labels.tolist()) <= CANONICAL_LABELS:
            problems.append(f"control labels {sorted(set(labels.tolist()) - CANONICAL_LABELS)} outside the canonical set")
    if not finite:
        problems.append("images hold NaN or inf")
    if lo < 0 or hi > 1:
        problems.append(f"pixel range [{lo:.3f}, {hi:.3f}] outside [0, 1]")
    per_patient = frames.index.groupby(["patient_id", "split"]).size().reset_index(name="n")
    wrong = per_patient[((per_patient["split"] == "train") & (per_patient["n"] > 9)) | ((per_patient["split"] != "train") & (per_patient["n"] != 1))]
    if len(wrong):
        problems.append(f"{len(wrong)} patients with the wrong number of images (train <= 9, others 1)")
    return problems


def cells_below_minimum(cells: pd.DataFrame, minimum: int) -> pd.DataFrame:
    return cells.loc[cells["n_train"] < minimum, ["cell", "n_train"]]


def memorization_problems(qc_log: pd.DataFrame, threshold: float = MEMORIZATION_RMS) -> list[str]:
    """Kept synthetic images closer than `threshold` to a real training image, or never measured.

    Judged from the measured distance rather than the step's `near_copy` flag, so that a
    changed threshold applies without regenerating."""
    rms = qc_log.loc[qc_log["qc_passed"].astype(bool), "nearest_real_rms"]
    problems = []
    near = int((rms < threshold).sum())
    if near:
        problems.append(f"{near} kept images within RMS {threshold} of a real training image")
    unmeasured = int(rms.isna().sum())
    if unmeasured:
        problems.append(f"{unmeasured} kept images never compared with the real training images")
    return problems


def foreign_sources(source_hashes, train_hashes: set[str]) -> list[str]:
    """Source hashes that are not training patients (a mask taken from validation or test)."""
    return sorted(set(source_hashes) - set(train_hashes))


def evaluation_leaks(predictions: pd.DataFrame, splits: pd.DataFrame) -> list[str]:
    """Predictions on patients that any strategy could have trained or selected on (train/val)."""
    split_of = dict(zip(splits["patient_id"], splits["split"]))
    seen = predictions.loc[~predictions["patient_id"].map(split_of).isin(EVALUATION_SETS), "patient_id"].unique()
    return [f"{len(seen)} evaluated patients are not test or held-out patients, e.g. {sorted(seen)[:3]}"] if len(seen) else []


def missing_report_rows(fairness: pd.DataFrame, rows: tuple[tuple[str, str], ...], strategies,
                        required_sets: tuple[str, ...] = ("test",)) -> list[str]:
    """Table 2 rows absent for a strategy and evaluation set (a row may be NaN, with its counts, but must exist).

    The evaluation sets are `required_sets` plus any the report holds: taken from the report
    alone, a report without balanced accuracy rows would have nothing to miss."""
    ba = fairness[fairness["metric"] == "balanced_accuracy"]
    present = set(zip(ba["strategy"], ba["evaluation_set"], ba["attribute"], ba["group"]))
    sets = sorted(set(required_sets) | set(fairness["evaluation_set"]))
    missing = [f"{s}/{e}/{g}" for s in strategies for e in sets for a, g in rows if (s, e, a, g) not in present]
    return [f"{len(missing)} Table 2 rows missing, e.g. {missing[:3]}"] if missing else []


def runs_that_ran(runs: pd.DataFrame) -> pd.DataFrame:
    """Classifier runs that trained (a skipped strategy has a row with its `skipped_reason`)."""
    if "skipped_reason" not in runs.columns:
        return runs
    return runs[runs["skipped_reason"].isna()]


def skipped_strategies(runs: pd.DataFrame) -> list[str]:
    if "skipped_reason" not in runs.columns:
        return []
    return sorted(set(runs.loc[runs["skipped_reason"].notna(), "strategy"]))


# Chance for a classifier. A scorer that ignores the image has validation AUROC 0.5 on
# average, spread by the validation size: AUROC is then the Mann-Whitney U statistic over
# n_pos * n_neg, with standard deviation sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg))
# (Hanley & McNeil 1982 at AUROC 0.5; no ties). A run beats chance when its validation
# AUROC lies above 0.5 + CHANCE_Z of those: a random scorer passes about 5 % of the time
# (one-sided). AUROC does not use the threshold, which is the one thing tuned on validation
# after training (the epoch and alpha are chosen there too; the margin does not correct for that).
CHANCE_Z = 1.645


def chance_auroc_bound(n_pos: int, n_neg: int, z: float = CHANCE_Z) -> float:
    """The validation AUROC a run must exceed to beat chance; infinite without both classes."""
    if n_pos < 1 or n_neg < 1:
        return math.inf
    return 0.5 + z * math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))


def runs_not_beating_chance(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs (strategy, seed, val_auroc, chance_bound) whose validation AUROC is not above the
    chance bound; a run without a recorded AUROC (older tables, one-class validation) cannot
    show it beats chance and is listed too."""
    auroc = runs["val_auroc"].astype(float) if "val_auroc" in runs else pd.Series(np.nan, index=runs.index)
    n_pos = runs["n_val_hf"].astype(int)
    bound = [chance_auroc_bound(p, n - p) for p, n in zip(n_pos, runs["n_val"].astype(int))]
    table = pd.DataFrame({"strategy": runs["strategy"], "seed": runs["seed"], "val_auroc": auroc, "chance_bound": bound})
    return table[~(table["val_auroc"] > table["chance_bound"])]


def training_leaks(training: pd.DataFrame, splits: pd.DataFrame) -> list[str]:
    """Patients a model trained or validated on (`training_patients` table) that are test or
    held-out patients, or that the split table does not know (then nothing proves where they belong)."""
    split_of = training["patient_id"].map(dict(zip(splits["patient_id"], splits["split"])))
    problems = []
    for what, rows in (("test or held-out", split_of.isin(EVALUATION_SETS)), ("unknown", split_of.isna())):
        bad = training[rows.to_numpy()]
        if len(bad):
            problems.append(f"{bad['patient_id'].nunique()} {what} patients used for {sorted(set(bad['role']))} by "
                            f"{sorted(set(bad['run']))[:3]}, e.g. {sorted(set(bad['patient_id']))[:3]}")
    return problems


def unrecorded_runs(training: pd.DataFrame, runs) -> list[str]:
    """Runs that trained but left no record of their patients (their leakage is unproven)."""
    missing = sorted(set(runs) - set(training["run"]))
    return [f"{len(missing)} runs without a record of their patients, e.g. {missing[:3]}"] if missing else []
