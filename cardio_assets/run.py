"""Materialize the whole graph headless: `python -m cardio_assets.run [--profile demo]`.

Runs the same jobs the web UI shows, against the Dagster instance in $DAGSTER_HOME
(so the runs appear in the UI afterwards), then prints where the outputs are.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance

from cardio_assets.classify.strategies import STRATEGY_NAMES
from cardio_assets.cohort.cells import CELL_KEYS
from cardio_assets.definitions import build_definitions
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.lake.values import read_value
from cardio_assets.metrics.headlines import HEADLINE_SETS, headline_lines, shift_lines


@dataclass
class RunSummary:
    data_lake: Path
    seconds: dict[str, float]
    failed: list[str]


# the run log at INFO: Dagster's DEBUG events (every input loaded, every output handled) drown it
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


# (job, its partition keys or None) in the order the graph needs them: a partitioned job runs once per key
STAGES: list[tuple[str, tuple[str, ...] | None]] = [
    ("cohort_job", None),
    ("frames_job", CELL_KEYS),
    ("generator_job", None),
    ("synthetic_job", CELL_KEYS),
    ("classifiers_job", STRATEGY_NAMES),
    ("reports_job", None),
]
# the conditioning ablation (defs/ablation_assets.py), on a lake the stages above have filled
ABLATION_STAGES: list[tuple[str, tuple[str, ...] | None]] = [
    ("ablation_generator_job", None),
    ("ablation_synthetic_job", CELL_KEYS),
    ("ablation_report_job", None),
]


def materialize_all(
    settings: PipelineSettings, instance: DagsterInstance, cells: list[str] | None = None, log=print,
    stages: list[tuple[str, tuple[str, ...] | None]] | None = None,
) -> RunSummary:
    """Run every stage's job (a partitioned job once per key; `cells` narrows the cell-partitioned
    ones); stops at the first failure."""
    defs = build_definitions(settings)
    seconds, failed = {}, []
    for job_name, partition_keys in stages or STAGES:
        job = defs.resolve_job_def(job_name)
        start = time.perf_counter()
        keys = [None] if partition_keys is None else list(cells if cells and partition_keys == CELL_KEYS else partition_keys)
        for i, key in enumerate(keys, 1):
            result = job.execute_in_process(instance=instance, partition_key=key, run_config=RUN_CONFIG, raise_on_error=False)
            if not result.success:
                failed.append(f"{job_name}[{key}]" if key else job_name)
                seconds[job_name] = time.perf_counter() - start
                return RunSummary(settings.lake_dir(), seconds, failed)
            if key:
                log(f"  {job_name} [{i:2d}/{len(keys)}] {key}")
        seconds[job_name] = time.perf_counter() - start
        log(f"{job_name} done in {seconds[job_name]:.0f}s")
    return RunSummary(settings.lake_dir(), seconds, failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=None, help="smoke | demo | paper (default: $CARDIO_PROFILE or demo)")
    parser.add_argument("--ablation", action="store_true",
                        help="run the conditioning ablation (label only vs label + attributes) on a lake the main run made")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ["CARDIO_PROFILE"] = args.profile
    _quiet_model_loading()
    settings = PipelineSettings.from_env()
    try:
        settings.get_profile().diffusion.require_backbone_source(settings.sd_backbone_dir)
    except ValueError as exc:
        print(f"cardio-assets: {exc}")
        return 2
    instance = DagsterInstance.get() if os.getenv("DAGSTER_HOME") else DagsterInstance.ephemeral()
    print(f"cardio-assets: profile {settings.profile}, source {settings.source}, data lake {settings.data_lake}, "
          f"Dagster instance {instance.root_directory if os.getenv('DAGSTER_HOME') else '(in memory: set DAGSTER_HOME to keep the runs)'}")
    if args.ablation:
        return _ablation(settings, instance)
    summary = materialize_all(settings, instance)
    if summary.failed:
        print(f"FAILED: {', '.join(summary.failed)} (see the run log above, or the runs in the web UI)")
        return 1
    lake = summary.data_lake
    print("\nDone. Outputs" + (f" (published to {settings.data_lake}; local working copy below):" if str(lake) != settings.data_lake else ":"))
    for name in ("cohort", "cohort_quarantine", "patient_splits", "subgroup_cells"):
        print(f"  {name:18s} {lake / name / 'table.parquet'}")
    print(f"  {'frames':18s} {lake / 'frames'}/<cell>/ (index.parquet, images.npy, controls.npy)")
    print(f"  {'synthetic_frames':18s} {lake / 'synthetic_frames'}/<cell>/ (tagged synthetic; QC log in synthetic_qc_log/)")
    print(f"  {'models':18s} {lake / 'models'} (diffusion_backbone, controlnet, attribute_predictors)")
    print(f"  {'sample grids':18s} {lake / 'reports' / 'controlnet_samples'}")
    print(f"  {'phantom cohort':18s} {lake / 'phantom'}")
    print(f"\nReports:\n  fairness  {lake / 'reports' / 'fairness' / 'fairness_report.md'}\n  realism   {lake / 'reports' / 'realism' / 'realism_report.md'}")
    fairness = read_value(lake / "fairness_report")
    for evaluation_set, title in HEADLINE_SETS:
        if (fairness["evaluation_set"] == evaluation_set).any():
            print(f"\nBalanced accuracy, {title}; gaps = best minus worst group, change vs real only:")
            print("\n".join("  " + line for line in headline_lines(fairness, evaluation_set)))
    if (fairness["evaluation_set"] == "ood_test").any():
        print("\nIn vs out of distribution (held-out vendor or site, at its prevalence), overall balanced accuracy:")
        print("\n".join("  " + line for line in shift_lines(fairness, "test", "ood_test")))
    print("\nTimings: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary.seconds.items()))
    return 0


def _quiet_model_loading() -> None:
    """No progress bars for loading and saving the small models: the demo loads them ~40 times,
    and their bars (77 lines) buried the run log's events."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _ablation(settings: PipelineSettings, instance: DagsterInstance) -> int:
    summary = materialize_all(settings, instance, stages=ABLATION_STAGES)
    if summary.failed:
        print(f"FAILED: {', '.join(summary.failed)} (the ablation needs a lake the main run made: run make demo first)")
        return 1
    fairness = read_value(summary.data_lake / "conditioning_ablation")
    print(f"\nReport: {summary.data_lake / 'reports' / 'ablation' / 'conditioning_ablation.md'}")
    if (fairness["evaluation_set"] == "ood_test").any():
        print("\nIn vs out of distribution, overall balanced accuracy, each arm:")
        print("\n".join("  " + line for line in shift_lines(fairness, "test", "ood_test")))
    print("\nTimings: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary.seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
