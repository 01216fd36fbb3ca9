"""The Dagster code location: `dagster dev` (workspace.yaml) and `dg dev` load `defs`."""

from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from cardio_assets.defs import checks, cohort_assets, frames_assets, generation_assets, report_assets
from cardio_assets.defs.gpu import GpuResource
from cardio_assets.defs.jobs import cohort_job, frames_job, generator_job, reports_job, synthetic_job, weekly_synthetic_regeneration
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.lake import LakeIOManager

ASSET_MODULES = [cohort_assets, frames_assets, generation_assets, report_assets]


def build_definitions(settings: PipelineSettings, gpu: GpuResource | None = None) -> Definitions:
    """All assets, checks and jobs, wired to one settings resource and its data lake."""
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules([checks]),
        jobs=[cohort_job, frames_job, generator_job, synthetic_job, reports_job],
        schedules=[weekly_synthetic_regeneration],
        resources={"settings": settings, "gpu": gpu or GpuResource(), "io_manager": LakeIOManager(base_dir=settings.data_lake)},
    )


defs = build_definitions(PipelineSettings.from_env())
