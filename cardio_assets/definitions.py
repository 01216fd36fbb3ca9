"""The Dagster code location: `dagster dev` (workspace.yaml) and `dg dev` load `defs`."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from cardio_assets.defs import checks, cohort_assets, frames_assets, generation_assets, report_assets
from cardio_assets.defs.gpu import GpuResource
from cardio_assets.defs.io_manager import lake_io_manager
from cardio_assets.defs.jobs import cohort_job, frames_job, generator_job, reports_job, synthetic_job, weekly_synthetic_regeneration
from cardio_assets.defs.resources import PipelineSettings

ASSET_MODULES = [cohort_assets, frames_assets, generation_assets, report_assets]

# The one sensor that evaluates the assets' automation conditions (defs/automation.py); naming it
# here replaces Dagster's implicit default sensor, so the UI shows what it does and that it is off.
cardio_automation = AutomationConditionSensorDefinition(
    "cardio_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Off by default. Launches only the classifiers and then the fairness and realism reports, once, after the "
        "synthetic frames changed (the weekly_synthetic_regeneration schedule, or a hand rerun) and every "
        "synthetic run has finished. Never launches frames, generator or synthetic runs: rerunning those by hand "
        "reaches the reports through the next regeneration. Turn it on together with the schedule."
    ),
)


def build_definitions(settings: PipelineSettings, gpu: GpuResource | None = None) -> Definitions:
    """All assets, checks and jobs, wired to one settings resource and its data lake.

    The IO manager gets the settings' own data_lake value: the same EnvVar, or the same folder.
    """
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules([checks]),
        jobs=[cohort_job, frames_job, generator_job, synthetic_job, reports_job],
        schedules=[weekly_synthetic_regeneration],
        sensors=[cardio_automation],
        resources={"settings": settings, "gpu": gpu or GpuResource(), "io_manager": lake_io_manager},
    )


defs = build_definitions(PipelineSettings.bound_to_env_vars())
