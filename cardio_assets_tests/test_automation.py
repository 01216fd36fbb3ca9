"""The automation chain over simulated time: weekly regeneration -> classifiers -> reports, nothing else.

Each tick evaluates the real definitions' automation conditions over the `cardio_automation`
sensor's target, as the daemon would, against an instance where materializations are reported as
the runs would write them. Nothing is executed: the assets need data and GPUs, the conditions only
need the event log.
"""

from datetime import datetime, timedelta, timezone

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultSensorStatus,
    build_schedule_context,
    evaluate_automation_conditions,
)

from cardio_assets.classify.strategies import STRATEGY_NAMES
from cardio_assets.cohort.cells import CELL_KEYS
from cardio_assets.definitions import defs

GRAPH = defs.resolve_asset_graph()
SENSOR = defs.resolve_sensor_def("cardio_automation")
SCHEDULE = defs.resolve_schedule_def("weekly_synthetic_regeneration")
# the classifiers' six strategy partitions and the realism report (which reads the synthetic frames)
# first; once they are written, the runs' table and the fairness report that read every partition
FIRST_WAVE = {"classifier_strategy_runs", "realism_report"}
SECOND_WAVE = {"classifier_predictions", "classifier_runs", "fairness_report"}
CLASSIFIERS_AND_REPORTS = FIRST_WAVE | SECOND_WAVE
MONDAY_3AM = datetime(2025, 1, 6, 3, tzinfo=timezone.utc)  # a Monday


class Sensor:
    """The automation sensor's ticks: what each one requests, with the cursor carried between them."""

    def __init__(self, instance: DagsterInstance):
        self.instance, self.cursor = instance, None

    def tick(self, at: datetime) -> dict[str, set]:
        result = evaluate_automation_conditions(
            defs=defs, instance=self.instance, asset_selection=SENSOR.asset_selection, cursor=self.cursor, evaluation_time=at
        )
        self.cursor = result.cursor
        requested = {key.to_user_string(): result.get_requested_partitions(key) for key in GRAPH.get_all_asset_keys()}
        return {key: partitions for key, partitions in requested.items() if partitions}


def materialize(instance: DagsterInstance, *keys: str, partitions=None):
    """Report what a run writes: every given asset (in the order given), each partition of the partitioned ones."""
    for key in keys:
        partitions_def = GRAPH.get(AssetKey(key)).partitions_def
        written = partitions or (partitions_def.get_partition_keys() if partitions_def else [None])
        for partition in written:
            instance.report_runless_asset_event(AssetMaterialization(key, partition=partition))


def queue_weekly_regeneration(instance: DagsterInstance, at: datetime) -> list[str]:
    """The real schedule's tick: one queued run per cell, whose planned materializations mark the cells in progress."""
    context = build_schedule_context(instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def())
    job = defs.resolve_job_def(SCHEDULE.job_name)
    cells = []
    for request in SCHEDULE.evaluate_tick(context).run_requests:
        instance.create_run_for_job(job_def=job, tags={**request.tags, "dagster/partition": request.partition_key})
        cells.append(request.partition_key)
    return cells


def regenerate(instance: DagsterInstance, cells: list[str]):
    """The queued runs of these cells write their synthetic frames."""
    materialize(instance, "synthetic_frames", "synthetic_qc_log", partitions=cells)


@pytest.fixture
def built():
    """The whole graph materialized once (as `make demo` leaves it), and the sensor's first tick."""
    instance = DagsterInstance.ephemeral()
    materialize(instance, *(key.to_user_string() for key in GRAPH.toposorted_asset_keys))
    sensor = Sensor(instance)
    assert sensor.tick(MONDAY_3AM - timedelta(days=1)) == {}
    yield instance, sensor
    instance.dispose()


def test_weekly_regeneration_requests_classifiers_and_reports_once_after_the_last_cell(built):
    instance, sensor = built
    for week in range(2):
        monday = MONDAY_3AM + timedelta(weeks=week)
        cells = queue_weekly_regeneration(instance, monday)
        assert sorted(cells) == sorted(CELL_KEYS)
        assert sensor.tick(monday + timedelta(minutes=1)) == {}
        regenerate(instance, cells[:12])
        # 24 cells still queued: no retraining on a third of the new synthetic data
        assert sensor.tick(monday + timedelta(hours=1)) == {}
        regenerate(instance, cells[12:])
        # every strategy's classifiers (one run each) and the realism report, then what reads them all
        assert sensor.tick(monday + timedelta(hours=3)) == {"classifier_strategy_runs": set(STRATEGY_NAMES), "realism_report": {None}}
        assert sensor.tick(monday + timedelta(hours=3, minutes=1)) == {}
        materialize(instance, *FIRST_WAVE)
        assert sensor.tick(monday + timedelta(hours=4)) == {key: {None} for key in SECOND_WAVE}
        materialize(instance, *SECOND_WAVE)
        # not again until the next regeneration, a week later
        for hours in range(4, 7 * 24, 12):
            assert sensor.tick(monday + timedelta(hours=hours)) == {}


@pytest.mark.parametrize(("key", "partitions"), [
    ("frames", [CELL_KEYS[0]]), ("diffusion_backbone", None), ("controlnet", None), ("attribute_predictors", None),
])
def test_hand_rerun_upstream_of_synthetic_frames_requests_nothing_until_the_regeneration(built, key, partitions):
    instance, sensor = built
    materialize(instance, key, partitions=partitions)
    # in particular not the 36 synthetic partitions, which all read every frames cell and the generator
    assert sensor.tick(MONDAY_3AM - timedelta(hours=12)) == {}
    assert sensor.tick(MONDAY_3AM - timedelta(hours=11)) == {}
    # the change reaches the classifiers and reports through the next regeneration
    regenerate(instance, queue_weekly_regeneration(instance, MONDAY_3AM))
    assert set(sensor.tick(MONDAY_3AM + timedelta(hours=3))) == FIRST_WAVE


def test_hand_rerun_of_one_synthetic_cell_refreshes_classifiers_and_reports_once(built):
    instance, sensor = built
    regenerate(instance, [CELL_KEYS[0]])
    assert set(sensor.tick(MONDAY_3AM - timedelta(hours=12))) == FIRST_WAVE
    assert sensor.tick(MONDAY_3AM - timedelta(hours=11)) == {}
    materialize(instance, *FIRST_WAVE)
    assert set(sensor.tick(MONDAY_3AM - timedelta(hours=10))) == SECOND_WAVE
    materialize(instance, *SECOND_WAVE)
    assert sensor.tick(MONDAY_3AM - timedelta(hours=9)) == {}


def test_nothing_fires_when_nothing_changed(built):
    _, sensor = built
    # through two Mondays, past the schedule's 03:00 and the old 06:00 cron
    for hours in range(0, 9 * 24, 3):
        assert sensor.tick(MONDAY_3AM + timedelta(hours=hours)) == {}


def test_one_automation_sensor_off_by_default_as_the_schedule_says():
    # naming the sensor replaces Dagster's implicit default one: this is the only sensor evaluating conditions
    assert [sensor.name for sensor in defs.get_repository_def().sensor_defs] == [SENSOR.name]
    assert SENSOR.default_status == DefaultSensorStatus.STOPPED
    assert SENSOR.name in SCHEDULE.description and SCHEDULE.name in SENSOR.description
    automated = {key.to_user_string() for key in GRAPH.get_all_asset_keys() if GRAPH.get(key).automation_condition}
    assert automated == CLASSIFIERS_AND_REPORTS
