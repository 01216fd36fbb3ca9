"""Six more ways real cohorts arrive: folder names that are not UTF-8 (a Windows zip unpacked on
Linux), two exports concatenated (the header again mid-table), files a crashed write left padded
with zero bytes, a gzip-compressed NIfTI named ``.nii`` (or a gzip holding something else), M&Ms
ED/ES indices that point at unlabelled frames of the 4D label file, and a patient folder unpacked
into a folder of its own name. Each patient is read right or quarantined naming the patient, the
file and the problem; the run never stops and nothing is lost."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from cardio_assets.cohort.readers import MetadataFormatError, scan_acdc, scan_mms, scan_ukbb
from cardio_assets.cohort.readers.base import QuarantineRow
from cardio_assets.cohort.validation import quarantine_frame, validate_entries
from cardio_assets_tests.layouts import (
    entries_by_id,
    quarantine_rows,
    validate_scan,
    write_acdc_cohort,
    write_mms_cohort,
    write_ukbb_cohort,
)


def quarantine_rows_by_id(quarantine):
    """A quarantine table's rows by patient id, as (reason, file, detail)."""
    return {r.patient_id: (r.reason, r.file, r.detail) for r in quarantine.itertuples()}


# --- 1. folder names that are not UTF-8 ---------------------------------------------------------


def test_folder_names_that_are_not_utf8_quarantine_their_patient_and_the_tables_can_be_stored(tmp_path):
    """A zip made on Windows and unpacked on Linux names folders in Latin-1 bytes, which Python
    keeps as lone surrogates ("Donn\\udce9es"). A quarantine row holding one stopped the run
    (`quarantine_frame`: "surrogates not allowed"), and a patient below such a folder put a path
    into the cohort table that no Parquet file can hold. Now the name is written with \\xNN
    escapes, and a patient whose files cannot be named in UTF-8 is quarantined saying so."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    os.mkdir(os.fsencode(ukbb.root) + b"/Donn\xe9es")  # a stray folder, Latin-1 "Données"
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2, "split": "testing"}])
    latin1_split = os.fsencode(acdc.root) + b"/Testing_\xe9t\xe9"
    os.rename(acdc.root / "testing", latin1_split)
    shown_split = f"{acdc.root}/Testing_\\xe9t\\xe9"

    u, a = scan_ukbb(ukbb.root, ukbb.metadata), scan_acdc(acdc.root)
    reader_rows = quarantine_frame([q.as_dict() for q in u.quarantine + a.quarantine])  # raised before
    cohort, bad = validate_entries(u.entries + a.entries)

    assert cohort["patient_id"].tolist() == ["1", "2", "patient001"]
    assert reader_rows[["patient_id", "reason", "file"]].values.tolist() == [
        ["Donn\\xe9es", "missing_metadata", str(ukbb.metadata)]]
    assert reader_rows["detail"][0] == (f"patient folder {ukbb.root}/Donn\\xe9es has no row in metadata table "
                                        f"{ukbb.metadata}")
    image = f"{shown_split}/patient002/patient002_4d.nii.gz"
    assert bad[["patient_id", "reason", "file"]].values.tolist() == [["patient002", "undecodable_path", image]]
    assert bad["detail"][0].startswith(f"patient patient002: the path {image} holds bytes that are not UTF-8")
    for table in (cohort, bad, reader_rows):  # what the lake stores
        table.to_parquet(tmp_path / "table.parquet")


def test_a_quarantine_row_names_a_non_utf8_file_readably():
    """The escape is applied to every field of a row, wherever it was made."""
    row = QuarantineRow("Donn\udce9es", "ukbb", "/data/Donn\udce9es/sa.nii.gz", "missing_image",
                        "patient Donn\udce9es: the cine file /data/Donn\udce9es/sa.nii.gz does not exist")
    assert row.as_dict() == {"patient_id": "Donn\\xe9es", "source": "ukbb", "file": "/data/Donn\\xe9es/sa.nii.gz",
                             "reason": "missing_image",
                             "detail": "patient Donn\\xe9es: the cine file /data/Donn\\xe9es/sa.nii.gz does not exist"}


# --- 2. two exports concatenated: the header again mid-table -----------------------------------


def test_a_header_repeated_mid_table_is_not_a_patient(tmp_path):
    """`cat part1.csv part2.csv > all.csv` repeats the header (with its byte-order mark) mid-table.
    It was read as a patient "eid" (M&Ms: "External code") with no folder; it is skipped, and the
    rows either side are read with their own file lines."""
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": str(i)} for i in range(1, 5)])
    lines = ukbb.metadata.read_text().splitlines()
    ukbb.metadata.write_text("\n".join(lines[:3] + ["\ufeff" + lines[0]] + lines[3:]) + "\n")
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2"}, {"id": "A3"}], sep=";")
    lines = mms.metadata.read_text().splitlines()
    mms.metadata.write_text("\n".join(lines[:2] + [lines[0]] + lines[2:]) + "\n")

    u, m = scan_ukbb(ukbb.root, ukbb.metadata), scan_mms(mms.root, mms.metadata)

    assert (u.quarantine, m.quarantine) == ([], [])
    assert {pid: e.metadata_ref for pid, e in entries_by_id(u).items()} == {
        "1": f"{ukbb.metadata}:2", "2": f"{ukbb.metadata}:3", "3": f"{ukbb.metadata}:5", "4": f"{ukbb.metadata}:6"}
    assert [(e.patient_id, e.metadata_ref) for e in m.entries] == [
        ("A1", f"{mms.metadata}:2"), ("A2", f"{mms.metadata}:4"), ("A3", f"{mms.metadata}:5")]


# --- 3. files padded with zero bytes by a crashed write ----------------------------------------


def test_zero_byte_padding_is_no_data_and_no_utf16(tmp_path):
    """A write cut short by a crash or power loss leaves a file's tail as zero bytes. Any zero byte
    made a text file read as UTF-16: a good ACDC Info.cfg became mojibake ("line 1 '䑅›...' is not
    'Key: value'"), and a table's zero tail was a patient whose id was 2000 NUL characters."""
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}])
    info = acdc.patients["patient002"]["info"]
    info.write_bytes(info.read_bytes() + b"\0" * 7)
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    ukbb.metadata.write_bytes(ukbb.metadata.read_bytes() + b"\0" * 2000)
    small = write_ukbb_cohort(tmp_path / "s", [{"id": "1"}, {"id": "2"}])
    small.metadata.write_bytes(small.metadata.read_bytes() + b"\0" * 3)

    a = scan_acdc(acdc.root)
    assert a.quarantine == [] and sorted(entries_by_id(a)) == ["patient001", "patient002"]
    assert entries_by_id(a)["patient002"].extra["group"] == "NOR"
    for paths in (ukbb, small):
        u = scan_ukbb(paths.root, paths.metadata)
        assert u.quarantine == [] and [(e.patient_id, e.sex) for e in u.entries] == [("1", "female"), ("2", "male")]


def test_a_table_of_only_zero_bytes_is_refused_naming_the_damage(tmp_path):
    """A table whose every byte is zero (the write never landed) was read as one column named by
    600 NUL characters, and refused for lacking the others."""
    mms = write_mms_cohort(tmp_path, [{"id": "A1"}])
    mms.metadata.write_bytes(b"\0" * 600)
    with pytest.raises(MetadataFormatError) as raised:
        scan_mms(mms.root, mms.metadata)
    assert str(raised.value) == (f"metadata table {mms.metadata} holds only zero bytes (a write that never completed, "
                                 f"or a damaged copy): give an intact copy of the table")


# --- 4. a NIfTI gzip-compressed under .nii, a gzip that holds no NIfTI -------------------------


def test_gzip_files_that_are_not_what_their_name_says_are_named_with_the_cause(tmp_path):
    """A .nii.gz renamed .nii (or saved so by a tool) and a gzip holding no NIfTI (a DICOM series
    or text gzipped under the expected name) were "Cannot work out file type": now the detail says
    what the file is and what to do."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    f = paths.patients
    renamed = f["1"]["folder"] / "sa.nii"
    f["1"]["image"].rename(renamed)
    f["2"]["es_mask"].write_bytes(gzip.compress(b"DICM" + b"\0" * 400))

    cohort, quarantine = validate_scan(scan_ukbb(paths.root, paths.metadata))

    assert cohort["patient_id"].tolist() == ["3"]
    rows = quarantine.set_index("patient_id")
    assert rows.loc["1", ["reason", "file"]].tolist() == ["unreadable_image", str(renamed.absolute())]
    assert rows.loc["1", "detail"].endswith("; the file is gzip-compressed but named .nii: rename it to .nii.gz")
    es = str(f["2"]["es_mask"].absolute())
    assert rows.loc["2", ["reason", "file"]].tolist() == ["unreadable_es_mask", es]
    assert rows.loc["2", "detail"].endswith("; it is a gzip file, but what it holds is not a NIfTI image (no NIfTI magic "
                                            "in its header)")


# --- 5. M&Ms ED/ES pointing at unlabelled frames -----------------------------------------------


def test_mms_indices_at_unlabelled_frames_name_the_frames_that_hold_labels(tmp_path):
    """M&Ms labels only the ED and ES frames of its 4D label file. A table whose ED/ES are 1-based
    (or from another release) pointed at empty frames: "ED mask has no LV cavity voxels", with no
    word of the frame, of where it came from, or of the frames that hold labels."""
    paths = write_mms_cohort(tmp_path, [{"id": "A1"}, {"id": "A2", "raw": {"ED": "1", "ES": "4"}},
                                        {"id": "A3", "raw": {"ES": "4"}}])

    cohort, quarantine = validate_scan(scan_mms(paths.root, paths.metadata))

    assert cohort["patient_id"].tolist() == ["A1"]
    rows = quarantine_rows_by_id(quarantine)
    labels = {pid: str(paths.patients[pid]["labels"].absolute()) for pid in ("A2", "A3")}
    assert rows["A2"][:2] == ("empty_ed_mask", labels["A2"])
    assert rows["A2"][2] == (f"patient A2: ED mask has no LV cavity voxels: frame 1 of {labels['A2']} (the ED index on "
                             f"{paths.metadata}:3) holds no labels; the frames that do are 0, 3 (frames are 0-based: "
                             f"are the table's ED and ES 1-based?)")
    assert rows["A3"][:2] == ("empty_es_mask", labels["A3"])
    assert f"frame 4 of {labels['A3']} (the ES index on {paths.metadata}:4) holds no labels; the frames that do are 0, 3" in rows["A3"][2]


def test_a_labelled_frame_without_lv_keeps_the_plain_message(tmp_path):
    """The frame note is only for a frame holding no labels at all (not merely no LV), and only for
    4D label files: a 3D mask keeps its message."""
    paths = write_ukbb_cohort(tmp_path, [{"id": "1"}, {"id": "2"}])
    es = paths.patients["2"]["es_mask"]
    data = np.asanyarray(nib.load(es).dataobj).copy()
    data[data == 1] = 2
    nib.save(nib.Nifti1Image(data, nib.load(es).affine), es)

    cohort, quarantine = validate_scan(scan_ukbb(paths.root, paths.metadata))

    assert cohort["patient_id"].tolist() == ["1"]
    assert quarantine_rows_by_id(quarantine)["2"] == ("empty_es_mask", str(es.absolute()), "patient 2: ES mask has no LV cavity voxels")
    assert quarantine_rows(scan_ukbb(paths.root, paths.metadata)) == {}


# --- 6. a patient folder unpacked into a folder of its own name --------------------------------


def _nest(folder):
    """Move `folder` into a new folder of its own name: ``X/`` becomes ``X/X/``, as "Extract to X/"
    unpacks a zip that already holds ``X/``."""
    moved = folder.parent / f"{folder.name}.unpacking"
    folder.rename(moved)
    folder.mkdir()
    moved.rename(folder / folder.name)
    return folder / folder.name


def test_a_patient_folder_holding_only_its_namesake_is_read_from_inside(tmp_path):
    """``patient002/patient002/`` was two folders of one patient: ACDC and M&Ms used the empty
    outer one (files "missing") and quarantined the real one as a duplicate; UK Biobank reported the
    three files missing. The outer folder, holding nothing but its namesake (and macOS leftovers),
    is read as the inner one. A folder with files of its own beside the namesake is not a wrapper:
    the two stay two folders, reported as before."""
    acdc = write_acdc_cohort(tmp_path / "a", [{"id": 1}, {"id": 2}, {"id": 3}])
    inner = {"patient002": _nest(acdc.patients["patient002"]["folder"])}
    (acdc.patients["patient002"]["folder"] / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    outer3 = acdc.patients["patient003"]["folder"]
    (_nest(outer3) / "Info.cfg").rename(outer3 / "Info.cfg")  # files on both levels: not a wrapper
    mms = write_mms_cohort(tmp_path / "m", [{"id": "A1"}, {"id": "A2", "split": "Training/Labeled"}])
    inner["A2"] = _nest(mms.patients["A2"]["folder"])
    ukbb = write_ukbb_cohort(tmp_path / "u", [{"id": "1"}, {"id": "2"}])
    inner["2"] = _nest(ukbb.patients["2"]["folder"])

    a, m, u = scan_acdc(acdc.root), scan_mms(mms.root, mms.metadata), scan_ukbb(ukbb.root, ukbb.metadata)

    assert (m.quarantine, u.quarantine) == ([], [])
    entries = {**entries_by_id(a), **entries_by_id(m), **entries_by_id(u)}
    assert sorted(entries) == ["1", "2", "A1", "A2", "patient001", "patient002"]
    for pid, folder in inner.items():
        assert os.path.dirname(entries[pid].image_path) == str(folder.absolute()), pid
    assert sorted(q.reason for q in a.quarantine if q.patient_id == "patient003") == [
        "duplicate_id", "missing_ed_mask", "missing_es_mask", "missing_image"]
    assert [q.patient_id for q in a.quarantine] == ["patient003"] * 4
