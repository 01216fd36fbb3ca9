"""Cohorts as outside data arrives: segmentations in another label convention, ED and ES
swapped, a table's ES frame that is not the mask's, upper-case extensions, folders where
files belong, accented ids in another Unicode normalisation than their folders, macOS zip
leftovers (``__MACOSX``, ``._name``, ``.DS_Store``), volumes with trailing size-1 axes. Each patient is read right or quarantined naming the patient, the file and
the problem; the others go on."""

from __future__ import annotations

import shutil
import unicodedata

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


def _nfd(text):
    return unicodedata.normalize("NFD", text)


def _nfc(text):
    return unicodedata.normalize("NFC", text)


def _rename_to(path, name):
    """Rename `path` to `name` in the same folder (a name as macOS would store it, say)."""
    target = path.with_name(name)
    path.rename(target)
    return target


def _mms_folder_to_nfd(folder):
    """An M&Ms patient folder as a Mac stores it: the folder's and its files' names in NFD."""
    for file in folder.iterdir():
        _rename_to(file, _nfd(file.name))
    return _rename_to(folder, _nfd(folder.name))


def test_ids_differing_only_in_unicode_normalisation_pair_rows_with_folders(tmp_path):
    """An accented id typed in the table as one code point (NFC) while macOS stored the folder
    name as "e" plus a combining accent (NFD), or the other way round, left the row without its
    folder ("no_images") and the folder without its row ("missing_metadata")."""
    jose, zoe = _nfc("José"), _nfc("Zoë")
    assert _nfd(jose) != jose and _nfd(zoe) != zoe  # the two encodings really differ
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": jose}, {"id": _nfd(zoe)}])
    jose_folder = _rename_to(ukbb.patients[jose]["folder"], _nfd(jose))  # row NFC, folder NFD
    _rename_to(ukbb.patients[_nfd(zoe)]["folder"], zoe)  # row NFD, folder NFC
    mms = write_mms_cohort(tmp_path / "m", [{"id": jose}])
    mms_folder = _mms_folder_to_nfd(mms.patients[jose]["folder"])

    u_cohort, u_quarantine = _validate(scan_ukbb(ukbb.root, ukbb.metadata))
    m_cohort, m_quarantine = _validate(scan_mms(mms.root, mms.metadata))

    assert u_quarantine.empty and m_quarantine.empty
    assert u_cohort["patient_id"].tolist() == [jose, zoe] and m_cohort["patient_id"].tolist() == [jose]
    # the files are read where they are: nothing is renamed on disk
    assert u_cohort["image_path"].iloc[0] == str((jose_folder / "sa.nii.gz").absolute())
    assert m_cohort["image_path"].iloc[0] == str((mms_folder / _nfd(f"{jose}_sa.nii.gz")).absolute())


def test_ids_differing_only_in_unicode_normalisation_are_duplicates(tmp_path):
    """Two folders whose names are the same text in NFC and NFD (copied from a Mac next to a
    copy made elsewhere) are one patient's two folders: the first is used, the second is
    quarantined as a duplicate, as folders found twice are. Two table rows so are one row
    typed twice."""
    zoe = _nfc("Zoë")
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": zoe}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": zoe, "split": "Training"}, {"id": zoe, "split": "Testing",
                                                                               "missing": ["metadata"]}])
    u_nfc = ukbb.patients[zoe]["folder"]
    u_nfd = ukbb.root / _nfd(zoe)
    shutil.copytree(u_nfc, u_nfd)
    m_nfd = _mms_folder_to_nfd(mms.root / "Testing" / zoe)
    m_nfc = mms.root / "Training" / zoe

    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)

    # sorted, NFD ("e" + accent) comes before NFC ("ë"); the M&Ms walk takes Testing first
    for result, first, second in ((u, u_nfd, u_nfc), (m, m_nfd, m_nfc)):
        [entry] = result.entries
        assert entry.patient_id == zoe and entry.image_path.startswith(str(first.absolute()))
        [row] = result.quarantine
        assert (row.patient_id, row.reason, row.file) == (zoe, "duplicate_id", str(second))
        assert f"has a second folder {second}; the first, {first}, is used" in row.detail

    rows = write_ukbb_cohort(tmp_path / "rows", [{"id": zoe, "duplicate": True}])
    header, first_row, copy = rows.metadata.read_text(encoding="utf-8").splitlines()
    assert copy == first_row
    rows.metadata.write_text("\n".join([header, first_row, _nfd(copy)]) + "\n", encoding="utf-8")
    result = scan_ukbb(rows.root, rows.metadata)
    assert [e.patient_id for e in result.entries] == [zoe]
    [row] = result.quarantine
    assert (row.patient_id, row.reason) == (zoe, "duplicate_id")
    assert "the copies are identical, so line 2 is kept and the copy on line 3 is quarantined" in row.detail


def _macos_leftovers(folder, names):
    """What macOS adds next to the files of `folder` on a non-Mac volume: a ``._name``
    AppleDouble file per name (resource fork bytes, not NIfTI) and a ``.DS_Store``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"._{name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")


def _unzipped_on_a_mac(root, patient_folders):
    """`root` as unzipping a Mac-made archive leaves it: ``__MACOSX/`` holding a copy of the
    tree made of ``._name`` files, and ``._name`` / ``.DS_Store`` files beside the real ones."""
    _macos_leftovers(root, [p.name for p in root.iterdir()])
    for folder in patient_folders:
        names = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        _macos_leftovers(root / "__MACOSX" / folder.relative_to(root), names)
        _macos_leftovers(folder, names)
        _macos_leftovers(root / "__MACOSX" / folder.parent.relative_to(root), [folder.name])


def test_macos_zip_leftovers_are_ignored_in_every_layout(tmp_path):
    """Unzipping an archive made on a Mac leaves ``__MACOSX/`` beside the data (a copy of the
    folder tree made of ``._name`` AppleDouble files): it was read as a patient folder without
    a row (UK Biobank), or as each patient's second folder (M&Ms: duplicate_id; ACDC, where it
    sorts first, its ``._`` copy was used and the real folder quarantined)."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2", "split": "Training/Labeled"}])
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2, "split": "testing"}])
    for paths in (ukbb, mms, acdc):
        _unzipped_on_a_mac(paths.root, [files["folder"] for files in paths.patients.values()])
    assert (acdc.root / "__MACOSX" / "training" / "patient001" / "._Info.cfg").is_file()

    for scan, ids in ((scan_ukbb(ukbb.root, ukbb.metadata), ["1", "2"]), (scan_mms(mms.root, mms.metadata), ["A1", "A2"]),
                      (scan_acdc(acdc.root), ["patient001", "patient002"])):
        assert scan.quarantine == []
        assert all("__MACOSX" not in e.image_path and "/._" not in e.image_path for e in scan.entries)
        cohort, quarantine = _validate(scan)
        assert cohort["patient_id"].tolist() == ids and quarantine.empty


def test_trailing_singleton_axes_are_dropped_not_quarantined(tmp_path):
    """A cine saved as (x, y, z, t, 1) or a 3D mask as (x, y, z, 1, 1) (vector-image writers,
    some converters) holds the same voxels as the 4D / 3D file, but was quarantined as
    unreadable. Only trailing size-1 axes go: another extra axis is still named as wrong."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}])
    files = ukbb.patients
    _resave(files["1"]["image"], _voxels(files["1"]["image"])[..., None])
    _resave(files["1"]["ed_mask"], _voxels(files["1"]["ed_mask"])[..., None, None])
    _resave(files["1"]["es_mask"], _voxels(files["1"]["es_mask"])[..., None])
    two_channels = np.stack([_voxels(files["2"]["image"])] * 2, axis=-1)
    _resave(files["2"]["image"], two_channels)
    _resave(files["3"]["ed_mask"], np.stack([_voxels(files["3"]["ed_mask"])[..., None]] * 2, axis=-1))
    labels = mms.patients["A1"]["labels"]
    _resave(labels, _voxels(labels)[..., None])

    u_cohort, u_quarantine = _validate(scan_ukbb(ukbb.root, ukbb.metadata))
    m_cohort, m_quarantine = _validate(scan_mms(mms.root, mms.metadata))

    assert m_quarantine.empty and m_cohort["patient_id"].tolist() == ["A1"]
    assert u_cohort["patient_id"].tolist() == ["1"]
    assert u_cohort[["n_x", "n_y", "n_slices", "n_frames"]].values.tolist() == [[24, 24, 4, 8]]
    for cohort in (u_cohort, m_cohort):
        frames = frames_for_row({**cohort.iloc[0].to_dict()}, training=False, spec=FrameSpec(crop_px=24, size=24))
        assert frames.images.shape == (1, 3, 24, 24)
    rows = _rows(u_quarantine)
    assert sorted(rows) == ["2", "3"]
    cine, ed_mask = rows["2"].iloc[0], rows["3"].iloc[0]
    assert (cine["reason"], cine["file"]) == ("unreadable_image", str(files["2"]["image"]))
    assert "expected a 4D cine (x, y, z, t), found shape (24, 24, 4, 8, 2)" in cine["detail"]
    assert (ed_mask["reason"], ed_mask["file"]) == ("unreadable_ed_mask", str(files["3"]["ed_mask"]))
    assert "expected a 3D label map, found shape (24, 24, 4, 1, 2)" in ed_mask["detail"]
