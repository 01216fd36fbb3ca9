"""The Dagster code location: `dagster dev` (workspace.yaml), `dg dev` and `dagster api grpc -m` load `defs`."""

from __future__ import annotations

import os

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    ExecutorDefinition,
    in_process_executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
    multiprocess_executor,
)

from cardio_assets.defs import ablation_assets, checks, cohort_assets, frames_assets, generation_assets, report_assets
from cardio_assets.defs.gpu import GpuResource, data_parallel_from_env
from cardio_assets.defs.io_manager import lake_io_manager
from cardio_assets.defs.jobs import (
    ablation_generator_job,
    ablation_report_job,
    ablation_synthetic_job,
    classifiers_job,
    cohort_job,
    frames_job,
    generator_job,
    reports_job,
    synthetic_job,
    weekly_synthetic_regeneration,
)
from cardio_assets.defs.resources import PipelineSettings

ASSET_MODULES = [cohort_assets, frames_assets, generation_assets, report_assets, ablation_assets]

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


# The executor of every job, chosen by the deployment; unset: Dagster's default (multiprocess; a run's
# config can switch it to in_process), as before. `k8s`: each step in its own pod, sized by its op tags (defs/k8s.py).
EXECUTOR_VAR = "CARDIO_EXECUTOR"
EXECUTORS = ("in_process", "multiprocess", "k8s")


def executor_from_env(environ=None) -> ExecutorDefinition | None:
    """The executor CARDIO_EXECUTOR names, read when the code location loads; None: Dagster's default."""
    name = (os.environ if environ is None else environ).get(EXECUTOR_VAR, "").strip().lower()
    if name in ("", "default"):
        return None
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "k8s":
        from cardio_assets.defs.k8s import k8s_executor  # imports dagster_k8s: only when asked for

        return k8s_executor(environ=environ)
    raise ValueError(f"{EXECUTOR_VAR}={name!r}: choose one of {', '.join(EXECUTORS)} (or leave it unset for Dagster's default)")


def build_definitions(
    settings: PipelineSettings, gpu: GpuResource | None = None, executor: ExecutorDefinition | None = None
) -> Definitions:
    """All assets, checks and jobs, wired to one settings resource and its data lake.

    The IO manager gets the settings' own data_lake value: the same EnvVar, or the same folder.
    `executor` runs every job (None: Dagster's default executor).
    """
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules([checks]),
        jobs=[cohort_job, frames_job, generator_job, synthetic_job, classifiers_job, reports_job,
              ablation_generator_job, ablation_synthetic_job, ablation_report_job],
        schedules=[weekly_synthetic_regeneration],
        sensors=[cardio_automation],
        resources={"settings": settings, "gpu": gpu or GpuResource(data_parallel=data_parallel_from_env()), "io_manager": lake_io_manager},
        executor=executor,
    )


defs = build_definitions(PipelineSettings.bound_to_env_vars(), executor=executor_from_env())
