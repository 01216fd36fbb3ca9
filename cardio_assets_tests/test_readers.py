"""The layout readers: values parsed, label maps chosen, frames converted, and every
reader-level quarantine reason, on tiny cohorts written by `layouts`."""

from __future__ import annotations

import os
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


def test_ukbb_rows_of_another_length_are_quarantined_not_read_shifted(tmp_path):
    """UK Biobank reads only the columns it uses; a row with one field too many (an unquoted decimal
    comma in BMI) would otherwise give its first fields to the wrong columns, and a last line cut
    short (the file ends in it, without a line break: a copy interrupted) blanks; both are
    quarantined by line, the rows after them keep their own line numbers. (A shorter row the
    file goes on after is Excel's, its trailing empty cells left out: test_readers_exports.)"""
    patients = make_patients(5)
    paths = write_ukbb_cohort(tmp_path, patients)
    lines = paths.metadata.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    fields = rows[1].split(",")
    rows[1] = ",".join(fields[:3] + [fields[3].replace(".", ",")] + fields[4:])  # BMI 27.5 typed as 27,5: read as 27 otherwise
    assert rows[1].count(",") == header.count(",") + 1
    rows[3] = ",".join(rows[3].split(",")[:3])  # the last line, cut short after the age
    paths.metadata.write_text("\n".join([header, rows[0], "", rows[1], rows[2], rows[4], rows[3]]))
    result = scan_ukbb(paths.root, paths.metadata)
    ids = [p["id"] for p in patients]
    assert sorted(by_id(result)) == sorted([ids[0], ids[2], ids[4]])
    rows_by_reason = rows_of(result)
    assert sorted(rows_by_reason) == [(ids[1], "missing_metadata"), (ids[3], "missing_metadata")]
    assert f"line 4 of metadata table {paths.metadata} has 6 fields where its header has 5" in rows_by_reason[(ids[1], "missing_metadata")].detail
    assert f"line 7 of metadata table {paths.metadata} has 3 fields" in rows_by_reason[(ids[3], "missing_metadata")].detail
    assert by_id(result)[ids[4]].metadata_ref == f"{paths.metadata}:6"  # the blank line and the skipped row counted


@pytest.mark.parametrize("style", ["field-name", "field-title"])
def test_ukbb_research_analysis_platform_exports(tmp_path, style):
    """The RAP table exporter's headers: entity-prefixed field names, or field titles with the
    instance in the name, sex as its coded label, the ICD-10 array in one column."""
    patients = make_patients(4)  # the 4th is HF
    paths = write_ukbb_cohort(tmp_path, patients)
    header, *rows = paths.metadata.read_text().splitlines()
    names = {
        "field-name": ["participant.eid", "participant.p31", "participant.p21003_i2", "participant.p21001_i2",
                       "participant.p41270"],
        "field-title": ["Participant ID", "Sex", "Age when attended assessment centre | Instance 2",
                        "Body mass index (BMI) | Instance 2", "Diagnoses - ICD10"],
    }[style]
    assert len(header.split(",")) == len(names)
    lines = [",".join(names)]
    for row in rows:
        eid, sex, age, bmi, icd = row.split(",")
        sex = {"0": "Female", "1": "Male"}[sex] if style == "field-title" else sex
        lines.append(",".join([eid, sex, age, bmi, f'"[""{icd}"", ""E119""]"' if icd else '"[""E119""]"']))
    paths.metadata.write_text("\n".join(lines) + "\n")
    result = scan_ukbb(paths.root, paths.metadata)
    assert result.quarantine == []
    entries = by_id(result)
    expected = {p["id"]: p for p in patients}
    assert sorted(entries) == sorted(expected)
    first = entries[patients[0]["id"]]
    assert (first.sex, first.age, first.bmi) == ("female", 45.0, 22.0)
    assert [entries[p["id"]].diagnosis for p in patients] == ["healthy", "healthy", "healthy", "hf"]


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


# --- messy real folders: every patient read or quarantined, named ---------------------------


def rows_of(result):
    return {(q.patient_id, q.reason): q for q in result.quarantine}


def test_acdc_info_cfg_as_people_edit_it(tmp_path):
    cfg = "ED: 1\nES: 4\nGroup: NOR\nNbFrame: 8\n"
    patients = [
        {"id": 1, "info_cfg": "  ED :  1  \n\tES:4   \nGroup:   NOR \nHeight:  170 \nWeight: 70\n", "info_crlf": True},
        {"id": 2, "info_cfg": cfg + "Height: n/a\nWeight: \n"},
        {"id": 3, "info_cfg": cfg + "Height: 1,75\nWeight: 70\n"},  # metres, decimal comma
        {"id": 4, "info_cfg": cfg + "Height: 170\nWeight: 70\n", "info_encoding": "utf-16"},  # with BOM
        {"id": 5, "info_cfg": cfg + "Height: 170\nWeight: 70\n", "info_encoding": "utf-16-le"},  # no BOM
        {"id": 6, "info_cfg": cfg + "ED: 1\n"},  # repeated, same value
        {"id": 11, "info_cfg": "ED: 1\nES: 4\nED: 2\nGroup: NOR\n"},  # repeated, different value
        {"id": 12, "info_cfg": cfg + "Height: 175 cm\n"},
        {"id": 13, "info_cfg": "ED: 1\nES: 9\nGroup: NOR\nNbFrame: 8\n"},
        {"id": 14, "info_cfg": "ED: 1\nES: 4.5\nGroup: NOR\n"},
        {"id": 15, "info_cfg": "ED: 1\nES: 40\nGroup: NOR\n"},  # no NbFrame to check against
        {"id": 16, "info_cfg": ""},
    ]
    paths = write_acdc_cohort(tmp_path, patients)
    result = scan_acdc(paths.root)
    e = by_id(result)
    assert sorted(e) == [f"patient00{i}" for i in range(1, 7)]
    assert (e["patient001"].ed_frame, e["patient001"].es_frame) == (0, 3)
    assert e["patient001"].bmi == pytest.approx(70 / 1.7**2) and e["patient001"].extra["group"] == "NOR"
    assert e["patient002"].bmi is None
    assert e["patient003"].bmi == pytest.approx(70 / 1.75**2)
    assert e["patient004"].bmi == e["patient005"].bmi == pytest.approx(70 / 1.7**2)
    rows = rows_of(result)
    assert reasons(result) == [(f"patient0{i}", "bad_metadata") for i in (11, 12, 13, 14)] + [
        ("patient015", "missing_es_mask"), ("patient016", "bad_metadata")]
    expected = {
        ("patient011", "bad_metadata"): "gives ED twice: '1' on line 1, '2' on line 3",
        ("patient012", "bad_metadata"): "Height '175 cm' is not a number",
        ("patient013", "bad_metadata"): "ES 9 is beyond NbFrame 8",
        ("patient014", "bad_metadata"): "ES '4.5' is not a non-negative whole number",
        ("patient015", "missing_es_mask"): "frame 40 in Info.cfg",
        ("patient016", "bad_metadata"): "has no ED line",
    }
    for key, problem in expected.items():
        assert key[0] in rows[key].detail and problem in rows[key].detail, rows[key].detail
        if key[1] == "bad_metadata":
            assert rows[key].file == str(paths.patients[key[0]]["info"]) and rows[key].file in rows[key].detail


def test_acdc_info_cfg_keys_and_file_name_in_another_letter_case(tmp_path):
    patients = [
        {"id": 1, "info_cfg": "ed: 1\nes: 4\ngroup: NOR\nHEIGHT: 170\nweight: 70\nnbframe: 8\n"},
        {"id": 2},
        {"id": 3, "info_cfg": "ED: 1\nes: 2\nES: 4\nGroup: NOR\n"},  # the same key twice, in two cases, two values
    ]
    paths = write_acdc_cohort(tmp_path, patients)
    paths.patients["patient002"]["info"].rename(paths.patients["patient002"]["info"].with_name("info.cfg"))
    result = scan_acdc(paths.root)
    e = by_id(result)
    assert sorted(e) == ["patient001", "patient002"]
    assert (e["patient001"].ed_frame, e["patient001"].es_frame) == (0, 3)
    assert e["patient001"].bmi == pytest.approx(70 / 1.7**2) and e["patient001"].extra["group"] == "NOR"
    assert e["patient002"].ed_frame == 0
    row = rows_of(result)[("patient003", "bad_metadata")]
    assert "gives ES twice: '2' on line 2, '4' on line 3" in row.detail


def test_acdc_folders_differing_in_case_or_spaces_are_patients_not_skipped(tmp_path):
    paths = write_acdc_cohort(tmp_path, [{"id": 1}, {"id": 1, "split": "testing"}, {"id": 2}, {"id": 3}])
    training = paths.root / "training"
    (training / "patient002").rename(training / "Patient002")
    (training / "patient003").rename(training / "patient003 ")
    (paths.root / "testing" / "patient001").rename(paths.root / "testing" / "PATIENT001")
    (training / "patient004").mkdir()  # a patient folder with no files
    result = scan_acdc(paths.root)
    e = by_id(result)
    assert sorted(e) == ["patient001", "patient002", "patient003"]
    assert "/Patient002/" in e["patient002"].image_path and "/patient003 /" in e["patient003"].image_path
    assert reasons(result) == [("patient001", "duplicate_id"), ("patient004", "missing_metadata")]
    assert "/testing/PATIENT001/" in e["patient001"].image_path  # first in sorted path order
    assert rows_of(result)[("patient001", "duplicate_id")].file.endswith("training/patient001")


def test_broken_symbolic_links_name_where_they_point(tmp_path):
    gone = tmp_path / "unmounted" / "sa.nii.gz"
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "M1"}, {"id": "M2"}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    links = {
        ("ukbb", "2", "missing_image"): ukbb.patients["2"]["image"],
        ("mms", "M2", "missing_ed_mask"): mms.patients["M2"]["labels"],
        ("acdc", "patient002", "missing_es_mask"): acdc.patients["patient002"]["es_mask"],
    }
    for link in links.values():
        link.unlink()
        os.symlink(gone, link)
    results = {"ukbb": scan_ukbb(ukbb.root, ukbb.metadata), "mms": scan_mms(mms.root, mms.metadata),
               "acdc": scan_acdc(acdc.root)}
    assert [e.patient_id for e in results["ukbb"].entries] == ["1"]
    assert [e.patient_id for e in results["mms"].entries] == ["M1"]
    assert [e.patient_id for e in results["acdc"].entries] == ["patient001"]
    for (source, pid, reason), link in links.items():
        row = rows_of(results[source])[(pid, reason)]
        assert row.file == str(link)
        assert str(link) in row.detail and f"is a symbolic link to {gone}, which is not a readable file" in row.detail


def test_patient_folders_with_no_files(tmp_path):
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2", "missing": ["image", "ed_mask", "es_mask"]}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "M1"}, {"id": "M2", "missing": ["image", "ed_mask"]}])
    assert not any(ukbb.patients["2"]["folder"].iterdir()) and not any(mms.patients["M2"]["folder"].iterdir())
    for result, pid in ((scan_ukbb(ukbb.root, ukbb.metadata), "2"), (scan_mms(mms.root, mms.metadata), "M2")):
        assert len(result.entries) == 1
        assert reasons(result) == [(pid, "missing_ed_mask"), (pid, "missing_es_mask"), (pid, "missing_image")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])  # with and without a byte-order mark
def test_metadata_tables_in_utf16(tmp_path, encoding):
    ukbb = write_ukbb_cohort(tmp_path / "u", make_patients(2), encoding=encoding)
    mms = write_mms_cohort(tmp_path / "m", make_patients(2, prefix="A"), encoding=encoding)
    assert ukbb.metadata.read_bytes().startswith(b"\xff\xfe") == (encoding == "utf-16")
    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)
    assert u.quarantine == [] and m.quarantine == []
    assert [(e.patient_id, e.age) for e in u.entries] == [("1000001", 45.0), ("1000002", 62.0)]
    assert [(e.patient_id, e.age) for e in m.entries] == [("A1000001", 45.0), ("A1000002", 62.0)]


def test_mms_values_as_people_type_them(tmp_path):
    patients = [
        {"id": "V1", "raw": {"Age": " 61 ", "Sex": " m ", "Height": "1,75", "Weight": "70"}},
        {"id": "V2", "raw": {"Age": "n/a", "Height": "", "Weight": "NA"}},
        {"id": "V3", "raw": {"External code": " V3 ", "Pathology": " DCM "}},
        {"id": "W1", "raw": {"Age": "72 years"}},
        {"id": "W2", "raw": {"Weight": "70kg"}},
        {"id": "W3", "raw": {"ES": "3.5"}},
        {"id": "W4", "raw": {"ED": "-1"}},
        {"id": "W5", "raw": {"ES": ""}},
    ]
    paths = write_mms_cohort(tmp_path, patients)
    result = scan_mms(paths.root, paths.metadata)
    e = by_id(result)
    assert sorted(e) == ["V1", "V2", "V3"]
    assert (e["V1"].age, e["V1"].sex, e["V1"].bmi) == (61.0, "male", pytest.approx(70 / 1.75**2))
    assert (e["V2"].age, e["V2"].bmi) == (None, None)
    assert e["V3"].diagnosis == "hf"
    problems = {"W1": "Age '72 years' is not a number", "W2": "Weight '70kg' is not a number",
                "W3": "ES frame '3.5' is not a non-negative whole number",
                "W4": "ED frame '-1' is not a non-negative whole number",
                "W5": "the ES frame index is blank (ED and ES frame indices are required)"}
    rows = rows_of(result)
    assert sorted(rows) == [(pid, "missing_metadata") for pid in problems]
    for line, (pid, problem) in enumerate(problems.items(), start=5):
        assert f"patient {pid}: line {line} of {paths.metadata}: {problem}" == rows[(pid, "missing_metadata")].detail


def test_mms_row_with_an_unquoted_decimal_comma_is_quarantined_not_fatal(tmp_path):
    paths = write_mms_cohort(tmp_path, [{"id": "D1"}, {"id": "D2", "raw": {"Height": "1,75"}}, {"id": "D3"}])
    text = paths.metadata.read_text()
    assert '"1,75"' in text
    paths.metadata.write_text(text.replace('"1,75"', "1,75"))  # as typed in a text editor
    result = scan_mms(paths.root, paths.metadata)
    assert sorted(by_id(result)) == ["D1", "D3"]
    assert reasons(result) == [("D2", "missing_metadata")]  # its folder is not reported as lacking a row
    detail = result.quarantine[0].detail
    assert detail.startswith(f"patient D2: line 3 of metadata table {paths.metadata} has 13 fields where its header has 12")
    assert "'1', '75'" in detail


def test_ids_differing_in_case_or_spaces(tmp_path):
    mms = write_mms_cohort(tmp_path / "m", [
        {"id": "C1"}, {"id": "c1"},  # one patient typed twice, or two a spreadsheet would merge
        {"id": "S1", "duplicate": True, "raw": {"Age": "55"}}, {"id": "S2"},
    ])
    lines = mms.metadata.read_text().splitlines()
    lines[4] = lines[4].replace(",S1,", ", S1 ,").replace(",55,", ",55 ,")  # the copy of S1 with stray spaces
    mms.metadata.write_text("\n".join(lines) + "\n")
    result = scan_mms(mms.root, mms.metadata)
    assert sorted(by_id(result)) == ["S1", "S2"]
    assert reasons(result) == [("C1", "duplicate_id"), ("S1", "duplicate_id"), ("c1", "duplicate_id")]
    rows = rows_of(result)
    assert "as C1, c1 (ids differing only in case) with conflicting values" in rows[("c1", "duplicate_id")].detail
    assert "the copies are identical, so line 4 is kept" in rows[("S1", "duplicate_id")].detail

    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    (ukbb.root / "2").rename(ukbb.root / "2 ")
    result = scan_ukbb(ukbb.root, ukbb.metadata)
    assert reasons(result) == [("2", "no_images"), ("2 ", "missing_metadata")]
    rows = rows_of(result)
    assert rows[("2", "no_images")].detail.endswith("(compare '2 ', which differs only in case or surrounding spaces)")
    assert rows[("2 ", "missing_metadata")].detail.endswith("(compare '2', which differs only in case or surrounding spaces)")


def test_an_id_that_reads_as_a_missing_value_is_named_in_both_quarantine_rows(tmp_path):
    """A patient whose id is "NA": exports write missing ids so, so its row is skipped, and both the
    row's and the folder's quarantine rows say why rather than leave a puzzle."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "NA"}])
    result = scan_ukbb(paths.root, paths.metadata)
    assert sorted(by_id(result)) == ["1"]
    details = [q.detail for q in result.quarantine]
    assert any("line 3 of metadata table" in d and "has no eid ('NA' reads as a missing value)" in d for d in details), details
    assert any(f"patient folder {paths.root / 'NA'} has no row" in d for d in details), details


def test_malformed_metadata_tables_raise_naming_the_file(tmp_path):
    paths = write_mms_cohort(tmp_path, [{"id": "A1"}])
    text = paths.metadata.read_text()
    paths.metadata.write_text(text.replace(",ES,", ",End systole,"))
    with pytest.raises(MetadataFormatError, match=rf"{paths.metadata} lacks the column\(s\) ES;"):
        scan_mms(paths.root, paths.metadata)
    paths.metadata.write_bytes(b"")
    with pytest.raises(MetadataFormatError, match=rf"could not read the metadata table {paths.metadata}"):
        scan_mms(paths.root, paths.metadata)


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
