"""Seven more ways real cohorts arrive: a patient folder linked in from storage that is gone, a
NIfTI whose header has an axis of length 0, a named pipe where a file belongs, a cine or mask left
in another format (or under a NIfTI name with a suffix added), ids whose digits a spreadsheet grouped
in thousands, label files whose header scales the stored labels, a cine of one frame repeated,
a mask and a cine whose orientations differ, and an M&Ms row with one frame index blank. Each
patient is read right or quarantined naming the patient, the file and the problem; the run never
stops and nothing is lost."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from cardio_assets.cohort.readers import scan_acdc, scan_mms, scan_ukbb
from cardio_assets_tests.layouts import (
    entries_by_id,
    quarantine_rows,
    validate_scan,
    write_acdc_cohort,
    write_mms_cohort,
    write_ukbb_cohort,
)


def rows_by_id(quarantine):
    """A quarantine table's rows by patient id, as (reason, file, detail)."""
    return {r.patient_id: (r.reason, r.file, r.detail) for r in quarantine.itertuples()}


def _resave(path, array, like, **header):
    """`array` saved at `path` with the affine of the NIfTI `like`; header fields set after."""
    img = nib.Nifti1Image(array, like.affine)
    for name, value in header.items():
        img.header[name] = value
    nib.save(img, str(path))


# --- 1. a patient folder that is a link to storage that is gone -----------------------------------


def test_a_patient_folder_linked_to_storage_that_is_gone_is_named_in_every_layout(tmp_path):
    """Patient folders linked in from other storage (``1000002 -> /mnt/cmr/1000002``) that is moved
    or not mounted: the link is listed as a file, not a folder. ACDC reported "is a file, not a
    folder: replace it with the patient folder"; UK Biobank and M&Ms "has no folder", with no word
    of the link, the one thing to fix."""
    gone = tmp_path / "unmounted"
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1000001"}, {"id": "1000002"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "B2", "split": "Training/Labeled"}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    links = {("ukbb", "1000002", "no_images"): ukbb.patients["1000002"]["folder"],
             ("mms", "B2", "no_images"): mms.patients["B2"]["folder"],
             ("acdc", "patient002", "missing_image"): acdc.patients["patient002"]["folder"]}
    for (_, pid, _), folder in links.items():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        os.symlink(gone / pid, folder)
    results = {"ukbb": scan_ukbb(ukbb.root, ukbb.metadata), "mms": scan_mms(mms.root, mms.metadata),
               "acdc": scan_acdc(acdc.root)}
    assert sorted(entries_by_id(results["ukbb"])) == ["1000001"]
    assert sorted(entries_by_id(results["mms"])) == ["A1"]
    assert sorted(entries_by_id(results["acdc"])) == ["patient001"]
    for (source, pid, reason), link in links.items():
        rows = quarantine_rows(results[source])
        assert list(rows) == [(pid, reason)], source
        row = rows[(pid, reason)]
        assert row.file == str(link)
        assert f"{link} is a symbolic link to {gone / pid}, which does not exist" in row.detail
        assert "is a file, not a folder" not in row.detail


# --- 2. a header with an axis of length 0 ---------------------------------------------------------


def test_a_volume_whose_header_has_an_axis_of_length_0_quarantines_only_its_patient(tmp_path):
    """A conversion that wrote no slices gives a header of dimensions (0, 24, 4, 8): nibabel reads
    it as a flat array of no voxels, and the run stopped with an IndexError where the frames were
    counted. Now the patient is quarantined, naming the file and the empty axis."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1000001"}, {"id": "1000002"}, {"id": "1000003"}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    cine = ukbb.patients["1000002"]["image"]
    _resave(cine, np.zeros((0, 24, 4, 8), np.int16), nib.load(str(cine)))
    es_mask = ukbb.patients["1000003"]["es_mask"]
    _resave(es_mask, np.zeros((24, 24, 0), np.uint8), nib.load(str(es_mask)))
    acdc_cine = acdc.patients["patient002"]["image"]
    _resave(acdc_cine, np.zeros((24, 24, 4, 0), np.int16), nib.load(str(acdc_cine)))

    cohort, quarantine = validate_scan(scan_ukbb(ukbb.root, ukbb.metadata))
    assert list(cohort.patient_id) == ["1000001"]
    rows = rows_by_id(quarantine)
    assert rows["1000002"][:2] == ("unreadable_image", str(cine.absolute()))
    assert "dimensions (0, 24, 4, 8), with an axis of length 0: the file holds no voxels" in rows["1000002"][2]
    assert rows["1000003"][:2] == ("unreadable_es_mask", str(es_mask.absolute()))
    assert "dimensions (24, 24, 0)" in rows["1000003"][2]

    cohort, quarantine = validate_scan(scan_acdc(acdc.root))
    assert list(cohort.patient_id) == ["patient001"]
    reason, file, detail = rows_by_id(quarantine)["patient002"]
    assert (reason, file) == ("unreadable_image", str(acdc_cine.absolute()))
    assert detail.startswith("patient patient002: ") and "with an axis of length 0" in detail


# --- 3. a named pipe where a file belongs ---------------------------------------------------------


def test_a_file_that_is_neither_file_nor_folder_is_not_said_to_be_absent(tmp_path):
    """A named pipe (left by a streaming download or a tool that pipes its output) where the cine
    belongs: `ls` shows it, yet the row said the cine "does not exist"."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1000001"}, {"id": "1000002"}])
    cine = ukbb.patients["1000002"]["image"]
    cine.unlink()
    os.mkfifo(cine)
    result = scan_ukbb(ukbb.root, ukbb.metadata)
    assert sorted(entries_by_id(result)) == ["1000001"]
    row = quarantine_rows(result)[("1000002", "missing_image")]
    assert row.file == str(cine)
    assert "exists but is not a regular file (a named pipe, socket or device file)" in row.detail
    assert "does not exist" not in row.detail


# --- 4. a cine or mask in another format, or under a NIfTI name with a suffix added ------------------


def test_a_file_in_another_format_or_with_a_suffix_added_is_named_with_the_fix(tmp_path):
    """``sa.mha`` (a cine converted with SimpleITK to MetaImage), ``<code>_sa_gt.nrrd``, or
    ``patient002_4d.nii.gz.part`` (a download not finished): the row said only that the NIfTI
    "does not exist", with the file the user has right next to it."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1000001"}, {"id": "1000002"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "B2"}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    cine = ukbb.patients["1000002"]["image"]
    cine.rename(cine.with_name("sa.mha"))
    labels = mms.patients["B2"]["folder"] / "B2_sa_gt.nii.gz"
    labels.rename(labels.with_name("B2_sa_gt.nrrd"))
    acdc_cine = acdc.patients["patient002"]["image"]
    acdc_cine.rename(acdc_cine.with_name("patient002_4d.nii.gz.part"))

    row = quarantine_rows(scan_ukbb(ukbb.root, ukbb.metadata))[("1000002", "missing_image")]
    assert row.detail.endswith(f"{cine} does not exist, but sa.mha does: another format than NIfTI: "
                               f"convert it to sa.nii.gz")
    rows = quarantine_rows(scan_mms(mms.root, mms.metadata))
    assert sorted(rows) == [("B2", "missing_ed_mask"), ("B2", "missing_es_mask")]
    assert "does not exist, but B2_sa_gt.nrrd does: another format than NIfTI" in rows[("B2", "missing_ed_mask")].detail
    row = quarantine_rows(scan_acdc(acdc.root))[("patient002", "missing_image")]
    assert ("does not exist, but patient002_4d.nii.gz.part does: a NIfTI file under another name "
            "(a download not finished, or a copy?): check it and rename it to patient002_4d.nii.gz") in row.detail


# --- 5. ids a spreadsheet wrote with grouped digits -------------------------------------------------


def test_ids_with_digits_grouped_in_thousands_pair_with_their_folders(tmp_path):
    """An eid column given a number format in Excel is exported as the locale writes numbers:
    "1,000,002", "1.000.003", "1 000 004" (a no-break space in French) or "1'000'005". Each row and
    its folder were both quarantined (no folder; no row), with no hint of why. Read as the number,
    like an eid Excel saved as a float; ids that are not grouped digits are left alone."""
    patients = [{"id": "1000001"},
                {"id": "1000002", "raw": {"eid": "1,000,002"}},
                {"id": "1000003", "raw": {"eid": "1.000.003"}},
                {"id": "1000004", "raw": {"eid": "1\u00a0000\u00a0004"}},
                {"id": "1000005", "raw": {"eid": "1'000'005"}}]
    ukbb = write_ukbb_cohort(tmp_path / "u", patients)
    result = scan_ukbb(ukbb.root, ukbb.metadata)
    assert sorted(entries_by_id(result)) == ["1000001", "1000002", "1000003", "1000004", "1000005"]
    assert result.quarantine == []

    # a Windows Excel export: byte-order mark, CRLF, "sep=;" line, trailing empty columns, decimal
    # commas and grouped ids together
    ukbb = write_ukbb_cohort(tmp_path / "x", [{"id": "1000001"}, {"id": "1000002"}], columns="friendly")
    ukbb.metadata.write_bytes("\ufeffsep=;\r\neid;sex;age;bmi;icd10;;\r\n1.000.001;F;55;24,5;;;\r\n"
                              "1 000 002;M;61,5;22;I500;;\r\n;;;;;;\r\n".encode("utf-8"))
    e = entries_by_id(scan_ukbb(ukbb.root, ukbb.metadata))
    assert sorted(e) == ["1000001", "1000002"]
    assert (e["1000001"].bmi, e["1000002"].age, e["1000002"].diagnosis) == (24.5, 61.5, "hf")

    # "1.234" is a decimal, "12,34" no grouping: not read as ids 1234
    from cardio_assets.cohort.readers.base import table_id
    assert [table_id(v) for v in ("1.234", "12,34", "A1,000", "1,00,000", "1,000.002")] == \
        ["1.234", "12,34", "A1,000", "1,00,000", "1,000.002"]


# --- 6. label files whose header scales the labels ------------------------------------------------


def test_labels_scaled_by_the_header_say_so(tmp_path):
    """A writer that sets scl_slope 2 turns the stored labels 1, 2, 3 into 2, 4, 6 as read: the
    row named labels [4.0, 6.0] that are nowhere in the file."""
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    mask = acdc.patients["patient002"]["ed_mask"]
    img = nib.load(str(mask))
    scaled = nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.uint8), img.affine)
    scaled.header.set_slope_inter(2.0, 0.0)
    nib.save(scaled, str(mask))
    cohort, quarantine = validate_scan(scan_acdc(acdc.root))
    assert list(cohort.patient_id) == ["patient001"]
    reason, file, detail = rows_by_id(quarantine)["patient002"]
    assert (reason, file) == ("labels_outside_canonical_set", str(mask.absolute()))
    assert "labels [4.0, 6.0] outside the expected set" in detail
    assert "read after the header's scaling, scl_slope 2 and scl_inter 0" in detail


# --- 7. a cine of one frame repeated --------------------------------------------------------------


def test_a_cine_of_one_frame_repeated_is_quarantined_as_static(tmp_path):
    """A conversion that copied one frame into every time point: the row blamed the ES mask
    ("agrees with the ED frame as well as with any frame") where the cine is at fault."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1000001"}, {"id": "1000002"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "B2"}])
    cines = {"1000002": ukbb.patients["1000002"]["image"], "B2": mms.patients["B2"]["folder"] / "B2_sa.nii.gz"}
    for cine in cines.values():
        img = nib.load(str(cine))
        data = np.asanyarray(img.dataobj)
        nib.save(nib.Nifti1Image(np.repeat(data[..., :1], data.shape[3], axis=3), img.affine, img.header), str(cine))
    for scan, kept, pid in ((scan_ukbb(ukbb.root, ukbb.metadata), "1000001", "1000002"),
                            (scan_mms(mms.root, mms.metadata), "A1", "B2")):
        cohort, quarantine = validate_scan(scan)
        assert list(cohort.patient_id) == [kept]
        reason, file, detail = rows_by_id(quarantine)[pid]
        assert (reason, file) == ("static_cine", str(cines[pid].absolute()))
        assert detail == (f"patient {pid}: all 8 time frames of the cine {cines[pid].absolute()} are the same image "
                          f"(one frame repeated): ES cannot be told from ED")


# --- 8. a mask and a cine whose orientations differ -----------------------------------------------


def test_an_orientation_mismatch_shows_both_files_and_where_their_affines_come_from(tmp_path):
    """A cine rewritten without sform or qform (a converter that kept only the voxel sizes) no longer
    lies where its masks do: the row said only "ED mask affine differs from the cine's", naming
    neither the cine nor what differs, so the mask looked like the file at fault."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1000001"}, {"id": "1000002"}])
    cine = ukbb.patients["1000002"]["image"]
    img = nib.load(str(cine))
    bare = nib.Nifti1Image(np.asanyarray(img.dataobj), None)
    bare.header.set_zooms((1.8, 1.8, 8.0, 0.04))
    bare.header.set_sform(None, code=0)
    bare.header.set_qform(None, code=0)
    nib.save(bare, str(cine))
    cohort, quarantine = validate_scan(scan_ukbb(ukbb.root, ukbb.metadata))
    assert list(cohort.patient_id) == ["1000001"]
    reason, file, detail = rows_by_id(quarantine)["1000002"]
    mask = ukbb.patients["1000002"]["ed_mask"].absolute()
    assert (reason, file) == ("orientation_mismatch", str(mask))
    assert f"the mask {mask} has axes LPS, voxel sizes 1.8, 1.8, 8 mm" in detail
    assert f"from the sform (srow_x, srow_y, srow_z); the cine {cine.absolute()} has axes LAS" in detail
    assert "from the voxel sizes (pixdim) alone, as it stores neither sform nor qform" in detail


def test_an_affine_whose_file_is_gone_by_the_message_is_still_described(tmp_path):
    """The header is read again only to word a quarantine row: a file removed or truncated under the
    run since it was validated gets its axes and sizes, and says why the header fields are missing."""
    from cardio_assets.cohort.volumes import describe_affine

    truncated = tmp_path / "sa.nii.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00")  # a gzip header and nothing after it
    for path in (tmp_path / "gone.nii.gz", truncated):
        text = describe_affine(str(path), np.diag([1.8, 1.8, 8.0, 1.0]))
        assert text.startswith("axes RAS, voxel sizes 1.8, 1.8, 8 mm, origin (0, 0, 0)")
        assert text.endswith("from the header (which could not be read again to say which fields)")


# --- 9. an M&Ms row with one frame index blank ----------------------------------------------------


def test_an_mms_row_with_one_frame_index_blank_names_it(tmp_path):
    """"ED and ES frame indices are required" left the reader to find which of the two is blank."""
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "B2", "raw": {"ED": ""}},
                                            {"id": "C3", "raw": {"ED": "NA", "ES": " "}}])
    rows = quarantine_rows(scan_mms(mms.root, mms.metadata))
    assert sorted(rows) == [("B2", "missing_metadata"), ("C3", "missing_metadata")]
    assert rows[("B2", "missing_metadata")].detail == (
        f"patient B2: line 3 of {mms.metadata}: the ED frame index is blank (ED and ES frame indices are required)")
    assert "the ED and ES frame indices are blank" in rows[("C3", "missing_metadata")].detail
