"""Ninth adversarial round: ids, codes and files as spreadsheets and file systems leave them. An
id Excel wrote in scientific notation (``1.000001E+06``, or with its digits hidden, ``1E+06``), a
site or centre code saved as a float (UK Biobank field 54 ``11025.0``, M&Ms-1 centre ``3.0``), an
M&Ms-1 vendor letter typed in lower case, an id whose leading zeros Excel dropped, and an ACDC
Info.cfg that is a link to nowhere.
Each patient is read right or quarantined naming the patient, the file and the problem."""

from __future__ import annotations

from cardio_assets.cohort.ood import OodPolicy
from cardio_assets.cohort.readers import scan_acdc, scan_mms, scan_ukbb
from cardio_assets_tests.layouts import validate_scan, write_acdc_cohort, write_mms_cohort, write_ukbb_cohort


def rows_by_id(quarantine):
    """A quarantine table's rows by patient id, as (reason, file, detail)."""
    return {r.patient_id: (r.reason, r.file, r.detail) for r in quarantine.itertuples()}


def _edit_table(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# --- 1. ids in scientific notation -------------------------------------------------------------------


def test_an_id_in_scientific_notation_with_every_digit_is_read_as_its_number(tmp_path):
    """Excel shows a number too wide for its column as "1.000001E+06" and saves the CSV so: the
    row paired with no folder, patient 1000001 was quarantined twice (a row without a folder, a
    folder without a row). Every digit is there, so the id is now 1000001."""
    cohort = write_ukbb_cohort(tmp_path, [{"id": "1000001"}, {"id": "1000002"}])
    _edit_table(cohort.metadata, "\n1000001,", "\n1.000001E+06,")
    table, quarantine = validate_scan(scan_ukbb(cohort.root, cohort.metadata))
    assert list(table.patient_id) == ["1000001", "1000002"]
    assert quarantine.empty


def test_an_id_in_scientific_notation_with_digits_hidden_is_named_as_such(tmp_path):
    """"1E+06" may be 1000000 or 1000001: the digits are lost, so no id is made up; both the row
    and the folder it may be say so and how to export the table again (they said only "has no
    folder" and "has no row")."""
    cohort = write_ukbb_cohort(tmp_path, [{"id": "1000001"}, {"id": "1000002"}])
    _edit_table(cohort.metadata, "\n1000001,", "\n1E+06,")
    table, quarantine = validate_scan(scan_ukbb(cohort.root, cohort.metadata))
    assert list(table.patient_id) == ["1000002"]
    rows = rows_by_id(quarantine)
    reason, _, detail = rows["1E+06"]
    assert reason == "no_images" and "scientific notation" in detail and "digits" in detail and "Text" in detail
    reason, _, detail = rows["1000001"]
    assert reason == "missing_metadata" and "'1E+06' may be this one" in detail


# --- 2. codes saved as floats --------------------------------------------------------------------------


def test_a_ukbb_imaging_centre_saved_as_a_float_is_named(tmp_path):
    """A table with one blank in field 54 is saved by pandas with every centre a float: "11025.0"
    was taken as a site of that name, not Cheadle, so ``site=Cheadle`` held nobody out."""
    cohort = write_ukbb_cohort(tmp_path, [{"id": "1000001"}, {"id": "1000002"}])
    text = cohort.metadata.read_text().splitlines()
    text[0] += ",54-2.0"
    text[1] += ",11025.0"
    text[2] += ",11028.0"
    cohort.metadata.write_text("\n".join(text) + "\n")
    table, quarantine = validate_scan(scan_ukbb(cohort.root, cohort.metadata))
    assert quarantine.empty
    assert list(table.site) == ["Cheadle", "Bristol"]


def test_mms_centre_and_vendor_as_exports_leave_them_are_one_site_and_one_vendor(tmp_path):
    """An M&Ms-1 centre saved as "3.0" beside "3", and a vendor letter typed "a" beside "A", were
    two sites and two vendors: a hold-out of vendor A or site 3 left those patients in training."""
    cohort = write_mms_cohort(tmp_path, [
        {"id": "A1A1A1", "vendor": "A", "centre": "3"},
        {"id": "B2B2B2", "vendor": "a", "centre": "3.0"},
        {"id": "C3C3C3", "vendor": "B", "centre": "1"},
    ])
    table, quarantine = validate_scan(scan_mms(cohort.root, cohort.metadata))
    assert quarantine.empty
    assert list(table.vendor) == ["A", "A", "B"] and list(table.site) == ["3", "3", "1"]
    assert list(OodPolicy.parse("vendor=A").held_out(table)) == [True, True, False]
    assert list(OodPolicy.parse("site=3").held_out(table)) == [True, True, False]


# --- 3. an ACDC Info.cfg that is no file to read ---------------------------------------------------------


def _acdc_with_broken_info(tmp_path, breaks):
    cohort = write_acdc_cohort(tmp_path, [{"id": 1}, {"id": 2}])
    breaks(cohort.patients["patient002"]["info"])
    table, quarantine = validate_scan(scan_acdc(cohort.root))
    assert list(table.patient_id) == ["patient001"]
    return rows_by_id(quarantine)["patient002"]


def test_an_acdc_info_cfg_linking_to_nowhere_is_named_as_a_link(tmp_path):
    """A link whose target is gone said "has no Info.cfg", which `ls` contradicts."""
    def breaks(info):
        info.unlink()
        info.symlink_to(tmp_path / "moved" / "Info.cfg")

    reason, file, detail = _acdc_with_broken_info(tmp_path, breaks)
    assert reason == "missing_metadata" and file.endswith("patient002/Info.cfg")
    assert "symbolic link" in detail and str(tmp_path / "moved" / "Info.cfg") in detail


# --- 4. an id whose leading zeros Excel dropped ------------------------------------------------------------


def test_an_id_whose_leading_zeros_were_dropped_is_pointed_to_its_folder(tmp_path):
    """Excel reads an id column of digits as numbers: "0012345" is saved as "12345". The row and
    the folder were quarantined with nothing to connect them; each now names the other and the
    cause (they are not paired: "12345" and "0012345" may be two patients)."""
    cohort = write_ukbb_cohort(tmp_path, [{"id": "0012345"}, {"id": "1000002"}])
    _edit_table(cohort.metadata, "\n0012345,", "\n12345,")
    table, quarantine = validate_scan(scan_ukbb(cohort.root, cohort.metadata))
    assert list(table.patient_id) == ["1000002"]
    rows = rows_by_id(quarantine)
    assert rows["12345"][0] == "no_images" and "compare '0012345'" in rows["12345"][2]
    assert rows["0012345"][0] == "missing_metadata" and "compare '12345'" in rows["0012345"][2]
    assert "leading zeros" in rows["12345"][2] and "Excel" in rows["0012345"][2]
