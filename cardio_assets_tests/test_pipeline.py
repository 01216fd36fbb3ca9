"""End to end: materialize the real graph through Dagster on the smoke profile, all 36 cells."""

import json
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
from dagster import AssetCheckEvaluation, AssetCheckKey, AssetKey, DagsterEventType, DagsterInstance

from cardio_assets.classify.strategies import STRATEGY_NAMES
from cardio_assets.cohort.cells import CELL_KEYS
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.lake import mirror
from cardio_assets.lake.object_store import ObjectStore
from cardio_assets.lake.values import read_value
from cardio_assets.metrics.realism import REAL_SYNTHETIC
from cardio_assets.profiles import get_profile
from cardio_assets.run import ABLATION_STAGES, materialize_all


def check_outcomes(instance: DagsterInstance) -> tuple[Counter, dict[AssetCheckKey, list[AssetCheckEvaluation]]]:
    """How often each check was planned, and its evaluations, over every run in the instance."""
    planned, evaluations = Counter(), defaultdict(list)
    for record in instance.get_run_records():
        entries = instance.all_logs(record.dagster_run.run_id, of_type={
            DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION})
        for entry in entries:
            if entry.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
                planned[entry.dagster_event.asset_check_planned_data.asset_check_key] += 1
            else:
                evaluations[entry.asset_check_evaluation.asset_check_key].append(entry.asset_check_evaluation)
    return planned, evaluations


def test_the_whole_graph_materializes(smoke_run):
    settings, instance, summary = smoke_run
    assert summary.failed == []
    lake = summary.data_lake
    profile = get_profile("smoke")
    cohort = read_value(lake / "cohort")
    assert len(cohort) == profile.phantom.n_patients + 36 * profile.phantom.heldout_per_cell
    assert read_value(lake / "cohort_quarantine").empty
    cells = read_value(lake / "subgroup_cells")
    assert cells["cell"].tolist() == list(CELL_KEYS)
    assert cells["n_patients"].sum() == profile.phantom.n_patients
    assert (cells["n_heldout"] == profile.phantom.heldout_per_cell).all()
    # every patient's scanner, as the phantom's truth has it; vendor D is never trained on (the demo's OOD test)
    assert set(cohort["vendor"]) == {"A", "B", "C", "D"} and cohort["site"].notna().all()
    assert cells["n_ood_test"].sum() == ((cohort["vendor"] == "D") & (cohort["subset"] == "study")).sum() > 0

    # ES found from the images agrees with the phantom's ground truth for every patient
    truth = pd.concat([pd.read_csv(f, dtype={"eid": str}) for f in (lake / "phantom").glob("*/*/truth.csv")])
    es_truth = dict(zip(truth["eid"], truth["es_frame"]))
    assert (cohort["es_from"] == "images").all()
    off = (cohort["es_frame"] - cohort["patient_id"].map(es_truth)).abs()
    # near ES the cavity barely changes between neighbouring frames: on the noisiest, least contrasted
    # scanner (D) the images can pick a frame beside it (seen: 1 of 27 D patients, 1-2 frames off)
    assert off.max() <= 2 and (off == 0).mean() >= 0.95
    assert (off[cohort["vendor"] != "D"] == 0).all()

    splits = read_value(lake / "patient_splits")
    n_images = 0
    for key in CELL_KEYS:
        frames = read_value(lake / "frames" / key)
        n_images += len(frames)
        assert frames.images.shape[1:] == (3, profile.frames.size, profile.frames.size)
        assert set(frames.index["cell"]) <= {key}
        expected = splits[splits["cell"] == key]
        assert set(frames.index["patient_id"]) == set(expected["patient_id"])  # empty cells give empty partitions
    assert n_images > 0


def test_runs_and_events_are_kept_in_postgres(smoke_run, postgres_url):
    """The instance of the end-to-end run is PostgreSQL-backed, and what Dagster reports of the
    runs is what the server's own tables hold."""
    import sqlalchemy
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    _, instance, _ = smoke_run
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    runs = instance.get_run_records()
    assert runs and all(r.dagster_run.is_success for r in runs)
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            n_runs = connection.execute(sqlalchemy.text("select count(*) from runs")).scalar_one()
            materialized = connection.execute(sqlalchemy.text(
                "select count(distinct asset_key) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")).scalar_one()
    finally:
        engine.dispose()
    assert n_runs == len(runs)
    assert materialized == len(instance.get_asset_keys())


def test_frames_are_in_the_paper_format(smoke_run):
    _, _, summary = smoke_run
    for key in CELL_KEYS:
        frames = read_value(summary.data_lake / "frames" / key)
        if len(frames) == 0:
            continue
        images = np.asarray(frames.images, dtype=np.float32)
        assert images.min() >= 0 and images.max() <= 1
        np.testing.assert_array_equal(images[:, 0], images[:, 2])
        per_patient = frames.index.groupby(["patient_id", "split"]).size().reset_index(name="n")
        assert (per_patient.loc[per_patient["split"] == "train", "n"] == 9).all()
        assert (per_patient.loc[per_patient["split"] != "train", "n"] == 1).all()
        assert frames.index["prompt"].str.match(r"^(Male|Female), age in \d0s, (normal|overweight|obese) BMI, (healthy|heart failure)$").all()


def test_every_check_ran_and_blocking_ones_passed(smoke_run):
    _, instance, _ = smoke_run
    blocking = [
        ("cohort", "cohort_schema"), ("cohort", "cohort_unique_ids"), ("patient_splits", "no_patient_in_two_splits"),
        ("frames", "frames_valid"), ("synthetic_frames", "synthetic_valid"), ("synthetic_frames", "masks_from_training_only"),
        ("classifier_predictions", "no_evaluation_patient_in_training"), ("fairness_report", "report_rows_present"),
        *[(model, "no_test_patient_in_training") for model in ("diffusion_backbone", "controlnet", "attribute_predictors", "classifier_runs")],
    ]
    planned, evaluations = check_outcomes(instance)
    for asset, check in blocking:
        key = AssetCheckKey(AssetKey(asset), check)
        assert evaluations[key], f"{check} never ran"
        assert len(evaluations[key]) == planned[key], f"{check} was planned but not evaluated in some run"
        assert all(evaluation.passed for evaluation in evaluations[key]), check
    frames_valid = evaluations[AssetCheckKey(AssetKey("frames"), "frames_valid")]
    assert {evaluation.partition for evaluation in frames_valid} == set(CELL_KEYS)  # checked per cell


def test_one_cell_can_be_rematerialized_alone_and_identically(smoke_run):
    settings, instance, summary = smoke_run
    key = next(k for k in CELL_KEYS if len(read_value(summary.data_lake / "frames" / k)) > 0)
    before = read_value(summary.data_lake / "frames" / key)
    images_before = np.array(before.images)
    again = materialize_all(settings, instance, cells=[key], stages=[("frames_job", CELL_KEYS)], log=lambda _: None)
    assert again.failed == []
    after = read_value(summary.data_lake / "frames" / key)
    pd.testing.assert_frame_equal(before.index, after.index)
    np.testing.assert_array_equal(images_before, np.asarray(after.images))


def test_synthetic_frames_account_for_every_request_and_protect_identities(smoke_run):
    _, _, summary = smoke_run
    lake = summary.data_lake
    requested = get_profile("smoke").synthetic_per_cell
    cohort_ids = set(read_value(lake / "cohort")["patient_id"])
    for key in CELL_KEYS:
        log = read_value(lake / "synthetic_qc_log" / key)
        kept = read_value(lake / "synthetic_frames" / key)
        assert len(log) == requested and (log["cell"] == key).all()
        assert len(kept) == int(log["qc_passed"].sum())
        assert log["synthetic"].all() and log["checkpoint_hash"].nunique() == 1
        assert not set(log["source_hash"]) & cohort_ids  # hashes, never patient ids
        assert (log["attempts"].between(1, 3)).all()
        assert (log.loc[~log["qc_passed"], "attempts"] == 3).all()  # dropped only after 3 attempts
        assert (log.loc[~log["qc_passed"], "failure_modes"].str.len() > 0).all()
        assert log["source_frame_qc_passed"].dtype == bool  # the real frames the masks came from, checked the same way
        assert set(log["source_slice_offset"]) <= {-1, 0, 1}


def test_the_smoke_generator_passes_its_calibrated_qc_in_several_cells(smoke_run):
    """Kept synthetic images are what strategies 2-6, the synthetic checks and real-vs-synthetic
    FID run on; QC thresholds are calibrated on the smoke run's real frames, as in every profile."""
    _, _, summary = smoke_run
    lake = summary.data_lake
    kept = {key: len(read_value(lake / "synthetic_frames" / key)) for key in CELL_KEYS}
    cells_with_images = [k for k, n in kept.items() if n > 0]
    assert len(cells_with_images) >= 6, kept
    for key in cells_with_images:
        frames = read_value(lake / "synthetic_frames" / key)
        assert frames.index["synthetic"].all()
        images = np.asarray(frames.images, dtype=np.float32)
        assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_one_synthetic_partition_regenerates_identically(smoke_run):
    settings, instance, summary = smoke_run
    key = CELL_KEYS[0]
    before = read_value(summary.data_lake / "synthetic_qc_log" / key)
    again = materialize_all(settings, instance, cells=[key], stages=[("synthetic_job", CELL_KEYS)], log=lambda _: None)
    assert again.failed == []
    pd.testing.assert_frame_equal(before, read_value(summary.data_lake / "synthetic_qc_log" / key))


def test_a_step_on_a_fresh_machine_reads_what_it_needs_from_object_storage(smoke_run, tmp_path):
    """The end-to-end lake is an S3 bucket: steps run again with an empty working copy, as on a new
    pod, fetch their inputs (asset values, phantom patient files, models, the privacy salt, the
    memorization index) and give the same outputs."""
    settings, instance, summary = smoke_run
    fresh = PipelineSettings(**{**settings.model_dump(), "lake_cache": str(tmp_path / "empty_copy")})
    frames_key = next(k for k in CELL_KEYS if len(read_value(summary.data_lake / "frames" / k)) > 0)
    synthetic_key = CELL_KEYS[0]
    try:
        again = materialize_all(fresh, instance, cells=[frames_key], stages=[("frames_job", CELL_KEYS)], log=lambda _: None)
        assert again.failed == []
        np.testing.assert_array_equal(np.asarray(read_value(tmp_path / "empty_copy" / "frames" / frames_key).images),
                                      np.asarray(read_value(summary.data_lake / "frames" / frames_key).images))
        again = materialize_all(fresh, instance, cells=[synthetic_key], stages=[("synthetic_job", CELL_KEYS)], log=lambda _: None)
        assert again.failed == []
        pd.testing.assert_frame_equal(read_value(tmp_path / "empty_copy" / "synthetic_qc_log" / synthetic_key),
                                      read_value(summary.data_lake / "synthetic_qc_log" / synthetic_key))
        # the models came from the bucket into this copy: asset values name them relative to the lake,
        # not at the first copy's path (which another machine does not have)
        for model in ("diffusion_backbone", "controlnet/controlnet", "attribute_predictors"):
            assert any((tmp_path / "empty_copy" / "models" / model).iterdir()), model
        assert read_value(summary.data_lake / "controlnet")["folder"] == "models/controlnet/controlnet"
    finally:
        mirror.detach(tmp_path / "empty_copy")
    # every asset value and every model is in the bucket, not only in the working copy
    store = ObjectStore(settings.data_lake, json.loads(settings.lake_storage_options))
    published = {key.split("/")[0] for key in (k[len(store.root) + 1:] for k in store.fs.find(store.root))}
    assert {key.path[-1] for key in instance.get_asset_keys()} <= published
    assert {"models", "reports", "phantom", ".secrets"} <= published


def test_reports_are_written_with_all_sections(smoke_run):
    _, instance, summary = smoke_run
    reports = summary.data_lake / "reports"
    fairness = (reports / "fairness" / "fairness_report.md").read_text()
    for section in ("## Models used", "## Table 2", "Balanced held-out set", "random initialisation"):
        assert section in fairness, section
    table = read_value(summary.data_lake / "fairness_report")
    assert {"strategy", "evaluation_set", "attribute", "group", "n_patients", "n_hf", "metric", "mean", "std", "ci_low", "ci_high"} <= set(table.columns)
    assert set(table["evaluation_set"]) == {"test", "heldout", "ood_test", "ood_heldout"}
    predictions = read_value(summary.data_lake / "classifier_predictions")
    splits = read_value(summary.data_lake / "patient_splits")
    train_ids = set(splits.loc[splits["split"].isin(["train", "val"]), "patient_id"])
    assert not set(predictions["patient_id"]) & train_ids  # evaluated only on test and held-out patients
    vendor_of = read_value(summary.data_lake / "cohort").set_index("patient_id")["vendor"]
    ood = predictions["evaluation_set"].str.startswith("ood_")
    assert set(vendor_of[predictions.loc[ood, "patient_id"]]) == {"D"}
    assert "D" not in set(vendor_of[predictions.loc[~ood, "patient_id"]])
    assert "## In and out of distribution" in fairness and (reports / "fairness" / "distribution_shift_ood_test.csv").is_file()
    assert (reports / "phantom_scanners.png").is_file()
    source = instance.get_latest_materialization_event(AssetKey("cohort_source")).asset_materialization.metadata
    assert "data:image/png;base64," in source["scanners"].value  # the grid, shown in the UI
    predictors = instance.get_latest_materialization_event(AssetKey("attribute_predictors")).asset_materialization.metadata
    assert predictors["texture_augmentation_max_blur_px"].value == get_profile("smoke").attribute_texture_blur
    # the ceiling of what the frames show, and of every parameter beside it (the crop leaves out chest wall)
    assert "ceiling_all_parameters" in predictors["validation_balanced_accuracy"].value.records[0].data
    realism = (reports / "realism" / "realism_report.md").read_text()
    assert "FID" in realism and "trained here on real frames" in realism
    assert f"Synthetic frames sampled with: {get_profile('smoke').diffusion.sampling_summary()}." in realism
    assert "## The held-out scanners" in realism
    # every attribute's classes as the predictors see them on real and kept synthetic frames
    as_drawn = pd.read_csv(reports / "realism" / "attributes_as_drawn.csv")
    assert "## Attributes as drawn" in realism and set(as_drawn["attribute"]) == {"sex", "age_band", "bmi_band", "diagnosis"}
    assert (as_drawn["n_synthetic"] > 0).all() and as_drawn["synthetic_mean_p"].between(0, 1).all()
    qc = pd.read_csv(reports / "realism" / "qc_by_cell.csv")
    assert "## Quality control per cell" in realism and len(qc) == len(CELL_KEYS) and qc["source_frames_pass_rate"].between(0, 1).all()
    qc_slices = pd.read_csv(reports / "realism" / "qc_by_slice.csv")
    assert qc_slices["requested"].sum() == qc["requested"].sum() and set(qc_slices["source_slice_offset"]) <= {-1, 0, 1}
    sharpness = pd.read_csv(reports / "realism" / "sharpness.csv")
    assert "## Sharpness" in realism and sharpness["frame"].tolist() == ["ED", "ES"] and (sharpness["synthetic_over_real"] > 0).all()
    # the extractor trained on the training frames Table 1 compares: its memorisation is measured
    memorisation = pd.read_csv(reports / "realism" / "extractor_memorisation.csv")
    assert len(memorisation) == 2 and memorisation["n"].ge(2).all() and memorisation["fid"].notna().all()
    shift = pd.read_csv(reports / "realism" / "scanner_shift.csv")
    assert "real, training scanners - real, held-out scanners" in set(shift["comparison"]) and (shift["n"] > 0).all()


def test_every_strategy_trained_and_is_reported(smoke_run):
    _, _, summary = smoke_run
    lake = summary.data_lake
    runs = read_value(lake / "classifier_runs")
    ran = runs[runs["skipped_reason"].isna()] if "skipped_reason" in runs else runs
    assert set(ran["strategy"]) == set(STRATEGY_NAMES)  # none skipped for lack of synthetic images
    assert (ran.loc[ran["strategy"] != "real", "n_train_synthetic"] > 0).all()
    fairness = read_value(lake / "fairness_report")
    assert set(fairness["strategy"]) == set(STRATEGY_NAMES)


def test_realism_compares_real_with_synthetic_images(smoke_run):
    _, _, summary = smoke_run
    table = read_value(summary.data_lake / "realism_report")
    synthetic_rows = table[table["kind"] == REAL_SYNTHETIC]
    assert len(synthetic_rows) > 0
    assert np.isfinite(synthetic_rows["fid_mean"]).any()


def test_the_conditioning_ablation_compares_a_label_only_generator_in_and_out_of_distribution(smoke_run):
    settings, instance, summary = smoke_run
    ablation = materialize_all(settings, instance, stages=ABLATION_STAGES, log=lambda _: None)
    assert ablation.failed == []
    lake = ablation.data_lake
    fairness = read_value(lake / "conditioning_ablation")
    arms = set(fairness["strategy"])
    assert arms == {"real", "real_plus_synth_1x", "synth_only", "real_plus_synth_1x (label only)", "synth_only (label only)"}
    assert {"test", "ood_test"} <= set(fairness["evaluation_set"])
    # the label-only generator was told the diagnosis and nothing else; its QC checked masks only
    logs = pd.concat([read_value(lake / "label_only_synthetic_qc_log" / key) for key in CELL_KEYS])
    assert set(logs["prompt"]) == {"heart failure", "healthy"}
    assert not logs["failure_modes"].fillna("").str.contains("attribute:").any()
    main = pd.concat([read_value(lake / "synthetic_qc_log" / key) for key in CELL_KEYS])
    assert main["prompt"].str.contains("BMI").all()
    report = (lake / "reports" / "ablation" / "conditioning_ablation.md").read_text()
    assert "Synth only (label only)" in report and "Out of distribution" in report
    # the main arm's classifiers were read from the run store, not trained again: their predictions are the main run's
    main_fairness = read_value(lake / "fairness_report")

    def overall(table, strategy, evaluation_set):
        rows = table[(table["strategy"] == strategy) & (table["evaluation_set"] == evaluation_set)
                     & (table["metric"] == "balanced_accuracy") & (table["group"] == "Overall")]
        return float(rows["mean"].iloc[0])

    for strategy in ("real", "real_plus_synth_1x", "synth_only"):
        for evaluation_set in ("test", "ood_test"):
            assert overall(fairness, strategy, evaluation_set) == overall(main_fairness, strategy, evaluation_set)
    # and left the main graph's run store as it was: its reports still gather every run
    again = materialize_all(settings, instance, stages=[("reports_job", None)], log=lambda _: None)
    assert again.failed == []
    pd.testing.assert_frame_equal(read_value(lake / "fairness_report"), main_fairness)
