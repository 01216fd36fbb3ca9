"""Real-data folders as they come: blanks, one-frame cines, wrong ES masks, byte-order
marks, Latin-1, CRLF, truncated files. Each layout goes through the cohort stage in
Dagster; every bad patient must be named in `cohort_quarantine` (reason and file), every
patient without attributes kept without a cell and counted, the blocking checks passed."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from cardio_assets.cohort.readers import scan_acdc, scan_mms, scan_ukbb
from cardio_assets.cohort.validation import validate_entries
from cardio_assets.defs.check_rules import cohort_schema_problems
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.lake.values import read_value
from cardio_assets.run import materialize_all
from cardio_assets_tests.layouts import make_patients, write_acdc_cohort, write_mms_cohort, write_ukbb_cohort

BLOCKING = [("cohort", "cohort_schema"), ("cohort", "cohort_unique_ids"), ("patient_splits", "no_patient_in_two_splits")]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _materialize_cohort(tmp_path, source, paths, truncated, ood_holdout="auto"):
    """Truncate the cine of patient `truncated`, then run the cohort stage in Dagster with
    every blocking check passed; returns (cohort, quarantine, splits, cohort metadata)."""
    _truncate(paths.patients[truncated]["image"])
    settings = PipelineSettings(profile="smoke", data_lake=str(tmp_path / "lake"), source=source, source_root=str(paths.root),
                                metadata_csv=str(paths.metadata or ""), workers=1, ood_holdout=ood_holdout)
    instance = DagsterInstance.ephemeral()
    summary = materialize_all(settings, instance, stages=[("cohort_job", None)], log=lambda _: None)
    assert summary.failed == []
    for asset, check in BLOCKING:
        records = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(AssetKey(asset), check), limit=10)
        assert [r.status for r in records] == [AssetCheckExecutionRecordStatus.SUCCEEDED], check
    lake = summary.data_lake
    metadata = instance.get_latest_materialization_event(AssetKey("cohort")).asset_materialization.metadata
    return read_value(lake / "cohort"), read_value(lake / "cohort_quarantine"), read_value(lake / "patient_splits"), metadata


def _assert_quarantined(quarantine, expected):
    """`expected`: patient id -> (reason, file). One row each, naming the patient, and no other rows."""
    for pid, (reason, file) in expected.items():
        rows = quarantine[quarantine["patient_id"] == pid]
        assert rows[["reason", "file"]].values.tolist() == [[reason, str(file)]], pid
        assert pid in rows["detail"].iloc[0]
    assert len(quarantine) == len(expected)


def _assert_cellless_counted(cohort, splits, metadata, expected_reasons):
    """Patients without a cell are kept, split (never into a cell), and counted by reason."""
    cellless = cohort[cohort["cell"].isna()].set_index("patient_id")["no_cell_reason"].to_dict()
    assert cellless == expected_reasons
    assert metadata["n_without_cell"].value == len(expected_reasons)
    counts = pd.Series([r for v in expected_reasons.values() for r in v.split("; ")]).value_counts().to_dict()
    assert metadata["without_cell_by_reason"].value == counts
    split_of = splits.set_index("patient_id")
    assert set(expected_reasons) <= set(split_of.index)
    assert split_of.loc[list(expected_reasons), "cell"].isna().all()


# --- blanks in every attribute column pass the schema check -----------------------------------


@pytest.mark.parametrize("source", ["ukbb", "mms", "acdc"])
def test_blank_attributes_keep_the_patient_and_pass_the_schema_check(tmp_path, source):
    patients = make_patients(2) + [
        {"id": "9001", "sex": None}, {"id": "9002", "age": None}, {"id": "9003", "bmi": None},
        {"id": "9004", "sex": None, "age": None, "bmi": None},
    ]
    if source == "ukbb":
        paths = write_ukbb_cohort(tmp_path, patients + [{"id": "9005", "icd10": [], "raw": {"41270-0.0": ""}}])
        scan = scan_ukbb(paths.root, paths.metadata)
    elif source == "mms":
        paths = write_mms_cohort(tmp_path, patients + [{"id": "9005", "pathology": ""}])
        scan = scan_mms(paths.root, paths.metadata)
    else:
        acdc = [{**p, "id": i + 1} for i, p in enumerate(patients)] + [{"id": 9, "group": ""}]
        paths = write_acdc_cohort(tmp_path, acdc)
        scan = scan_acdc(paths.root)
    cohort, quarantine = validate_entries(scan.entries)
    assert scan.quarantine == [] and quarantine.empty
    assert len(cohort) == len(scan.entries) == 7
    assert cohort_schema_problems(cohort) == []
    assert (cohort["cell"].isna() == cohort["no_cell_reason"].notna()).all()
    if source != "acdc":  # ACDC has no sex or age: nobody has a cell
        reasons = cohort.set_index("patient_id")["no_cell_reason"]
        assert reasons["9001"] == "no sex" and reasons["9002"] == "no age" and reasons["9003"] == "no BMI"
        assert reasons["9004"] == "no sex; no age; no BMI"
        assert cohort["cell"].notna().sum() == 2 + (source == "ukbb")  # UKB: no I50 code is healthy


# --- the three layouts through Dagster ---------------------------------------------------------


def test_ukbb_folder_with_blanks_one_frame_cines_and_bad_es_masks(tmp_path):
    patients = make_patients(4) + [
        {"id": "2001", "sex": None},
        {"id": "2002", "bmi": None},
        {"id": "2003", "age": None, "age_visit0": 52},  # age only at recruitment
        {"id": "2004", "cine_frames": 1, "es": 0},
        {"id": "2005", "es_mask": "ed"},
        {"id": "2006", "es_mask": (10, 10)},
        {"id": "2007"},  # truncated below
        {"id": "2008", "age": 150},
    ]
    # a byte-order mark and CRLF line ends, as Windows tools write them
    paths = write_ukbb_cohort(tmp_path, patients, encoding="utf-8-sig", crlf=True)
    assert paths.metadata.read_bytes().startswith(b"\xef\xbb\xbf") and b"\r\n" in paths.metadata.read_bytes()
    files = paths.patients
    cohort, quarantine, splits, metadata = _materialize_cohort(tmp_path, "ukbb", paths, truncated="2007")

    _assert_quarantined(quarantine, {
        "2004": ("single_frame_cine", files["2004"]["image"].absolute()),
        "2005": ("es_equals_ed", files["2005"]["es_mask"].absolute()),
        "2006": ("es_mask_matches_no_frame", files["2006"]["es_mask"].absolute()),
        "2007": ("unreadable_image", files["2007"]["image"].absolute()),
        "2008": ("implausible_age", f"{paths.metadata}:{2 + [p['id'] for p in patients].index('2008')}"),
    })
    assert sorted(cohort["patient_id"]) == sorted(p["id"] for p in make_patients(4)) + ["2001", "2002", "2003"]
    _assert_cellless_counted(cohort, splits, metadata, {
        "2001": "no sex", "2002": "no BMI", "2003": "age only at another visit"})
    assert (cohort["es_from"] == "images").all() and (cohort["es_agreement"] > 0.8).all()
    truth = {p["id"]: p.get("es", 3) for p in patients}
    assert (cohort["es_frame"] == cohort["patient_id"].map(truth)).all()


def test_ukbb_instance_fallback_is_opt_in_and_recorded(tmp_path):
    paths = write_ukbb_cohort(tmp_path, [{"id": "1", "age": None, "age_visit0": 52}, {"id": "2", "age": 66, "age_visit0": 58}])
    off = {e.patient_id: e for e in scan_ukbb(paths.root, paths.metadata).entries}
    assert off["1"].age is None and off["1"].extra["other_visit_only"] == ["age"]
    assert off["2"].age == 66 and "instance_fallback" not in off["2"].extra  # instance 2 wins
    on = {e.patient_id: e for e in scan_ukbb(paths.root, paths.metadata, instance_fallback=True).entries}
    assert on["1"].age == 52 and on["1"].extra["instance_fallback"] == {"age": "21003-0.0"}
    assert on["2"].age == 66 and "instance_fallback" not in on["2"].extra


def test_ukbb_instance_fallback_setting_comes_from_the_environment(monkeypatch):
    assert PipelineSettings.from_env().ukbb_instance_fallback is False
    monkeypatch.setenv("CARDIO_UKBB_INSTANCE_FALLBACK", "1")
    assert PipelineSettings.from_env().ukbb_instance_fallback is True


def test_mms_folder_latin1_semicolons_blanks_and_one_frame_cines(tmp_path):
    patients = make_patients(4, prefix="A") + [
        {"id": "B1", "sex": None},
        {"id": "B2", "age": None},
        {"id": "B3", "bmi": None},  # no height or weight
        {"id": "B4", "cine_frames": 1},
        {"id": "B5", "es_mask": (10, 10)},
        {"id": "B6"},  # truncated below
        {"id": "B7", "height": 100.0, "weight": 150.0},  # BMI 150
        {"id": "B8", "vendor": "", "vendor_name": "Général Électrique", "centre": "Hôpital Nord", "raw": {"Weight": "69,4"}},
        {"id": "B9", "vendor": "", "vendor_name": "", "centre": ""},  # scanner unknown
    ]
    for p, vendor in zip(patients, "ABCD"):
        p["vendor"] = vendor
    # an old Windows export: Latin-1, semicolons, a decimal comma; vendor C left out of training
    paths = write_mms_cohort(tmp_path, patients, sep=";", encoding="latin-1", crlf=True)
    files = paths.patients
    cohort, quarantine, splits, metadata = _materialize_cohort(tmp_path, "mms", paths, truncated="B6", ood_holdout="vendor=C")
    scanner = {pid: tuple(None if pd.isna(x) else x for x in pair)
               for pid, *pair in zip(cohort["patient_id"], cohort["vendor"], cohort["site"])}
    assert scanner["A1000003"] == ("C", "1")
    assert scanner["B8"] == ("Général Électrique", "Hôpital Nord")  # no letter: the name
    assert scanner["B9"] == (None, None)
    assert splits.set_index("patient_id").loc["A1000003", "split"] == "ood_test"
    assert set(splits.loc[splits["split"] == "ood_test", "patient_id"]) == {"A1000003"}

    line_b7 = 2 + [p["id"] for p in patients].index("B7")
    _assert_quarantined(quarantine, {
        "B4": ("single_frame_cine", files["B4"]["image"].absolute()),
        "B5": ("es_mask_matches_no_frame", files["B5"]["labels"].absolute()),
        "B6": ("unreadable_image", files["B6"]["image"].absolute()),
        "B7": ("implausible_bmi", f"{paths.metadata}:{line_b7}"),
    })
    _assert_cellless_counted(cohort, splits, metadata, {"B1": "no sex", "B2": "no age", "B3": "no BMI"})
    b8 = cohort.set_index("patient_id").loc["B8"]
    assert json.loads(b8["extra"])["vendor_name"] == "Général Électrique" and b8["bmi"] == pytest.approx(69.4 / 1.7**2)


def test_acdc_folder_with_byte_order_marks_crlf_latin1_and_one_frame_cines(tmp_path):
    patients = [
        {"id": 1, "info_encoding": "utf-8-sig"},
        {"id": 2, "info_crlf": True},
        {"id": 3, "info_encoding": "latin-1",
         "info_cfg": "ED: 1\nES: 4\nGroup: NOR\nHeight: 170\nNbFrame: 8\nWeight: 70\nComment: échographie\n"},
        {"id": 4, "bmi": None},
        {"id": 5, "cine_frames": 1},
        {"id": 6, "es_mask": (10, 10)},
        {"id": 7},  # truncated below
        {"id": 8, "height": 100.0, "weight": 150.0},
    ]
    paths = write_acdc_cohort(tmp_path, patients)
    assert paths.patients["patient001"]["info"].read_bytes().startswith(b"\xef\xbb\xbf")
    files = paths.patients
    cohort, quarantine, splits, metadata = _materialize_cohort(tmp_path, "acdc", paths, truncated="patient007")

    _assert_quarantined(quarantine, {
        "patient005": ("single_frame_cine", files["patient005"]["image"].absolute()),
        "patient006": ("es_mask_matches_no_frame", files["patient006"]["es_mask"].absolute()),
        "patient007": ("unreadable_image", files["patient007"]["image"].absolute()),
        "patient008": ("implausible_bmi", files["patient008"]["info"].absolute()),
    })
    # ACDC records no sex or age: every patient is kept without a cell, and counted
    _assert_cellless_counted(cohort, splits, metadata, {
        "patient001": "no sex; no age", "patient002": "no sex; no age", "patient003": "no sex; no age",
        "patient004": "no sex; no age; no BMI"})
    assert cohort.set_index("patient_id").loc["patient001", "es_frame"] == 3
