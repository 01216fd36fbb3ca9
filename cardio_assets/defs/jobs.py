"""Jobs (what `make demo` runs, stage by stage) and the weekly regeneration schedule."""

from dagster import AssetSelection, DefaultScheduleStatus, RunRequest, define_asset_job, schedule

from cardio_assets.cohort.cells import CELL_KEYS

COHORT_ASSETS = ["cohort_source", "cohort", "cohort_quarantine", "patient_splits", "subgroup_cells"]
GENERATOR_ASSETS = ["diffusion_backbone", "controlnet", "attribute_predictors"]
SYNTHETIC_ASSETS = ["synthetic_frames", "synthetic_qc_log"]

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

generator_job = define_asset_job(
    "generator_job",
    selection=AssetSelection.assets(*GENERATOR_ASSETS),
    description="Train (or load) the diffusion backbone, train the ControlNet and the QC attribute predictors.",
)

synthetic_job = define_asset_job(
    "synthetic_job",
    selection=AssetSelection.assets(*SYNTHETIC_ASSETS),
    description="Generate one cell's quality-controlled synthetic frames (regenerates that partition).",
)


classifiers_job = define_asset_job(
    "classifiers_job",
    selection=AssetSelection.assets("classifier_strategy_runs"),
    description="Train the classifiers of one strategy (the partition), every seed; finished runs are reused.",
)

reports_job = define_asset_job(
    "reports_job",
    selection=AssetSelection.assets("classifier_predictions", "classifier_runs", "fairness_report", "realism_report"),
    description="Gather the classifier runs of every strategy and write the fairness and realism reports.",
)

ablation_generator_job = define_asset_job(
    "ablation_generator_job",
    selection=AssetSelection.assets("label_only_controlnet"),
    description="Conditioning ablation: train the label-only ControlNet (needs the main generator's backbone).",
)

ablation_synthetic_job = define_asset_job(
    "ablation_synthetic_job",
    selection=AssetSelection.assets("label_only_synthetic_frames", "label_only_synthetic_qc_log"),
    description="Conditioning ablation: one cell's synthetic frames from the label-only generator.",
)

ablation_report_job = define_asset_job(
    "ablation_report_job",
    selection=AssetSelection.assets("conditioning_ablation"),
    description="Conditioning ablation: classifiers with each arm's synthetic frames, in and out of distribution.",
)


@schedule(
    job=synthetic_job,
    cron_schedule="0 3 * * 1",
    default_status=DefaultScheduleStatus.STOPPED,
    description=(
        "Mondays 03:00 UTC: regenerate the synthetic frames of all 36 cells, one run per cell (off by default). "
        "With the cardio_automation sensor also on, the classifiers and then the fairness and realism reports "
        "refresh once, after the last cell's run has finished."
    ),
)
def weekly_synthetic_regeneration(context):
    for key in CELL_KEYS:
        yield RunRequest(run_key=f"{context.scheduled_execution_time:%Y%m%d}-{key}", partition_key=key)
