"""Four more ways real cohorts arrive: a table whose exporter ends every data row with a stray
separator, a volume whose affine holds NaN or inf, a UK Biobank folder of zipped participants
(as UK Biobank delivers bulk CMR), and one patient folder reached twice through symbolic links.
Each patient is read right or quarantined naming the patient, the file and the problem; the run
never stops silently and nothing is lost."""

from __future__ import annotations

import os
import shutil
import unicodedata

import nibabel as nib
import numpy as np
import pytest

from cardio_assets.cohort.readers import SourceMissingError, scan_acdc, scan_mms, scan_ukbb
from cardio_assets_tests.layouts import (
    UKB_HEADER,
    entries_by_id,
    quarantine_rows,
    validate_scan,
    write_acdc_cohort,
    write_mms_cohort,
    write_ukbb_cohort,
)

# --- 1. a stray separator at the end of every data row ------------------------------------------


def test_rows_ending_in_a_stray_separator_are_read_and_values_past_the_header_still_quarantined(tmp_path):
    """Some exporters end every data row (not the header) with a separator: one empty field more
    than the header, so every row was quarantined. Those rows are read without it. A row that,
    past that empty field, still has more fields than columns (a decimal comma in BMI, even before
    an empty last column) is quarantined by line, never read shifted (BMI 27, ICD-10 code "5")."""
    ids = ["1", "2", "3", "4", "5"]
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": pid} for pid in ids])
    ukbb.metadata.write_text(f"{UKB_HEADER}\n"
                             "1,0,55,24.0,,\n"  # no ICD-10 code: the last column empty, then the stray one
                             "2,1,61,27.5,I500,\n"
                             "3,0,58,27,5,,\n"  # BMI 27,5 typed with a decimal comma, no ICD-10 code
                             "4,1,66,27,5,I500,\n"  # BMI 27,5 with a code
                             "5,1,70,30.5,I10,\n")
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1", "bmi": 24.0}, {"id": "A2", "diagnosis": "hf"}],
                           sep=";", crlf=True)
    lines = mms.metadata.read_bytes().decode().split("\r\n")
    mms.metadata.write_bytes("\r\n".join([lines[0]] + [f"{line};" if line else line for line in lines[1:]]).encode())

    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)

    e = entries_by_id(u)
    assert sorted(e) == ["1", "2", "5"]
    assert [(e[p].sex, e[p].age, e[p].bmi, e[p].diagnosis) for p in ("1", "2", "5")] == [
        ("female", 55.0, 24.0, "healthy"), ("male", 61.0, 27.5, "hf"), ("male", 70.0, 30.5, "healthy")]
    assert e["5"].metadata_ref == f"{ukbb.metadata}:6"
    rows = quarantine_rows(u)
    assert sorted(rows) == [("3", "missing_metadata"), ("4", "missing_metadata")]
    for pid, line in (("3", 4), ("4", 5)):
        detail = rows[(pid, "missing_metadata")].detail
        assert f"patient {pid}: line {line} of metadata table {ukbb.metadata} has 7 fields where its header has 5" in detail
        assert "more fields than columns" in detail
    assert m.quarantine == []
    assert sorted(entries_by_id(m)) == ["A1", "A2"]
    assert entries_by_id(m)["A1"].bmi == pytest.approx(24.0) and entries_by_id(m)["A2"].diagnosis == "hf"


def test_one_row_ending_in_an_empty_field_is_not_taken_for_a_stray_separator(tmp_path):
    """Where the other rows have the header's fields, one row with a single empty field too many is
    as likely a decimal comma before an empty last column ("27,5" then no ICD-10 code): dropping
    the empty field would read BMI 27 and the code "5". It stays quarantined, naming its line."""
    ukbb = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    ukbb.metadata.write_text(f"{UKB_HEADER}\n1,0,55,24.0,\n2,1,58,27,5,\n3,0,61,26.0,I500\n")

    result = scan_ukbb(ukbb.root, ukbb.metadata)

    assert sorted(entries_by_id(result)) == ["1", "3"]
    [row] = result.quarantine
    assert (row.patient_id, row.reason) == ("2", "missing_metadata")
    assert f"line 3 of metadata table {ukbb.metadata} has 6 fields where its header has 5" in row.detail


# --- 2. an affine that is not finite ------------------------------------------------------------


def _resave_with_header(path, edit):
    """`path` saved again with its header changed by `edit(header)` (sform/qform fields written as
    is: nibabel refuses to build such an image from an affine)."""
    img = nib.load(path)
    header = img.header.copy()
    edit(header)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header=header), path)


def test_a_volume_whose_affine_is_not_finite_is_quarantined_as_such(tmp_path):
    """A cine whose sform holds NaN, or a mask whose qform holds inf, read as an
    `orientation_mismatch` of the mask (for the cine's fault, the wrong file was named); the file
    is named with the affine as the problem."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "2"}, {"id": "3"}])

    def nan_sform(header):
        header["srow_x"] = [np.nan, 0.0, 0.0, 21.0]

    def inf_qform(header):
        header.set_qform(header.get_best_affine(), code=1)
        header["qoffset_y"] = np.inf
        header["sform_code"] = 0

    _resave_with_header(paths.patients["2"]["image"], nan_sform)
    _resave_with_header(paths.patients["3"]["es_mask"], inf_qform)
    assert not np.isfinite(nib.load(paths.patients["3"]["es_mask"]).affine).all()

    cohort, quarantine = validate_scan(scan_ukbb(paths.root, paths.metadata))

    assert cohort["patient_id"].tolist() == ["1"]
    rows = quarantine.set_index("patient_id")
    for pid, key, transform in (("2", "image", "sform"), ("3", "es_mask", "qform")):
        file = str(paths.patients[pid][key].absolute())
        assert (rows.loc[pid, "reason"], rows.loc[pid, "file"]) == ("nonfinite_affine", file)
        detail = rows.loc[pid, "detail"]
        assert detail.startswith(f"patient {pid}: ") and f"{file}: its affine" in detail
        assert "not finite" in detail and transform in detail


# --- 3. a UK Biobank folder of zipped participants --------------------------------------------


def test_a_ukbb_folder_holding_only_zipped_participants_says_to_unzip_them(tmp_path):
    """UK Biobank delivers bulk CMR as one zip per participant and field (`<eid>_20209_2_0.zip`);
    a root holding only those said it found no patient folders, as if empty."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1000015"}, {"id": "1000023"}, {"id": "1000031"}])
    for pid, folder in ((pid, files["folder"]) for pid, files in paths.patients.items()):
        shutil.make_archive(str(paths.root / f"{pid}_20209_2_0"), "zip", folder)
        shutil.rmtree(folder)
    (paths.root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    with pytest.raises(SourceMissingError) as raised:
        scan_ukbb(paths.root, paths.metadata)

    message = str(raised.value)
    assert message.startswith(f"ukbb: looked for patient folders <eid>/sa.nii.gz in {paths.root.resolve()} and found none")
    assert "but 3 zip files" in message and f"such as {paths.root / '1000015_20209_2_0.zip'}" in message
    assert "unzip" in message and 'for f in *.zip' in message
    assert "DICOM" in message  # UK Biobank's bulk zips hold DICOM, not the sa.nii.gz layout


# --- 4. one patient folder reached twice through links ------------------------------------------


def test_links_to_one_patient_folder_read_the_patient_once_and_two_folders_stay_duplicates(tmp_path):
    """A patient folder linked in next to itself (``A1 -> Training/Labeled/A1``), or linked twice,
    was two folders of one id: ``duplicate_id``, the patient lost. Paths that are one folder on
    disk read the patient once (from the real folder, so its release folder is right); two
    different folders of one id stay a duplicate."""
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1", "split": "Training/Labeled"},
                                            {"id": "A2", "split": "Training/Labeled"}])
    os.symlink(mms.root / "Training" / "Labeled" / "A1", mms.root / "A1")
    shutil.copytree(mms.root / "Training" / "Labeled" / "A2", mms.root / "Validation" / "A2")  # a second, real folder
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    for where in ("links", "more_links"):
        (acdc.root / where).mkdir()
        os.symlink(acdc.root / "training" / "patient001", acdc.root / where / "patient001")
    zoe = unicodedata.normalize("NFC", "Zoë")
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": zoe}])
    os.symlink(ukbb.root / zoe, ukbb.root / unicodedata.normalize("NFD", zoe))  # the same name, as a Mac writes it

    m, a, u = scan_mms(mms.root, mms.metadata), scan_acdc(acdc.root), scan_ukbb(ukbb.root, ukbb.metadata)

    assert sorted(entries_by_id(m)) == ["A1", "A2"]
    assert entries_by_id(m)["A1"].extra["release_folder"] == "Training/Labeled"
    [row] = m.quarantine
    assert (row.patient_id, row.reason, row.file) == ("A2", "duplicate_id", str(mms.root / "Validation" / "A2"))
    assert sorted(entries_by_id(a)) == ["patient001", "patient002"] and a.quarantine == []
    assert entries_by_id(a)["patient001"].extra["release_folder"] == "training"
    assert sorted(entries_by_id(u)) == [zoe] and u.quarantine == []
    assert entries_by_id(u)[zoe].image_path == str((ukbb.root / zoe / "sa.nii.gz").absolute())
