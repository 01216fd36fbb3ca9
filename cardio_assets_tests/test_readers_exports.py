"""Metadata tables and folders as real exports and shares deliver them: Excel rows that end
early (it drops the separators of trailing empty cells), a workbook given where CSV is
expected, column names with units or other spacing, a column given twice, ids and headers
carrying invisible characters copied from a web page, patient folders and release splits that
are symbolic links (and links that loop), and a file or archive where a patient folder belongs.
Each patient is read right or quarantined naming the patient, the file and the problem; a
table no reader can use is refused with an error naming the file and the fix."""

from __future__ import annotations

import os
import shutil
import zipfile

import pytest

from cardio_assets.cohort.readers import MetadataFormatError, scan_acdc, scan_mms, scan_ukbb
from cardio_assets_tests.layouts import (
    UKB_HEADER,
    entries_by_id,
    quarantine_rows,
    write_acdc_cohort,
    write_mms_cohort,
    write_ukbb_cohort,
)

# --- rows that end early ------------------------------------------------------------------------


def test_excel_rows_without_their_trailing_empty_cells_are_read_with_those_cells_blank(tmp_path):
    """Excel leaves out the separators of empty cells at the end of a row (past its first rows):
    a healthy UK Biobank participant (no ICD-10 code) or an M&Ms patient with no height and
    weight ends early. Each such row was quarantined as "has 4 fields where its header has 5",
    which in a real export was most of the healthy participants. Only a last line the file ends
    in without a line break is a copy cut short, and is still quarantined."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": str(i)} for i in range(1, 6)])
    ukbb.metadata.write_text(f"{UKB_HEADER}\r\n1,0,55,24\r\n2,1,56,25,I500\r\n3,1,57\r\n4,0\r\n5,1,58,2")
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2"}], index_column=False)
    header, a1, a2 = mms.metadata.read_text().splitlines()
    mms.metadata.write_text("\n".join([header, a1.rsplit(",", 2)[0], a2]) + "\n")  # A1 without Height, Weight

    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)

    e = entries_by_id(u)
    assert sorted(e) == ["1", "2", "3", "4"]
    assert [(e[i].sex, e[i].age, e[i].bmi, e[i].diagnosis) for i in "1234"] == [
        ("female", 55.0, 24.0, "healthy"), ("male", 56.0, 25.0, "hf"), ("male", 57.0, None, "healthy"),
        ("female", None, None, "healthy")]
    [row] = u.quarantine  # the last line, cut short: "2" is what is left of a BMI
    assert (row.patient_id, row.reason) == ("5", "missing_metadata")
    assert f"line 6 of metadata table {ukbb.metadata} has 4 fields where its header has 5" in row.detail
    assert m.quarantine == []
    a = entries_by_id(m)
    assert (a["A1"].age, a["A1"].bmi, a["A1"].extra["height_cm"]) == (55.0, None, None)
    assert a["A2"].bmi == pytest.approx(24.0)


# --- a workbook where CSV is expected -------------------------------------------------------------


def _zip(path, members: dict[str, str]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


@pytest.mark.parametrize("kind", ["xlsx", "xls", "ods", "zip"])
def test_a_workbook_given_as_the_metadata_table_is_refused_naming_the_file_and_the_fix(tmp_path, kind):
    """An .xlsx, .xls or .ods (or a zipped CSV) given where CSV is expected was read as text: the
    error said the table lacked every column and listed a header of mojibake as its columns.
    It now says what the file is and to save it as CSV (no spreadsheet reader is a dependency)."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}])
    table = tmp_path / f"metadata.{kind}"
    if kind == "xlsx":
        _zip(table, {"[Content_Types].xml": "<Types/>", "xl/workbook.xml": "<workbook/>"})
    elif kind == "ods":
        _zip(table, {"mimetype": "application/vnd.oasis.opendocument.spreadsheet", "content.xml": "<c/>"})
    elif kind == "zip":
        _zip(table, {"metadata.csv": ukbb.metadata.read_text()})
    else:  # the OLE2 compound file of Excel 97-2003
        table.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 8)
    expected = {"xlsx": "is an Excel workbook (.xlsx)", "xls": "is an old-format Excel workbook (.xls)",
                "ods": "is an OpenDocument spreadsheet (.ods)", "zip": "is a zip archive (holding metadata.csv)"}[kind]
    fix = "unpack it" if kind == "zip" else "save it as CSV"

    for scan in (lambda: scan_ukbb(ukbb.root, table), lambda: scan_mms(mms.root, table)):
        with pytest.raises(MetadataFormatError) as raised:
            scan()
        message = str(raised.value)
        assert f"metadata table {table} {expected}, not a CSV text table" in message
        assert fix in message


# --- column names ---------------------------------------------------------------------------------


def test_column_names_with_units_other_spacing_or_case_are_matched(tmp_path):
    """"Height (cm)" and "Weight (kg)" in an M&Ms table matched no column, and those being
    optional, every patient silently lost its BMI ("Age (years)" its age). A UK Biobank table
    with "Patient ID" or "BMI (kg/m2)" was refused. Known units are dropped before matching,
    and spaces, underscores and hyphens ignored; an unknown unit ("Weight (lbs)") is not
    taken for kilograms."""
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1", "bmi": 25.0}, {"id": "A2", "bmi": 30.0}])
    text = mms.metadata.read_text()
    header, rest = text.split("\n", 1)
    units = header.replace("Age", "Age (years)").replace("Height", "Height (cm)").replace("Weight", "Weight [kg]")
    units = units.replace("External code", "External_Code").replace("Sex", "Gender")
    mms.metadata.write_text(f"{units}\n{rest}")
    lbs = write_mms_cohort(tmp_path / "l", [{"id": "B1"}])
    lbs.metadata.write_text(lbs.metadata.read_text().replace("Weight", "Weight (lbs)", 1))
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    ukbb.metadata.write_text("Patient ID,Sex,Age (years),BMI (kg/m2),ICD-10,ES frame\n1,F,55,24,,3\n2,M,56,25,I500,4\n")

    m, b, u = scan_mms(mms.root, mms.metadata), scan_mms(lbs.root, lbs.metadata), scan_ukbb(ukbb.root, ukbb.metadata)

    assert m.quarantine == [] and u.quarantine == [] and b.quarantine == []
    e = entries_by_id(m)
    assert [(e[p].sex, e[p].age, round(e[p].bmi, 6)) for p in ("A1", "A2")] == [("female", 55.0, 25.0), ("male", 55.0, 30.0)]
    assert entries_by_id(b)["B1"].bmi is None  # pounds are not read as kilograms
    assert [(p.sex, p.age, p.bmi, p.diagnosis, p.es_frame) for p in u.entries] == [
        ("female", 55.0, 24.0, "healthy", 3), ("male", 56.0, 25.0, "hf", 4)]


def test_a_column_given_twice_is_used_when_its_copies_agree_and_refused_when_they_differ(tmp_path):
    """Two tables joined side by side repeat a column. pandas renamed the second copy "Age.1",
    and the reader silently took the first even where the copies differed (two visits, or two
    sources); "Age" and "age" silently gave the last. Copies that agree on every row are used;
    copies that differ are an error naming the file, both columns and the first line."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    ukbb.metadata.write_text(f"{UKB_HEADER},eid\n1,0,55,24,,1\n2,1,56,25,I500,2\n")
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2"}])
    lines = mms.metadata.read_text().splitlines()
    mms.metadata.write_text("\n".join([lines[0] + ",age", lines[1] + ",55", lines[2] + ",70"]) + "\n")

    assert sorted(entries_by_id(scan_ukbb(ukbb.root, ukbb.metadata))) == ["1", "2"]
    with pytest.raises(MetadataFormatError) as raised:
        scan_mms(mms.root, mms.metadata)
    message = str(raised.value)
    assert str(mms.metadata) in message
    assert "'Age' (column 8) and 'age' (column 13) differ on line 3: '55', '70'" in message

    ukbb.metadata.write_text(f"{UKB_HEADER},21003-2.0\n1,0,55,24,,55\n2,1,56,25,I500,65\n")
    with pytest.raises(MetadataFormatError, match=r"'21003-2.0' \(column 3\) and '21003-2.0' \(column 6\) differ on line 3"):
        scan_ukbb(ukbb.root, ukbb.metadata)


# --- invisible characters ----------------------------------------------------------------------


def test_ids_and_headers_with_invisible_characters_pair_with_their_folders(tmp_path):
    """A zero-width space, a word joiner, a left-to-right mark or a byte-order mark inside the
    text (values pasted from a web page or e-mail, two exports concatenated) print as nothing:
    "1" plus a zero-width space found no folder "1" and the folder no row, one patient reported
    twice under names that look alike; "eid" so marked in the header refused the table."""
    ids = ["1", "2", "3", "4", "A5"]
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": i} for i in ids])
    ukbb.metadata.write_text("\u200beid\u2060,31-0.0,21003-2.0,21001-2.0,41270-0.0\n"
                             "1\u200b,0,55,24,\n\u00a02\u00a0,1,56,25,I500\n\ufeff3,1,57,26,\n"
                             "\u200e4 \u200b,0,58,27,\nA\u00ad5,1,59,28,\n")
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2"}])
    mms.metadata.write_text(mms.metadata.read_text().replace(",A1,", ",A1\u200b,").replace("ES", "E\u200cS"))

    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)

    assert u.quarantine == [] and m.quarantine == []
    assert sorted(entries_by_id(u)) == ["1", "2", "3", "4", "A5"] and sorted(entries_by_id(m)) == ["A1", "A2"]
    assert entries_by_id(u)["2"].diagnosis == "hf" and entries_by_id(m)["A1"].es_frame == 3


# --- folders ----------------------------------------------------------------------------------


def test_linked_patient_folders_and_release_splits_are_read_and_link_loops_skipped(tmp_path):
    """Patient folders or a release split linked in from other storage (``testing -> /data/...``)
    were not walked into: ACDC lost those patients without a word, M&Ms reported them as having
    no folder. A link back up the tree is walked once, not forever, and a second link to one
    folder is not a second patient."""
    store = tmp_path / "store"
    store.mkdir()
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2, "split": "testing"}])
    shutil.move(acdc.root / "testing", store / "testing")
    os.symlink(store / "testing", acdc.root / "testing")
    os.symlink(acdc.root, acdc.root / "training" / "loop")  # a loop
    os.symlink(acdc.root / "training" / "patient001", acdc.root / "also_patient001")  # the same folder again
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2", "split": "Validation"}])
    shutil.move(mms.root / "A1", store / "A1")
    os.symlink(store / "A1", mms.root / "A1")
    shutil.move(mms.root / "Validation", store / "Validation")
    os.symlink(store / "Validation", mms.root / "Validation")
    os.symlink(mms.root, store / "Validation" / "up")  # a loop through the linked split

    a, m = scan_acdc(acdc.root), scan_mms(mms.root, mms.metadata)

    assert a.quarantine == [] and m.quarantine == []
    assert sorted(entries_by_id(a)) == ["patient001", "patient002"]
    assert entries_by_id(a)["patient002"].extra["release_folder"] == "testing"
    assert sorted(entries_by_id(m)) == ["A1", "A2"]
    assert entries_by_id(m)["A2"].extra["release_folder"] == "Validation"


def test_a_file_or_archive_where_a_patient_folder_belongs_is_named(tmp_path):
    """A download not fully unpacked leaves ``patient002.zip`` (or a file named as the folder)
    where the folder belongs: ACDC, with no table to name the patient, lost the patient without
    a word; UK Biobank said only that the folder did not exist."""
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}, {"id": 3}])
    training = acdc.root / "training"
    shutil.make_archive(str(training / "patient002"), "zip", training / "patient002")
    shutil.rmtree(training / "patient002")
    shutil.rmtree(training / "patient003")
    (training / "patient003").write_text("")
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    shutil.make_archive(str(ukbb.root / "2"), "zip", ukbb.root / "2")
    shutil.rmtree(ukbb.root / "2")
    shutil.rmtree(ukbb.root / "3")
    (ukbb.root / "3").write_text("")

    a, u = scan_acdc(acdc.root), scan_ukbb(ukbb.root, ukbb.metadata)

    assert sorted(entries_by_id(a)) == ["patient001"] and sorted(entries_by_id(u)) == ["1"]
    rows = quarantine_rows(a)
    assert sorted(rows) == [("patient002", "missing_image"), ("patient003", "missing_image")]
    assert rows[("patient002", "missing_image")].file == str(training / "patient002.zip")
    assert rows[("patient002", "missing_image")].detail == (
        f"patient patient002: no patient folder; {training / 'patient002.zip'} is an archive where the folder belongs: unpack it")
    assert "is a file, not a folder" in rows[("patient003", "missing_image")].detail
    rows = quarantine_rows(u)
    assert sorted(rows) == [("2", "no_images"), ("3", "no_images")]
    assert rows[("2", "no_images")].file == str(ukbb.root / "2.zip")
    assert rows[("2", "no_images")].detail.endswith(f"{ukbb.root / '2.zip'} is an archive where the folder belongs: unpack it")
    assert rows[("3", "no_images")].detail.endswith(f"{ukbb.root / '3'} is a file, not a folder: replace it with the patient folder")
