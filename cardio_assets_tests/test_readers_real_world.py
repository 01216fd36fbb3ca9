"""Cohorts as outside data arrives: segmentations in another label convention, ED and ES
swapped, a table's ES frame that is not the mask's, upper-case extensions, folders where
files belong. Each patient is read right or quarantined naming the patient, the file and
the problem; the others go on."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from cardio_assets.cohort.readers import scan_acdc, scan_mms, scan_ukbb
from cardio_assets.cohort.validation import validate_entries
from cardio_assets.frames.preprocess import FrameSpec, frames_for_row
from cardio_assets_tests.layouts import write_acdc_cohort, write_mms_cohort, write_ukbb_cohort


def _validate(scan):
    cohort, quarantine = validate_entries(scan.entries)
    reader_rows = pd.DataFrame([q.as_dict() for q in scan.quarantine], columns=quarantine.columns)
    return cohort, pd.concat([reader_rows, quarantine], ignore_index=True)


def _rows(quarantine):
    return {pid: rows for pid, rows in quarantine.groupby("patient_id")}


def _voxels(path):
    return np.asanyarray(nib.load(path).dataobj)


def _resave(path, data):
    nib.save(nib.Nifti1Image(data, nib.load(path).affine), path)


def test_segmentations_in_another_label_convention_are_quarantined_not_read_as_lv(tmp_path):
    """A UK Biobank-layout folder whose masks come from a tool trained on ACDC (1 RV, 2 MYO, 3 LV)
    holds the same label values as 1 LV, 2 MYO, 3 RV: read as is, the RV became the LV cavity
    and the patient passed every check."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    files = paths.patients
    acdc_convention = np.array([0, 3, 2, 1], np.uint8)  # canonical -> ACDC
    lv_myo_swapped = np.array([0, 2, 1, 3], np.uint8)
    for key in ("ed_mask", "es_mask"):
        _resave(files["2"][key], acdc_convention[_voxels(files["2"][key])])
        _resave(files["3"][key], lv_myo_swapped[_voxels(files["3"][key])])

    cohort, quarantine = _validate(scan_ukbb(paths.root, paths.metadata))

    assert cohort["patient_id"].tolist() == ["1"]
    rows = _rows(quarantine)
    assert sorted(rows) == ["2", "3"]
    for pid, problem in (("2", "the LV and RV labels look swapped"), ("3", "LV cavity and myocardium swapped")):
        row = rows[pid].iloc[0]
        file = str(files[pid]["ed_mask"].absolute())
        assert (row["reason"], row["file"]) == ("labels_in_another_convention", file)
        assert f"patient {pid}:" in row["detail"] and file in row["detail"] and problem in row["detail"], row["detail"]


def test_ed_and_es_swapped_in_the_metadata_are_quarantined_naming_it(tmp_path):
    """ED and ES typed the wrong way round (M&Ms table, ACDC Info.cfg) gave masks of the right
    frames for the wrong phases: every ED channel showed ES. The LV cavity is largest at ED."""
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2", "raw": {"ED": "3", "ES": "0"}}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2, "info_cfg": "ED: 4\nES: 1\nGroup: NOR\n"}])

    m_cohort, m_quarantine = _validate(scan_mms(mms.root, mms.metadata))
    a_cohort, a_quarantine = _validate(scan_acdc(acdc.root))

    assert m_cohort["patient_id"].tolist() == ["A1"] and a_cohort["patient_id"].tolist() == ["patient001"]
    for quarantine, pid, file in ((m_quarantine, "A2", f"{mms.metadata}:3"),
                                  (a_quarantine, "patient002", str(acdc.patients["patient002"]["info"].absolute()))):
        assert quarantine[["patient_id", "reason", "file"]].values.tolist() == [[pid, "es_cavity_larger_than_ed", file]]
        detail = quarantine["detail"].iloc[0]
        assert detail.startswith(f"patient {pid}: the ES mask ") and "ED and ES look swapped (ED frame 3, ES frame 0" in detail


def test_a_table_es_frame_the_es_mask_was_not_drawn_on_is_quarantined(tmp_path):
    """UK Biobank layout with an es_frame column: the ES mask is a separate file, so a 1-based or
    otherwise wrong frame number was used as is, with an ES image of another phase than its mask."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1", "es": 3}, {"id": "2", "es": 3}], frame_columns=True)
    header, first, second = paths.metadata.read_text().splitlines()
    assert second.endswith(",0,3")
    paths.metadata.write_text("\n".join([header, first, second[: -len(",0,3")] + ",0,6"]) + "\n")

    cohort, quarantine = _validate(scan_ukbb(paths.root, paths.metadata))

    assert cohort[["patient_id", "es_frame", "es_from"]].values.tolist() == [["1", 3, "metadata"]]
    row = quarantine.iloc[0]
    assert (row["patient_id"], row["reason"], row["file"]) == ("2", "es_frame_disagrees_with_mask", f"{paths.metadata}:3")
    es_mask = str(paths.patients["2"]["es_mask"].absolute())
    assert f"patient 2: ES frame 6 ({paths.metadata}:3) agrees with the ES mask {es_mask} less" in row["detail"]
    assert "than frame 3 does" in row["detail"] and len(quarantine) == 1


def _upper_case_extension(path):
    upper = path.with_name(path.name.replace(".nii.gz", ".NII.GZ"))
    path.rename(upper)
    return upper


def test_files_with_upper_case_extensions_are_read_in_every_layout(tmp_path):
    """``sa.NII.GZ`` (Windows tools, DICOM converters) was reported as "does not exist" next to
    the file itself; an M&Ms folder without a table row whose files were so named was not even
    seen as a patient, so it was dropped without a word."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2", "missing": ["metadata"]}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}])
    for files in (ukbb.patients["1"], mms.patients["A1"], mms.patients["A2"], acdc.patients["patient001"]):
        for key in ("image", "ed_mask", "es_mask"):
            if files[key].exists():  # M&Ms: one label file for both phases
                _upper_case_extension(files[key])

    for scan, pid in ((scan_ukbb(ukbb.root, ukbb.metadata), "1"), (scan_mms(mms.root, mms.metadata), "A1"),
                      (scan_acdc(acdc.root), "patient001")):
        cohort, quarantine = _validate(scan)
        assert cohort["patient_id"].tolist() == [pid]
        assert cohort["image_path"].iloc[0].endswith(".NII.GZ") and cohort["es_mask_path"].iloc[0].endswith(".NII.GZ")
        frames = frames_for_row({**cohort.iloc[0].to_dict()}, training=False, spec=FrameSpec(crop_px=24, size=24))
        assert frames.images.shape == (1, 3, 24, 24)
        if pid == "A1":
            assert quarantine[["patient_id", "reason"]].values.tolist() == [["A2", "missing_metadata"]]
        else:
            assert quarantine.empty


def test_two_files_differing_only_in_letter_case_are_named_not_guessed(tmp_path):
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "2"}])
    image = paths.patients["2"]["image"]
    (image.parent / "SA.nii.gz").write_bytes(image.read_bytes())
    _upper_case_extension(image)
    result = scan_ukbb(paths.root, paths.metadata)
    assert [e.patient_id for e in result.entries] == ["1"]
    [row] = result.quarantine
    assert (row.patient_id, row.reason, row.file) == ("2", "missing_image", str(image))
    assert "several files differ from it only in letter case (SA.nii.gz, sa.NII.GZ)" in row.detail


def test_a_folder_where_a_file_belongs_is_named_as_a_folder(tmp_path):
    """A folder named like the cine or Info.cfg (an archive unpacked in place) was reported as
    "does not exist" / "has no Info.cfg", contradicting what the reader sees."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    cine = ukbb.patients["2"]["image"]
    cfg = acdc.patients["patient002"]["info"]
    for path in (cine, cfg):
        path.unlink()
        path.mkdir()

    u, a = scan_ukbb(ukbb.root, ukbb.metadata), scan_acdc(acdc.root)

    assert [e.patient_id for e in u.entries] == ["1"] and [e.patient_id for e in a.entries] == ["patient001"]
    [u_row], [a_row] = u.quarantine, a.quarantine
    assert (u_row.reason, u_row.file) == ("missing_image", str(cine))
    assert u_row.detail == f"patient 2: the cine file {cine} is a folder, not a NIfTI file"
    assert (a_row.reason, a_row.file) == ("missing_metadata", str(cfg))
    assert a_row.detail == f"patient folder {cfg.parent} has Info.cfg, but it is a folder, not a file"
