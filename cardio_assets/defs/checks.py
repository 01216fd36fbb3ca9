"""Asset checks: the data-quality tests shown in the UI. Blocking ones stop downstream work."""

import warnings

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetIn, MetadataValue, PreviewWarning, asset_check

from cardio_assets.defs.partitions import cell_partitions
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.lake import FrameSet
from cardio_assets.quality import cells_below_minimum, cohort_schema_problems, duplicated_ids, frame_problems, split_leaks

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
    description="No patient in two splits; held-out patients only in 'heldout'; every patient split.",
)
def no_patient_in_two_splits(patient_splits: pd.DataFrame, cohort: pd.DataFrame) -> AssetCheckResult:
    return _result(split_leaks(patient_splits, cohort))


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
