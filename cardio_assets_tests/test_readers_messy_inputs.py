"""Metadata and files as real cohorts deliver them: Windows-1252 and UTF-16 exports, European
Excel (semicolons, decimal commas), spreadsheet leftovers (empty rows and columns, ids saved as
floats), every spelling of a blank, zero heights, unreadable files and folders, damaged NIfTI.
Each patient is read right, kept without a cell with the reason, or quarantined naming the
patient, the file and the problem; nothing stops the run or vanishes."""

from __future__ import annotations

import builtins
import errno
import io
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cardio_assets.cohort.readers import QUARANTINE_REASONS, SourceMissingError, scan_acdc, scan_mms, scan_ukbb
from cardio_assets.cohort.validation import no_cell_reasons
from cardio_assets_tests.layouts import (
    UKB_HEADER,
    entries_by_id,
    quarantine_rows,
    validate_scan,
    write_acdc_cohort,
    write_mms_cohort,
    write_ukbb_cohort,
)


def _voxels(path):
    return np.asanyarray(nib.load(path).dataobj)


def _resave(path, data):
    nib.save(nib.Nifti1Image(data, nib.load(path).affine), path)


# --- encodings and spreadsheet exports ---------------------------------------------------------


def test_windows_1252_exports_keep_their_symbols(tmp_path):
    """Excel and Notepad on Western-European Windows write "™", "–" and "€" in bytes 0x80-0x9F,
    which Latin-1 reads as invisible control characters: "GE™" became "GE\\x99", a vendor name no
    other row shared. Accents of both encodings ("Hôpital", "Siemens®") are read too."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    ukbb.metadata.write_bytes(("eid,31-0.0,21003-2.0,21001-2.0,41270-0.0,vendor,site\r\n"
                               "1,0,55,24,,Siemens®,Hôpital – Nord\r\n2,1,56,25,I500,GE™,Caf\u00e9\r\n").encode("cp1252"))
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1", "vendor_name": "GE™", "centre": "Hôpital – Nord"}],
                           sep=";", encoding="cp1252", crlf=True)
    assert b"\x99" in mms.metadata.read_bytes() and b"\x96" in mms.metadata.read_bytes()

    u, m = entries_by_id(scan_ukbb(ukbb.root, ukbb.metadata)), entries_by_id(scan_mms(mms.root, mms.metadata))

    assert [(e.vendor, e.site) for e in u.values()] == [("Siemens®", "Hôpital – Nord"), ("GE™", "Café")]
    assert (m["A1"].extra["vendor_name"], m["A1"].site) == ("GE™", "Hôpital – Nord")


@pytest.mark.parametrize("export", ["european-excel", "excel-unicode-text"])
def test_excel_exports_with_odd_headers_and_padded_values(tmp_path, export):
    """European Excel (";", decimal commas, CRLF, a byte-order mark) and Excel's "Unicode text"
    (UTF-16, tabs, CRLF); headers with stray spaces and another letter case, values padded with
    spaces, an id with leading zeros that must pair with its folder "001"."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "001"}, {"id": "2"}])
    sep, encoding = {"european-excel": (";", "utf-8-sig"), "excel-unicode-text": ("\t", "utf-16")}[export]
    rows = [[" EID ", "Sex ", " AGE", "Bmi", " ICD10 "], [" 001 ", " Female ", "55,5", " 27,5 ", ""],
            ["2", "male", "61", "24", " I500 "]]
    paths.metadata.write_bytes("".join(sep.join(r) + "\r\n" for r in rows).encode(encoding))

    result = scan_ukbb(paths.root, paths.metadata)

    assert result.quarantine == []
    e = entries_by_id(result)
    assert (e["001"].sex, e["001"].age, e["001"].bmi, e["001"].diagnosis) == ("female", 55.5, 27.5, "healthy")
    assert (e["2"].sex, e["2"].diagnosis) == ("male", "hf")
    assert e["001"].image_path.endswith("/001/sa.nii.gz")


def test_excel_separator_hint_line_is_not_the_header(tmp_path):
    """A first line "sep=;" (Excel's hint, so that any locale splits the file) was taken for the
    header: the table was refused as having no eid column. Line numbers still count it."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    ukbb.metadata.write_text("sep=;\r\neid;31-0.0;21003-2.0;21001-2.0;41270-0.0\r\n"
                             "1;0;55;24,5;\r\n2;1;56;25;;extra\r\n3;1;57;26;I500\r\n")
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}], sep="\t")
    mms.metadata.write_text("sep=\t\n" + mms.metadata.read_text())

    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)

    e = entries_by_id(u)
    assert sorted(e) == ["1", "3"] and e["1"].bmi == 24.5 and e["3"].diagnosis == "hf"
    assert e["3"].metadata_ref == f"{ukbb.metadata}:5"
    [row] = u.quarantine  # one field too many
    assert row.detail.startswith(f"patient 2: line 4 of metadata table {ukbb.metadata} has 6 fields where its header has 5")
    assert m.quarantine == [] and m.entries[0].metadata_ref == f"{mms.metadata}:3"


def test_field_id_headers_in_upper_case_are_read(tmp_path):
    """``P21003_I2`` / ``F.31.0.0`` (a script that upper-cased the header) named the very fields
    the reader looks for, yet the table was refused as lacking sex, age, BMI and diagnosis."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "2"}])
    paths.metadata.write_text("EID,P31,P21003_I2,F.21001.2.0,P41270\n1,0,55,24,\n2,1,56,25,I500\n")
    e = entries_by_id(scan_ukbb(paths.root, paths.metadata))
    assert [(p.sex, p.age, p.bmi, p.diagnosis) for p in e.values()] == [
        ("female", 55.0, 24.0, "healthy"), ("male", 56.0, 25.0, "hf")]


def test_empty_spreadsheet_rows_and_columns_are_not_patients(tmp_path):
    """Excel exports formatted but empty rows below the data (",,,,") and empty columns beside
    it ("Unnamed: 12"): each empty row was a quarantine row "line N has no eid", noise that
    buried the real problems. A row with values but no id is still named."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    ukbb.metadata.write_text(f"{UKB_HEADER},,\n1,0,55,24,,,\n2,1,56,25,,,\n,,,,,,\n , ,,,,,\n,1,60,,,,\n,,,\n")
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2"}], sep=";")
    text = mms.metadata.read_text().rstrip("\n").split("\n")
    mms.metadata.write_text("\n".join([line + ";;" for line in text] + [";" * 13] * 3) + "\n")
    assert "Unnamed" in pd.read_csv(mms.metadata, sep=";").columns[-1]

    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)

    assert sorted(entries_by_id(u)) == ["1", "2"] and sorted(entries_by_id(m)) == ["A1", "A2"]
    assert m.quarantine == []
    [row] = u.quarantine  # the row with values and no id, on line 6
    assert (row.patient_id, row.reason) == ("", "missing_metadata")
    assert row.detail == f"line 6 of metadata table {ukbb.metadata} has no eid; the row is skipped"


def test_ids_excel_saved_as_floats_pair_with_their_folders(tmp_path):
    """An eid column Excel took for numbers comes back as "1234567.0": the row found no folder
    (no_images) and the folder no row (missing_metadata), so the patient was lost."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1234567"}, {"id": "2"}, {"id": "007"}, {"id": "3"}])
    paths.metadata.write_text(f"{UKB_HEADER}\n1234567.0,0,55,24,\n2.00,1,56,25,I500\n007,0,57,26,\n"
                              f"3.0,1,58,27,\n3,1,58,27,\n")
    result = scan_ukbb(paths.root, paths.metadata)
    e = entries_by_id(result)
    assert sorted(e) == ["007", "1234567", "2", "3"]  # "007" keeps its zeros
    assert (e["1234567"].sex, e["2"].diagnosis, e["3"].age) == ("female", "hf", 58.0)
    [row] = result.quarantine  # "3.0" and "3" are one patient typed twice, the same values
    assert (row.patient_id, row.reason) == ("3", "duplicate_id")
    assert "the copies are identical, so line 5 is kept" in row.detail


# --- blanks and codings -------------------------------------------------------------------------

BLANKS = ["", " ", "NA", "N/A", "nan", "NaN", "-", "?", "#N/A", "NULL"]


def test_every_spelling_of_a_blank_leaves_the_attribute_missing(tmp_path):
    """"?" and Excel's "#N/A" in an age, BMI, sex or diagnosis cell quarantined the whole
    patient as unparsable; like "", "NA" or "-" they now leave that attribute missing, so the
    patient is kept without a cell, with the reason."""
    ids = [str(i) for i in range(1, len(BLANKS) + 1)]
    fields = write_ukbb_cohort(tmp_path / "f", [{"id": i} for i in ids])
    fields.metadata.write_text("\n".join([UKB_HEADER] + [f"{i},{b},{b},{b},{b}" for i, b in zip(ids, BLANKS)]) + "\n")
    friendly = write_ukbb_cohort(tmp_path / "w", [{"id": i} for i in ids], columns="friendly")
    friendly.metadata.write_text("\n".join(["eid,sex,age,bmi,diagnosis"] + [f"{i},{b},{b},{b},{b}" for i, b in zip(ids, BLANKS)]) + "\n")
    mms = write_mms_cohort(tmp_path / "m", [{"id": f"B{i}", "raw": {"Sex": b, "Age": b, "Height": b, "Pathology": b}}
                                            for i, b in zip(ids, BLANKS)])

    scans = {"fields": scan_ukbb(fields.root, fields.metadata), "friendly": scan_ukbb(friendly.root, friendly.metadata),
             "mms": scan_mms(mms.root, mms.metadata)}

    for name, scan in scans.items():
        assert scan.quarantine == [], name
        assert len(scan.entries) == len(BLANKS), name
        for entry in scan.entries:
            assert (entry.sex, entry.age, entry.bmi) == (None, None, None), (name, entry.patient_id)
            # no ICD-10 code is no heart-failure diagnosis (UK Biobank); elsewhere the diagnosis is missing
            assert entry.diagnosis == ("healthy" if name == "fields" else None), (name, entry.patient_id)
            expected = ["no sex", "no age", "no BMI"] + ([] if name == "fields" else ["no diagnosis"])
            assert no_cell_reasons(entry) == expected


def test_sex_codings_read_as_documented(tmp_path):
    """UK Biobank field 31 codes 0 female, 1 male (as text, or "1.0" from a float column); the
    friendly and M&Ms columns take F/M and female/male in any case; anything else is named."""
    codes = {"1": "0", "2": "1", "3": "1.0", "4": "Female", "5": "MALE", "6": " f ", "7": "m"}
    paths = write_ukbb_cohort(tmp_path, [{"id": i} for i in [*codes, "8"]])
    paths.metadata.write_text("\n".join([UKB_HEADER] + [f"{i},{c},55,24," for i, c in codes.items()] + ["8,2,55,24,"]) + "\n")
    result = scan_ukbb(paths.root, paths.metadata)
    assert {pid: e.sex for pid, e in entries_by_id(result).items()} == {
        "1": "female", "2": "male", "3": "male", "4": "female", "5": "male", "6": "female", "7": "male"}
    [row] = result.quarantine
    assert (row.patient_id, row.reason, row.file) == ("8", "missing_metadata", str(paths.metadata))
    assert row.detail == f"patient 8: line 9 of {paths.metadata}: sex (31-0.0) '2' is not one of female/male/F/M/0/1"


# --- heights and weights: zero is "not measured" ---------------------------------------------


def test_zero_height_or_weight_leaves_bmi_undefined_and_says_why(tmp_path):
    """ACDC's Info.cfg and the M&Ms table write 0 for a height or weight not measured: the
    patient was quarantined ("not positive") although its images are fine, and a height so
    small its square underflows crashed the whole ACDC scan (ZeroDivisionError)."""
    cfg = "ED: 1\nES: 4\nGroup: NOR\nNbFrame: 8\n"
    acdc = write_acdc_cohort(tmp_path / "a", [
        {"id": 1, "info_cfg": cfg + "Height: 0\nWeight: 70\n"},
        {"id": 2, "info_cfg": cfg + "Height: 170\nWeight: 0.0\n"},
        {"id": 3, "info_cfg": cfg + "Height: ?\nWeight: -\n"},
        {"id": 4, "info_cfg": cfg + "Height: 1e-300\nWeight: 70\n"},
        {"id": 5, "info_cfg": cfg + "Height: -170\nWeight: 70\n"},
        {"id": 6, "info_cfg": "\ufeffed : 1.0 \r\n  ES:4\r\ngroup: NOR\r\nHeight: 170\r\nWeight: 70\r\n"},
    ])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "Z1", "raw": {"Height": "0", "Weight": "70"}}])

    a, m = scan_acdc(acdc.root), scan_mms(mms.root, mms.metadata)

    e = entries_by_id(a)
    assert sorted(e) == ["patient001", "patient002", "patient003", "patient006"]
    assert all(e[pid].bmi is None for pid in ("patient001", "patient002", "patient003"))
    assert e["patient001"].extra["height_cm"] == 0.0  # the recorded value is kept
    assert no_cell_reasons(e["patient001"]) == ["no sex", "no age", "no BMI (height 0)"]
    assert no_cell_reasons(e["patient002"])[-1] == "no BMI (weight 0)"
    assert no_cell_reasons(e["patient003"])[-1] == "no BMI"
    assert (e["patient006"].ed_frame, e["patient006"].es_frame) == (0, 3)
    assert e["patient006"].bmi == pytest.approx(70 / 1.7**2)
    rows = quarantine_rows(a)
    assert sorted(rows) == [("patient004", "bad_metadata"), ("patient005", "bad_metadata")]
    info4 = acdc.patients["patient004"]["info"]
    assert rows[("patient004", "bad_metadata")].detail == (
        f"patient patient004: {info4} height 1e-300 and weight 70 give no finite BMI")
    assert "Height '-170' is negative" in rows[("patient005", "bad_metadata")].detail
    assert m.quarantine == [] and m.entries[0].bmi is None and m.entries[0].extra["bmi_undefined"] == "height 0"


# --- files and folders that cannot be read --------------------------------------------------


def _deny(monkeypatch, locked):
    """What chmod 000 does to a non-root process, for any user (root reads a chmod-000 file, and
    CI runs as root): opening a locked file, listing a locked folder or reaching into it raises
    PermissionError, as the operating system would."""
    locked = [os.path.abspath(p) for p in locked]
    real = {"open": builtins.open, "listdir": os.listdir, "scandir": os.scandir, "stat": os.stat}

    def check(path, reaching_in: bool):
        if isinstance(path, int):
            return
        path = os.path.abspath(os.fspath(path))
        for lock in locked:
            if path == lock or (reaching_in and path.startswith(lock + os.sep)):
                raise PermissionError(errno.EACCES, "Permission denied", path)

    guarded_open = lambda file, *a, **k: (check(file, True), real["open"](file, *a, **k))[1]  # noqa: E731
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)  # what Path.open and Path.read_text call
    monkeypatch.setattr(os, "listdir", lambda path=".": (check(path, True), real["listdir"](path))[1])
    monkeypatch.setattr(os, "scandir", lambda path=".": (check(path, True), real["scandir"](path))[1])
    # stat of the locked folder itself works; of anything inside it, not (no search permission)
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: (
        check(path, True) if os.path.dirname(os.path.abspath(os.fspath(path))) in locked or
        any(os.path.abspath(os.fspath(path)).startswith(lock + os.sep) for lock in locked) else None,
        real["stat"](path, *a, **k))[1])


def test_unreadable_files_and_folders_quarantine_only_their_patient(tmp_path, monkeypatch):
    """A patient folder without read permission crashed the UK Biobank and ACDC scans
    (PermissionError), and M&Ms reported it as absent ("has no folder"); an unreadable file
    was "unreadable NIfTI header (Could not read file)" without the cause; a folder below the
    root that cannot be listed hid its patients without a word."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2"}, {"id": "A3"}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, {"id": 5, "split": "testing"}])
    locked = {
        ("ukbb", "2", "unreadable_image"): ukbb.patients["2"]["image"],
        ("ukbb", "3", "unreadable_folder"): ukbb.patients["3"]["folder"],
        ("mms", "A2", "unreadable_ed_mask"): mms.patients["A2"]["labels"],
        ("mms", "A3", "unreadable_folder"): mms.patients["A3"]["folder"],
        ("acdc", "patient002", "bad_metadata"): acdc.patients["patient002"]["info"],
        ("acdc", "patient003", "unreadable_folder"): acdc.patients["patient003"]["folder"],
        ("acdc", "patient004", "unreadable_es_mask"): acdc.patients["patient004"]["es_mask"],
        ("acdc", "", "unreadable_folder"): acdc.root / "testing",
    }
    with monkeypatch.context() as denied:
        _deny(denied, locked.values())
        scans = {"ukbb": scan_ukbb(ukbb.root, ukbb.metadata), "mms": scan_mms(mms.root, mms.metadata),
                 "acdc": scan_acdc(acdc.root)}
        validated = {source: validate_scan(scan) for source, scan in scans.items()}

    assert validated["ukbb"][0]["patient_id"].tolist() == ["1"]
    assert validated["mms"][0]["patient_id"].tolist() == ["A1"]
    assert validated["acdc"][0]["patient_id"].tolist() == ["patient001"]
    for (source, pid, reason), path in locked.items():
        quarantine = validated[source][1]
        [row] = quarantine[(quarantine["patient_id"] == pid) & (quarantine["reason"] == reason)].itertuples()
        assert row.file in (str(path), str(path.absolute())), row
        assert row.file in row.detail and "Permission denied" in row.detail, row.detail
        assert not pid or f"patient {pid}" in row.detail
    assert sum(len(q) for _, q in validated.values()) == len(locked)
    assert {q.reason for scan in scans.values() for q in scan.quarantine} <= set(QUARANTINE_REASONS)


def test_metadata_path_that_is_not_a_file_says_what_it_is(tmp_path):
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}])
    folder = tmp_path / "export.csv"
    folder.mkdir()
    with pytest.raises(SourceMissingError, match=rf"looked for a file at {folder} and found a folder"):
        scan_ukbb(paths.root, folder)
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "moved" / "export.csv")
    with pytest.raises(SourceMissingError, match=r"found a symbolic link to .*moved/export.csv, which is not a readable file"):
        scan_mms(paths.root, link)


# --- damaged and odd NIfTI --------------------------------------------------------------------


def test_damaged_and_odd_volumes_are_named_with_the_likely_cause(tmp_path):
    """A gzip stream cut short before the header's end was "Cannot work out file type", and an
    uncompressed NIfTI named .nii.gz "not a gzip file": both now say what happened. Inf voxels,
    NaN or out-of-set labels, a 3D cine or label file and an ES frame past the cine's end (with
    its _gt file present) each quarantine their patient only."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": str(i)} for i in range(1, 7)])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2, "info_cfg": "ED: 1\nES: 10\nGroup: NOR\n"}, {"id": 3}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2"}])
    f = ukbb.patients
    data = f["1"]["ed_mask"].read_bytes()
    f["1"]["ed_mask"].write_bytes(data[: len(data) // 2])
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(_voxels(f["2"]["image"]), nib.load(f["2"]["image"]).affine), plain)
    f["2"]["image"].write_bytes(plain.read_bytes())
    cine = _voxels(f["3"]["image"]).astype(np.float32)
    cine[3, 3, 1, 2] = np.inf
    _resave(f["3"]["image"], cine)
    mask = _voxels(f["4"]["ed_mask"]).astype(np.float32)
    mask[0, 0, 0] = np.nan
    _resave(f["4"]["ed_mask"], mask)
    mask = _voxels(f["5"]["es_mask"]).copy()
    mask[0, 0, 0] = 4
    _resave(f["5"]["es_mask"], mask)
    a = acdc.patients
    (a["patient002"]["folder"] / "patient002_frame10_gt.nii.gz").write_bytes(a["patient002"]["es_mask"].read_bytes())
    _resave(a["patient003"]["image"], _voxels(a["patient003"]["image"])[..., 0])
    _resave(mms.patients["A2"]["labels"], _voxels(mms.patients["A2"]["labels"])[..., 0])

    expected = {
        "1": ("unreadable_ed_mask", f["1"]["ed_mask"], "its gzip stream is cut short or damaged"),
        "2": ("unreadable_image", f["2"]["image"], "uncompressed NIfTI named .nii.gz: rename it to .nii or gzip it"),
        "3": ("nonfinite_voxels", f["3"]["image"], "1 NaN/inf voxels"),
        "4": ("unreadable_ed_mask", f["4"]["ed_mask"], "label map holds NaN or inf"),
        "5": ("labels_outside_canonical_set", f["5"]["es_mask"], "labels [4] outside the expected set [0, 1, 2, 3]"),
        "patient002": ("frame_out_of_range", a["patient002"]["image"], f"ES frame 9 ({a['patient002']['info'].absolute()}) outside 0..7"),
        "patient003": ("unreadable_image", a["patient003"]["image"], "expected a 4D cine (x, y, z, t), found shape (24, 24, 4)"),
        "A2": ("unreadable_ed_mask", mms.patients["A2"]["labels"], "expected a 4D label file to take frame 0 from"),
    }
    kept, quarantined = [], []
    for scan in (scan_ukbb(ukbb.root, ukbb.metadata), scan_acdc(acdc.root), scan_mms(mms.root, mms.metadata)):
        cohort, quarantine = validate_scan(scan)
        kept += cohort["patient_id"].tolist()
        quarantined.append(quarantine)
    quarantine = pd.concat(quarantined).set_index("patient_id")
    assert sorted(kept) == ["6", "A1", "patient001"]
    assert sorted(quarantine.index) == sorted(expected)
    for pid, (reason, path, problem) in expected.items():
        row = quarantine.loc[pid]
        assert (row["reason"], row["file"]) == (reason, str(path.absolute())), pid
        assert f"patient {pid}: " in row["detail"] and row["file"] in row["detail"] and problem in row["detail"], row["detail"]
