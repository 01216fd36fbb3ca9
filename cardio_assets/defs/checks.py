"""Asset checks: the data-quality tests shown in the UI. Blocking ones stop downstream work."""

import warnings

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetIn, MetadataValue, PreviewWarning, asset_check

from cardio_assets.cohort.training_patients import CLASSIFIER_FOLDER, FILE_NAME, classifier_run_name, read_training_patients
from cardio_assets.defs.check_rules import (
    CHANCE_Z,
    MEMORIZATION_RMS,
    cells_below_minimum,
    cohort_schema_problems,
    duplicated_ids,
    evaluation_leaks,
    foreign_sources,
    frame_problems,
    memorization_problems,
    missing_report_rows,
    runs_not_beating_chance,
    runs_that_ran,
    skipped_strategies,
    split_leaks,
    training_leaks,
    unrecorded_runs,
)
from cardio_assets.defs.partitions import cell_partitions
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.generation.synthesis import patient_hash, privacy_salt
from cardio_assets.lake.mirror import fetched
from cardio_assets.lake.values import FrameSet
from cardio_assets.metrics.groups import TABLE2_ROWS

# per-partition asset checks are a Dagster preview feature; we rely on it knowingly
warnings.filterwarnings("ignore", category=PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")


def _result(problems: list[str], **metadata) -> AssetCheckResult:
    return AssetCheckResult(passed=not problems, metadata={"problems": MetadataValue.json(problems), **metadata})


@asset_check(asset="cohort", blocking=True, description="Columns present, values in range, cell agrees with attributes.")
def cohort_schema(cohort: pd.DataFrame) -> AssetCheckResult:
    return _result(cohort_schema_problems(cohort), n_patients=len(cohort))


@asset_check(asset="cohort", blocking=True, description="Every patient id appears once.")
def cohort_unique_ids(cohort: pd.DataFrame) -> AssetCheckResult:
    dups = duplicated_ids(cohort)
    return _result([f"duplicated ids: {dups[:10]}"] if dups else [])


@asset_check(
    asset="cohort",
    additional_ins={"cohort_quarantine": AssetIn()},
    description="Share of quarantined patients under the profile's threshold (warning).",
)
def quarantine_share(settings: PipelineSettings, cohort: pd.DataFrame, cohort_quarantine: pd.DataFrame) -> AssetCheckResult:
    n_bad = cohort_quarantine["patient_id"].nunique()  # a patient may have several problems
    total = len(cohort) + n_bad
    share = n_bad / total if total else 0.0
    limit = settings.get_profile().max_quarantine_share
    return AssetCheckResult(
        passed=share <= limit,
        severity=AssetCheckSeverity.WARN,
        metadata={"share": share, "limit": limit, "n_quarantined": n_bad},
    )


@asset_check(
    asset="patient_splits",
    additional_ins={"cohort": AssetIn()},
    blocking=True,
    description="No patient in two splits; held-out patients only in 'heldout'; every patient split; "
                "no patient of an out-of-distribution vendor or site in a training, validation or in-distribution split.",
)
def no_patient_in_two_splits(settings: PipelineSettings, patient_splits: pd.DataFrame, cohort: pd.DataFrame) -> AssetCheckResult:
    return _result(split_leaks(patient_splits, cohort, settings.ood_policy()))


@asset_check(asset="subgroup_cells", description="Cells with fewer training patients than the profile's minimum (warning: the generator must borrow masks).")
def cell_minimum_counts(settings: PipelineSettings, subgroup_cells: pd.DataFrame) -> AssetCheckResult:
    minimum = settings.get_profile().min_train_patients_per_cell
    low = cells_below_minimum(subgroup_cells, minimum)
    return AssetCheckResult(
        passed=low.empty,
        severity=AssetCheckSeverity.WARN,
        metadata={"minimum": minimum, "cells_below": MetadataValue.json(dict(zip(low["cell"], low["n_train"].astype(int))))},
    )


@asset_check(asset="frames", partitions_def=cell_partitions, blocking=True, description="Images in [0, 1], no NaN, right shape; canonical labels; 9 images per training patient, 1 otherwise.")
def frames_valid(settings: PipelineSettings, frames: FrameSet) -> AssetCheckResult:
    return _result(frame_problems(frames, settings.get_profile().frames.size), n_images=len(frames))


@asset_check(asset="synthetic_frames", partitions_def=cell_partitions, additional_ins={"synthetic_qc_log": AssetIn()},
             description="Every requested image is accounted for; the requested count was reached (warning: the documented shortfall after QC).")
def synthetic_count(settings: PipelineSettings, synthetic_frames: FrameSet, synthetic_qc_log: pd.DataFrame) -> AssetCheckResult:
    requested = settings.get_profile().synthetic_per_cell
    accounted = len(synthetic_qc_log) == requested and len(synthetic_frames) == int(synthetic_qc_log["qc_passed"].sum())
    return AssetCheckResult(
        passed=accounted and len(synthetic_frames) == requested,
        severity=AssetCheckSeverity.ERROR if not accounted else AssetCheckSeverity.WARN,
        metadata={"requested": requested, "accepted": len(synthetic_frames), "shortfall": requested - len(synthetic_frames)},
    )


@asset_check(asset="synthetic_frames", partitions_def=cell_partitions, blocking=True, description="Pixels in [0, 1], no NaN, right shape, canonical labels; tagged synthetic.")
def synthetic_valid(settings: PipelineSettings, synthetic_frames: FrameSet) -> AssetCheckResult:
    problems = frame_problems(synthetic_frames, settings.get_profile().frames.size)
    if len(synthetic_frames) and not synthetic_frames.index["synthetic"].all():
        problems.append("rows not tagged synthetic")
    return _result(problems, n_images=len(synthetic_frames))


@asset_check(asset="synthetic_qc_log", partitions_def=cell_partitions, description="QC pass rate above the profile's threshold (warning).")
def qc_pass_rate(settings: PipelineSettings, synthetic_qc_log: pd.DataFrame) -> AssetCheckResult:
    rate = float(synthetic_qc_log["qc_passed"].mean()) if len(synthetic_qc_log) else 1.0
    limit = settings.get_profile().min_qc_pass_rate
    modes = synthetic_qc_log.loc[~synthetic_qc_log["qc_passed"], "failure_modes"].value_counts().head(5).to_dict()
    metadata = {"pass_rate": rate, "limit": limit, "top_failure_modes": MetadataValue.json(modes)}
    if "source_frame_qc_passed" in synthetic_qc_log and len(synthetic_qc_log):  # logs written before 2026.12.2 lack it
        metadata["source_frames_pass_rate"] = float(synthetic_qc_log["source_frame_qc_passed"].mean())
    return AssetCheckResult(passed=rate >= limit, severity=AssetCheckSeverity.WARN, metadata=metadata)


@asset_check(asset="synthetic_qc_log", partitions_def=cell_partitions,
             description=f"Memorization: no synthetic image within RMS {MEMORIZATION_RMS} of its nearest real training image (warning).")
def memorization(synthetic_qc_log: pd.DataFrame) -> AssetCheckResult:
    kept = synthetic_qc_log[synthetic_qc_log["qc_passed"]]
    if kept.empty:
        return AssetCheckResult(passed=True, metadata={"n_images": 0})
    problems = memorization_problems(synthetic_qc_log, MEMORIZATION_RMS)
    return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.WARN, metadata={
        "problems": MetadataValue.json(problems), "threshold_rms": MEMORIZATION_RMS,
        "min_rms": float(kept["nearest_real_rms"].min()), "median_rms": float(kept["nearest_real_rms"].median()),
    })


@asset_check(asset="synthetic_frames", partitions_def=cell_partitions, blocking=True,
             additional_ins={"patient_splits": AssetIn()}, description="Every mask and prompt came from a training patient (none from validation, test or held-out).")
def masks_from_training_only(settings: PipelineSettings, synthetic_frames: FrameSet, patient_splits: pd.DataFrame) -> AssetCheckResult:
    salt = privacy_salt(settings.lake_dir())
    train = {patient_hash(p, salt) for p in patient_splits.loc[patient_splits["split"] == "train", "patient_id"]}
    foreign = foreign_sources(synthetic_frames.index["source_hash"], train) if len(synthetic_frames) else []
    return _result([f"{len(foreign)} source patients outside the training split"] if foreign else [])


@asset_check(asset="classifier_predictions", blocking=True, additional_ins={"patient_splits": AssetIn()},
             description="Every classifier is evaluated only on test and held-out patients, never on patients it trained or selected on.")
def no_evaluation_patient_in_training(classifier_predictions: pd.DataFrame, patient_splits: pd.DataFrame) -> AssetCheckResult:
    return _result(evaluation_leaks(classifier_predictions, patient_splits))


@asset_check(asset="classifier_runs",
             description=f"Every classifier run beats chance: validation AUROC above 0.5 + {CHANCE_Z} standard deviations of a random "
                         "scorer's AUROC on the same validation size, which a random scorer passes 5% of the time (warning).")
def classifiers_beat_chance(classifier_runs: pd.DataFrame) -> AssetCheckResult:
    # the validation balanced accuracy cannot judge chance: it is measured at the threshold
    # chosen on those same scores, and a constant prediction already scores 0.5
    ran, skipped = runs_that_ran(classifier_runs), skipped_strategies(classifier_runs)
    weak = runs_not_beating_chance(ran) if len(ran) else pd.DataFrame()
    problems = [f"{classifier_run_name(r.strategy, r.seed)}: validation AUROC {r.val_auroc:.3f}, chance bound {r.chance_bound:.3f}"
                for r in weak.itertuples()]
    if ran.empty:
        problems.append("no classifier run trained")
    return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.WARN, metadata={
        "runs_at_or_below_chance": MetadataValue.json(problems),
        "skipped_strategies": MetadataValue.json(skipped),
    })


@asset_check(asset="fairness_report", additional_ins={"classifier_runs": AssetIn()},
             description="Every Table 2 row is present for every strategy that ran (empty groups give NaN with their counts).")
def report_rows_present(fairness_report: pd.DataFrame, classifier_runs: pd.DataFrame) -> AssetCheckResult:
    return _result(missing_report_rows(fairness_report, TABLE2_ROWS, runs_that_ran(classifier_runs)["strategy"].unique()))


# Leakage, proven: every model records the patients it trained and validated on
# (cardio_assets/cohort/training_patients.py); these checks hold those records against the splits.
LEAKAGE = "No patient it trained or validated on (models/{}/training_patients.parquet) is a test or held-out patient."


def _training_record_result(settings: PipelineSettings, folder: str, patient_splits: pd.DataFrame, runs) -> AssetCheckResult:
    """A model without a record fails: nothing would prove it never saw a test patient."""
    recorded = read_training_patients(fetched(settings.models_dir() / folder / FILE_NAME).parent)
    if recorded is None:
        return _result([f"no {FILE_NAME} in models/{folder}: the patients it trained on are unknown"])
    per_role = recorded.groupby("role")["patient_id"].nunique().to_dict()
    return _result(training_leaks(recorded, patient_splits) + unrecorded_runs(recorded, runs), patients_per_role=MetadataValue.json(per_role))


@asset_check(asset="diffusion_backbone", name="no_test_patient_in_training", blocking=True,
             additional_ins={"patient_splits": AssetIn()}, description=LEAKAGE.format("diffusion_backbone"))
def backbone_no_test_patient_in_training(settings: PipelineSettings, diffusion_backbone: dict, patient_splits: pd.DataFrame) -> AssetCheckResult:
    if not diffusion_backbone["trained_here"]:
        # a local Stable Diffusion was trained elsewhere, on none of this cohort's patients
        return AssetCheckResult(passed=True, metadata={"trained_here": False})
    return _training_record_result(settings, "diffusion_backbone", patient_splits, ["diffusion_backbone"])


@asset_check(asset="controlnet", name="no_test_patient_in_training", blocking=True,
             additional_ins={"patient_splits": AssetIn()}, description=LEAKAGE.format("controlnet"))
def controlnet_no_test_patient_in_training(settings: PipelineSettings, patient_splits: pd.DataFrame) -> AssetCheckResult:
    return _training_record_result(settings, "controlnet", patient_splits, ["controlnet"])


@asset_check(asset="attribute_predictors", name="no_test_patient_in_training", blocking=True,
             additional_ins={"patient_splits": AssetIn()}, description=LEAKAGE.format("attribute_predictors"))
def attribute_predictors_no_test_patient_in_training(settings: PipelineSettings, patient_splits: pd.DataFrame) -> AssetCheckResult:
    return _training_record_result(settings, "attribute_predictors", patient_splits, ["attribute_predictors"])


@asset_check(asset="classifier_runs", name="no_test_patient_in_training", blocking=True,
             additional_ins={"patient_splits": AssetIn()}, description=LEAKAGE.format(CLASSIFIER_FOLDER) + " Every run that trained is recorded.")
def classifiers_no_test_patient_in_training(settings: PipelineSettings, classifier_runs: pd.DataFrame, patient_splits: pd.DataFrame) -> AssetCheckResult:
    ran = runs_that_ran(classifier_runs)
    runs = [classifier_run_name(s, seed) for s, seed in zip(ran["strategy"], ran["seed"])]
    return _training_record_result(settings, CLASSIFIER_FOLDER, patient_splits, runs)
