"""Jobs: the cohort preparation (unpartitioned) and the per-cell frames."""

from dagster import AssetSelection, define_asset_job

COHORT_ASSETS = ["cohort_source", "cohort", "cohort_quarantine", "patient_splits", "subgroup_cells"]

cohort_job = define_asset_job(
    "cohort_job",
    selection=AssetSelection.assets(*COHORT_ASSETS),
    description="Read (or generate) the cohort, validate it, split it, count the cells.",
)

frames_job = define_asset_job(
    "frames_job",
    selection=AssetSelection.assets("frames"),
    description="Preprocess one cell's patients into the paper's ED/ES frames.",
)
