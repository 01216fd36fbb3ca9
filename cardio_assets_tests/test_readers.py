"""The layout readers: values parsed, label maps chosen, frames converted, and every
reader-level quarantine reason, on tiny cohorts written by `layouts`."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardio_assets.cohort.labels import ACDC_MAP, IDENTITY_MAP
from cardio_assets.cohort.readers import (
    ACDC_DIAGNOSIS_DEFAULT,
    MMS_DIAGNOSIS_DEFAULT,
    QUARANTINE_REASONS,
    SOURCES,
    MetadataFormatError,
    SourceMissingError,
    scan_acdc,
    scan_mms,
    scan_ukbb,
)
from cardio_assets.cohort.readers.diagnosis import map_diagnosis, resolve_diagnosis_map
from cardio_assets.cohort.readers.ukbb import UkbColumns
from cardio_assets_tests.layouts import (
    cartoon_cine,
    make_patients,
    write_acdc_cohort,
    write_mms_cohort,
    write_ukbb_cohort,
)


def by_id(result):
    return {e.patient_id: e for e in result.entries}


def reasons(result):
    return sorted((q.patient_id, q.reason) for q in result.quarantine)


# --- fixture writers ------------------------------------------------------------------------


def test_cartoon_heart_lv_smallest_at_es_and_files_valid(tmp_path):
    cine, labels = cartoon_cine(ed=1, es=5)
    lv = [(labels[..., t] == 1).sum() for t in range(labels.shape[-1])]
    assert int(np.argmax(lv)) == 1 and int(np.argmin(lv)) == 5
    assert cine.dtype == np.int16 and cine.shape == (24, 24, 4, 8)
    assert cine[labels == 1].mean() > 3 * cine[labels == 2].mean()
    paths = write_acdc_cohort(tmp_path, [{"id": 1, "ed": 0, "es": 3}])
    files = paths.patients["patient001"]
    gt = np.asarray(nib.load(files["ed_mask"]).dataobj)
    assert set(np.unique(gt)) == {0, 1, 2, 3}
    assert (gt == 3).sum() == (labels_at(0, 3) == 1).sum()  # ACDC 3 = LV
    assert nib.load(files["image"]).shape == (24, 24, 4, 8)


def labels_at(ed, es):
    return cartoon_cine(ed=ed, es=es)[1][..., ed]


# --- UK Biobank -----------------------------------------------------------------------------


def test_ukbb_field_id_columns(tmp_path):
    patients = make_patients(4)  # the 4th is HF
    patients[0]["id"] = "0012345"
    paths = write_ukbb_cohort(tmp_path, patients)
    result = scan_ukbb(paths.root, paths.metadata)
    assert result.quarantine == []
    entries = by_id(result)
    assert sorted(entries) == sorted(p["id"] for p in patients)
    first = entries["0012345"]  # leading zeros kept
    assert (first.sex, first.age, first.bmi) == ("female", 45.0, 22.0)
    assert first.diagnosis == "healthy" and entries["1000004"].diagnosis == "hf"
    assert entries["1000002"].sex == "male"
    assert first.label_map == IDENTITY_MAP
    assert (first.ed_frame, first.es_frame) == (0, None)
    assert first.source == "ukbb" and first.subset == "study"
    assert first.image_path.endswith("0012345/sa.nii.gz") and Path(first.image_path).is_absolute()
    assert first.ed_mask.path.endswith("seg_sa_ED.nii.gz") and first.ed_mask.frame is None
    assert first.es_mask.path.endswith("seg_sa_ES.nii.gz")


def test_ukbb_phantom_columns_source_and_subset(tmp_path):
    paths = write_ukbb_cohort(tmp_path, make_patients(2, hf_every=2))
    header = paths.metadata.read_text().splitlines()[0]
    assert header == "eid,31-0.0,21003-2.0,21001-2.0,41270-0.0"
    result = scan_ukbb(paths.root, paths.metadata, subset="heldout", source="phantom")
    assert [(e.source, e.subset, e.diagnosis) for e in result.entries] == [
        ("phantom", "heldout", "healthy"), ("phantom", "heldout", "hf")]


def test_ukbb_friendly_columns_icd_codes_and_es_frame(tmp_path):
    patients = [
        {"id": "a1", "sex": "male", "icd10": ["I10", "I500"]},
        {"id": "a2", "sex": "female", "icd10": ["I10", "E119"]},
        {"id": "a3", "sex": None, "age": None, "bmi": None, "icd10": ["I509"], "es": 4},
    ]
    paths = write_ukbb_cohort(tmp_path, patients, columns="friendly", frame_columns=True)
    text = paths.metadata.read_text()
    assert text.splitlines()[0] == "eid,sex,age,bmi,icd10,ed_frame,es_frame"
    paths.metadata.write_text(text.replace("I10;I500", "I10|I500").replace(",male,", ",M,"))
    entries = by_id(scan_ukbb(paths.root, paths.metadata))
    assert entries["a1"].diagnosis == "hf" and entries["a1"].sex == "male"
    assert entries["a2"].diagnosis == "healthy" and entries["a2"].extra["icd10"] == ["I10", "E119"]
    a3 = entries["a3"]  # blanks stay None; the entry is kept
    assert (a3.sex, a3.age, a3.bmi, a3.diagnosis, a3.es_frame) == (None, None, None, "hf", 4)


def test_ukbb_tab_separated_export_with_bom_and_extra_columns(tmp_path):
    paths = write_ukbb_cohort(tmp_path, make_patients(3, hf_every=3) + [{"id": "77"}])
    lines = paths.metadata.read_text().splitlines()
    header = "f.eid\tf.31.0.0\tf.21003.2.0\tf.21001.2.0\tf.41270.0.0\tf.50.0.0"
    body = [line.replace(",", "\t") + "\t170" for line in lines[1:]]
    body[-1] = "\t".join(["", *body[-1].split("\t")[1:]])  # patient 77's row lost its eid
    paths.metadata.write_text("\ufeff" + "\n".join([header, *body]) + "\n")
    result = scan_ukbb(paths.root, paths.metadata)
    assert [(e.patient_id, e.diagnosis) for e in result.entries] == [
        ("1000001", "healthy"), ("1000002", "healthy"), ("1000003", "hf")]
    assert reasons(result) == [("", "missing_metadata"), ("77", "missing_metadata")]


def test_ukbb_column_preferences():
    cols = UkbColumns.detect(
        ["eid", "31-0.0", "21003-0.0", "21003-2.0", "21001-3.0", "41270-0.0", "41270-0.1"],
        Path("m.csv"),
    )
    # BMI only at the repeat imaging visit (3): no instance-2 column, kept for the fallback
    assert (cols.sex, cols.age, cols.bmi) == ("31-0.0", "21003-2.0", None)
    assert cols.bmi_other_visits == ("21001-3.0",) and cols.age_other_visits == ("21003-0.0",)
    order = UkbColumns.detect(["eid", "31-0.0", "21003-0.0", "21003-1.0", "21003-3.0", "21001-2.0",
                               "41270-0.0"], Path("m.csv"))
    assert order.age is None and order.age_other_visits == ("21003-3.0", "21003-1.0", "21003-0.0")
    assert cols.icd10 == ("41270-0.0", "41270-0.1")
    export = UkbColumns.detect(["f.eid", "f.31.0.0", "f.21003.2.0", "f.21001.2.0", "f.41270.0.0"],
                               Path("m.csv"))
    assert (export.eid, export.age, export.icd10) == ("f.eid", "f.21003.2.0", ("f.41270.0.0",))
    with pytest.raises(MetadataFormatError, match="age"):
        UkbColumns.detect(["eid", "31-0.0", "21001-2.0", "41270-0.0"], Path("m.csv"))


def test_ukbb_quarantine_reasons(tmp_path):
    patients = [
        {"id": "1", "missing": ["image"]},
        {"id": "2", "missing": ["ed_mask"]},
        {"id": "3", "missing": ["es_mask"]},
        {"id": "4", "missing": ["metadata"]},
        {"id": "5", "missing": ["folder"]},
        {"id": "6", "duplicate": True},
        {"id": "7", "duplicate": "conflict"},
        {"id": "8", "raw": {"21003-2.0": "sixty"}},
        {"id": "9", "raw": {"31-0.0": "2"}},
        {"id": "10"},
    ]
    paths = write_ukbb_cohort(tmp_path, patients)
    result = scan_ukbb(paths.root, paths.metadata)
    assert sorted(by_id(result)) == ["10", "6"]  # identical duplicate: the first copy kept
    assert reasons(result) == [
        ("1", "missing_image"), ("2", "missing_ed_mask"), ("3", "missing_es_mask"),
        ("4", "missing_metadata"), ("5", "no_images"), ("6", "duplicate_id"),
        ("7", "duplicate_id"), ("7", "duplicate_id"), ("8", "missing_metadata"),
        ("9", "missing_metadata"),
    ]
    rows = {(q.patient_id, q.reason): q for q in result.quarantine}
    assert "sa.nii.gz" in rows[("1", "missing_image")].file
    assert "sixty" in rows[("8", "missing_metadata")].detail
    assert "conflicting" in rows[("7", "duplicate_id")].detail
    assert all(q.patient_id in q.detail for q in result.quarantine)
    assert {q.reason for q in result.quarantine} <= set(QUARANTINE_REASONS)


def test_ukbb_missing_sources_raise(tmp_path):
    paths = write_ukbb_cohort(tmp_path, make_patients(1))
    with pytest.raises(SourceMissingError, match="nowhere"):
        scan_ukbb(tmp_path / "nowhere", paths.metadata)
    with pytest.raises(SourceMissingError, match="nothing.csv"):
        scan_ukbb(paths.root, tmp_path / "nothing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceMissingError, match="found none"):
        scan_ukbb(tmp_path / "empty", paths.metadata)


def test_readers_do_not_open_voxels(tmp_path):
    paths = write_ukbb_cohort(tmp_path, make_patients(1))
    paths.patients["1000001"]["image"].write_bytes(b"not a nifti at all")
    assert [e.patient_id for e in scan_ukbb(paths.root, paths.metadata).entries] == ["1000001"]


# --- M&Ms-1 ---------------------------------------------------------------------------------


def test_mms_values_frames_bmi_and_diagnosis(tmp_path):
    patients = [
        {"id": "A0S9V9", "sex": "male", "age": 61, "height": 180.0, "weight": 81.0,
         "pathology": "DCM", "ed": 0, "es": 4, "vendor": "A", "vendor_name": "Siemens",
         "centre": 1},
        {"id": "B1C2D3", "sex": "female", "age": 34, "height": None, "weight": 60.0,
         "pathology": "NOR", "ed": 2, "es": 6, "vendor": "B", "vendor_name": "Philips",
         "centre": 2},
        {"id": "C4E5F6", "pathology": "HCM"},
    ]
    paths = write_mms_cohort(tmp_path, patients)
    result = scan_mms(paths.root, paths.metadata)
    assert result.quarantine == []
    e = by_id(result)
    a = e["A0S9V9"]
    assert (a.sex, a.age, a.diagnosis, a.ed_frame, a.es_frame) == ("male", 61.0, "hf", 0, 4)
    assert a.bmi == pytest.approx(81.0 / 1.8**2)
    assert a.label_map == IDENTITY_MAP and a.source == "mms"
    assert a.ed_mask.path == a.es_mask.path and a.ed_mask.path.endswith("A0S9V9_sa_gt.nii.gz")
    assert (a.ed_mask.frame, a.es_mask.frame) == (0, 4)
    assert a.image_path.endswith("A0S9V9/A0S9V9_sa.nii.gz")
    assert {k: a.extra[k] for k in ("vendor", "vendor_name", "centre", "pathology")} == {
        "vendor": "A", "vendor_name": "Siemens", "centre": "1", "pathology": "DCM"}
    b = e["B1C2D3"]  # 0-based frames kept; no height -> no BMI
    assert (b.ed_frame, b.es_frame, b.bmi, b.diagnosis, b.sex) == (2, 6, None, "healthy", "female")
    c = e["C4E5F6"]  # left out by the mapping, but returned, not quarantined
    assert c.diagnosis is None
    assert c.extra["excluded_reason"] == "pathology HCM not mapped to HF or healthy"
    override = by_id(scan_mms(paths.root, paths.metadata, diagnosis_map={"HCM": "hf"}))
    assert override["C4E5F6"].diagnosis == "hf" and override["A0S9V9"].diagnosis == "hf"
    assert "excluded_reason" not in override["C4E5F6"].extra


def test_mms_nested_release_layout(tmp_path):
    patients = [
        {"id": "T1", "split": "Training/Labeled"},
        {"id": "V1", "split": "Validation"},
        {"id": "S1", "split": "Testing"},
    ]
    paths = write_mms_cohort(tmp_path, patients)
    result = scan_mms(paths.root, paths.metadata)
    assert result.quarantine == []
    e = by_id(result)
    assert sorted(e) == ["S1", "T1", "V1"]
    assert "Training/Labeled/T1/T1_sa.nii.gz" in e["T1"].image_path
    assert e["V1"].extra["release_folder"] == "Validation"


def test_mms_quarantine_reasons(tmp_path):
    patients = [
        {"id": "M1", "missing": ["image"]},
        {"id": "M2", "missing": ["ed_mask"]},  # the one 4D label file holds ED and ES
        {"id": "M3", "missing": ["metadata"]},
        {"id": "M4", "missing": ["folder"]},
        {"id": "M5", "duplicate": True},
        {"id": "M6", "raw": {"ES": "late"}},
        {"id": "M7", "raw": {"Sex": "X"}},
        {"id": "M8"},
    ]
    paths = write_mms_cohort(tmp_path, patients)
    result = scan_mms(paths.root, paths.metadata)
    assert sorted(by_id(result)) == ["M5", "M8"]
    assert reasons(result) == [
        ("M1", "missing_image"), ("M2", "missing_ed_mask"), ("M2", "missing_es_mask"),
        ("M3", "missing_metadata"), ("M4", "no_images"), ("M5", "duplicate_id"),
        ("M6", "missing_metadata"), ("M7", "missing_metadata"),
    ]
    with pytest.raises(SourceMissingError):
        scan_mms(tmp_path / "absent", paths.metadata)
    with pytest.raises(SourceMissingError):
        scan_mms(paths.root, tmp_path / "absent.csv")


# --- ACDC -----------------------------------------------------------------------------------


def test_acdc_frames_labels_and_attributes(tmp_path):
    patients = [
        {"id": 1, "ed": 0, "es": 3, "group": "DCM", "height": 184.0, "weight": 95.0},
        {"id": 2, "ed": 1, "es": 5, "group": "MINF", "split": "testing"},
        {"id": 3, "group": "NOR", "height": None, "weight": None},
        {"id": 4, "group": "HCM"},
        {"id": 5, "group": "RV"},
    ]
    paths = write_acdc_cohort(tmp_path, patients)
    assert "ED: 2\nES: 6\n" in paths.patients["patient002"]["info"].read_text()
    result = scan_acdc(paths.root)
    assert result.quarantine == []
    e = by_id(result)
    p1, p2 = e["patient001"], e["patient002"]
    assert (p1.ed_frame, p1.es_frame) == (0, 3)  # Info.cfg ED 1, ES 4
    assert p1.ed_mask.path.endswith("patient001_frame01_gt.nii.gz") and p1.ed_mask.frame is None
    assert p1.es_mask.path.endswith("patient001_frame04_gt.nii.gz")
    assert p1.image_path.endswith("patient001_4d.nii.gz")
    assert p1.label_map == ACDC_MAP and p1.source == "acdc"
    assert (p1.sex, p1.age) == (None, None)
    assert p1.bmi == pytest.approx(95.0 / 1.84**2)
    assert (p1.diagnosis, p1.extra["group"], p1.extra["nb_frames"]) == ("hf", "DCM", 8)
    assert (p2.ed_frame, p2.es_frame, p2.diagnosis) == (1, 5, "hf")
    assert p2.es_mask.path.endswith("patient002_frame06_gt.nii.gz")
    assert p2.extra["release_folder"] == "testing"
    assert e["patient003"].bmi is None and e["patient003"].diagnosis == "healthy"
    for pid, group in (("patient004", "HCM"), ("patient005", "RV")):
        assert e[pid].diagnosis is None
        assert e[pid].extra["excluded_reason"] == f"pathology {group} not mapped to HF or healthy"
    override = by_id(scan_acdc(paths.root, diagnosis_map={"MINF": None, "rv": "healthy"}))
    assert override["patient002"].diagnosis is None
    assert override["patient005"].diagnosis == "healthy"
    assert override["patient001"].diagnosis == "hf"


def test_acdc_quarantine_reasons(tmp_path):
    patients = [
        {"id": 1, "missing": ["image"]},
        {"id": 2, "missing": ["ed_mask"]},
        {"id": 3, "missing": ["es_mask"]},
        {"id": 4, "missing": ["info"]},
        {"id": 5, "info_cfg": "ED: 1\nthis line is not a key value pair\n"},
        {"id": 6, "info_cfg": "ES: 4\nGroup: NOR\n"},
        {"id": 7, "info_cfg": "ED: 0\nES: 4\nGroup: NOR\n"},
        {"id": 8},
        {"id": 8, "split": "testing"},
    ]
    paths = write_acdc_cohort(tmp_path, patients)
    result = scan_acdc(paths.root)
    assert sorted(by_id(result)) == ["patient008"]
    assert "/testing/" in by_id(result)["patient008"].image_path  # first in sorted path order
    assert reasons(result) == [
        ("patient001", "missing_image"), ("patient002", "missing_ed_mask"),
        ("patient003", "missing_es_mask"), ("patient004", "missing_metadata"),
        ("patient005", "bad_metadata"), ("patient006", "bad_metadata"),
        ("patient007", "bad_metadata"), ("patient008", "duplicate_id"),
    ]
    rows = {q.patient_id: q for q in result.quarantine}
    assert rows["patient002"].file.endswith("patient002_frame01_gt.nii.gz")
    assert "no ED line" in rows["patient006"].detail


def test_acdc_missing_root_or_no_patients(tmp_path):
    with pytest.raises(SourceMissingError, match="absent"):
        scan_acdc(tmp_path / "absent")
    (tmp_path / "training" / "notes").mkdir(parents=True)
    with pytest.raises(SourceMissingError, match="patientNNN"):
        scan_acdc(tmp_path)


# --- diagnosis mapping and registry ------------------------------------------------------


def test_diagnosis_defaults_and_override():
    assert MMS_DIAGNOSIS_DEFAULT["NOR"] == "healthy" and MMS_DIAGNOSIS_DEFAULT["DCM"] == "hf"
    assert all(MMS_DIAGNOSIS_DEFAULT[k] is None
               for k in ("HCM", "ARV", "HHD", "AHS", "LV", "OTHER"))
    assert ACDC_DIAGNOSIS_DEFAULT == {"NOR": "healthy", "DCM": "hf", "MINF": "hf",
                                      "HCM": None, "RV": None}
    mapping = resolve_diagnosis_map(MMS_DIAGNOSIS_DEFAULT, {"ahs": "healthy"})
    assert map_diagnosis("AHS", mapping) == ("healthy", None)
    assert map_diagnosis("Other", mapping) == (None, "pathology Other not mapped to HF or healthy")
    assert map_diagnosis("XYZ", mapping)[0] is None
    assert map_diagnosis("", mapping) == (None, "no pathology recorded")
    with pytest.raises(ValueError):
        resolve_diagnosis_map(MMS_DIAGNOSIS_DEFAULT, {"HCM": "sick"})
    assert MMS_DIAGNOSIS_DEFAULT["HCM"] is None  # the defaults are not mutated


def test_sources_registry():
    assert set(SOURCES) == {"phantom", "ukbb", "mms", "acdc"}
    assert all(isinstance(v, str) and v for v in SOURCES.values())
