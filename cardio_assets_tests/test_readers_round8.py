"""Five more ways real cohorts arrive: a NIfTI header whose dimensions ask for far more voxels than
the file holds (a damaged header: reading it tried to allocate them all), a header with an axis of
negative length, ACDC patient folders whose numbers differ only in leading zeros (``patient001``
and ``patient0001``: one patient read twice), an ACDC Info.cfg whose NbFrame contradicts the
cine's frame count (a cine cut short by its conversion, read as if whole), and an Info.cfg ending in
DOS's end-of-file mark, Ctrl-Z (a valid patient quarantined). Each patient is read right or
quarantined naming the patient, the file and the problem; the run never stops and nothing is lost."""

from __future__ import annotations

import gzip
import re
import shutil
import struct

from cardio_assets.cohort.readers import scan_acdc, scan_ukbb
from cardio_assets_tests.layouts import validate_scan, write_acdc_cohort, write_ukbb_cohort


def rows_by_id(quarantine):
    """A quarantine table's rows by patient id, as (reason, file, detail)."""
    return {r.patient_id: (r.reason, r.file, r.detail) for r in quarantine.itertuples()}


def _set_dimensions(path, dims):
    """The gzipped NIfTI-1 at `path` with its header's dim field (dim[0] then up to 7 sizes) set
    to `dims`, its voxel bytes left as they are."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[40:56] = struct.pack("<8h", *dims, *[1] * (8 - len(dims)))
    path.write_bytes(gzip.compress(bytes(raw)))


def _ukbb_patient_with_dimensions(tmp_path, kind, dims):
    """(the file, its quarantine row) of UK Biobank patient 1000002, whose `kind` file ("image",
    "ed_mask") has its header's dimensions set to `dims`; patient 1000001 beside it must still be
    read."""
    cohort = write_ukbb_cohort(tmp_path, [{"id": "1000001"}, {"id": "1000002"}])
    path = cohort.patients["1000002"][kind]
    _set_dimensions(path, dims)
    table, quarantine = validate_scan(scan_ukbb(cohort.root, cohort.metadata))
    assert list(table.patient_id) == ["1000001"]
    return path, rows_by_id(quarantine)["1000002"]


# --- 1. a header whose dimensions ask for more than the file holds ---------------------------------


def test_a_header_asking_for_more_voxels_than_the_file_holds_is_refused_before_reading(tmp_path):
    """A damaged header giving a 36 kB cine the dimensions (20000, 20000, 20000, 8): nibabel
    allocates the whole array before reading a gzipped file, so the patient was quarantined as
    "unreadable or truncated voxel data (MemoryError: )" after trying to take 128 TB (and a claim
    of a few GB that fits in memory was allocated in full before the read failed). The header is
    now checked against the file's size first, and the message gives both."""
    image, (reason, file, detail) = _ukbb_patient_with_dimensions(tmp_path, "image", (4, 20000, 20000, 20000, 8))
    assert (reason, file) == ("unreadable_image", str(image.absolute()))
    assert "MemoryError" not in detail
    assert "(20000, 20000, 20000, 8)" in detail and "128 TB" in detail
    assert f"the file is {image.stat().st_size} bytes" in detail and "cannot hold" in detail


# --- 2. a header with an axis of negative length ----------------------------------------------------


def test_a_header_with_an_axis_of_negative_length_is_named_as_such(tmp_path):
    """A mask whose header gives an axis of length -24 (a signed field written from an unsigned
    count, or a damaged header): nibabel opens the file and the read failed as "unreadable or
    truncated voxel data (ValueError: negative count)", which says nothing of the header."""
    mask, (reason, file, detail) = _ukbb_patient_with_dimensions(tmp_path, "ed_mask", (3, 24, -24, 4))
    assert (reason, file) == ("unreadable_ed_mask", str(mask.absolute()))
    assert "negative count" not in detail
    assert "(24, -24, 4)" in detail and "negative length" in detail


# --- 3. ACDC folders whose numbers differ only in leading zeros -----------------------------------


def _copy_patient(folder, name):
    """A copy of the ACDC patient `folder` next to it as `name`, its files renamed to match."""
    copy = shutil.copytree(folder, folder.parent / name)
    for path in list(copy.iterdir()):
        path.rename(copy / path.name.replace(folder.name, name))
    return copy


def test_acdc_folders_whose_numbers_differ_only_in_leading_zeros_are_one_patient(tmp_path):
    """``patient0001`` next to ``patient001`` (a copy renamed by a script that padded to four
    digits) and ``patient2`` next to ``patient002``: each was read as a patient of its own, so one
    heart could sit in both the training and the test split. The release's three-digit folder is
    used; the other is quarantined as ``duplicate_id`` naming both."""
    cohort = write_acdc_cohort(tmp_path, [{"id": 1}, {"id": 2}, {"id": 3}])
    padded = _copy_patient(cohort.patients["patient001"]["folder"], "patient0001")
    short = _copy_patient(cohort.patients["patient002"]["folder"], "patient2")
    table, quarantine = validate_scan(scan_acdc(cohort.root))
    assert list(table.patient_id) == ["patient001", "patient002", "patient003"]
    rows = rows_by_id(quarantine)
    assert set(rows) == {"patient0001", "patient2"}
    for copy, kept in ((padded, "patient001"), (short, "patient002")):
        reason, file, detail = rows[copy.name]
        assert (reason, file) == ("duplicate_id", str(copy))
        assert str(cohort.patients[kept]["folder"]) in detail and "leading zeros" in detail


# --- 4. an ACDC NbFrame that contradicts the cine ---------------------------------------------------


def test_an_acdc_cine_with_fewer_frames_than_its_info_cfg_is_quarantined_naming_both(tmp_path):
    """Info.cfg says NbFrame 8 but the cine holds 6 frames (a conversion that stopped early, or the
    cine of another acquisition): the patient was read without a word, its ES looked for among the
    frames that happen to be there. It is now ``frame_count_mismatch`` naming the cine, Info.cfg and
    both counts; a cine that agrees with its NbFrame, or an Info.cfg without NbFrame, reads as
    before."""
    cohort = write_acdc_cohort(tmp_path, [{"id": 1}, {"id": 2, "cine_frames": 6}, {"id": 3, "cine_frames": 6}])
    cfg = cohort.patients["patient003"]["folder"] / "Info.cfg"
    cfg.write_text(re.sub(r"NbFrame:.*\n", "", cfg.read_text()))  # no NbFrame: nothing to compare
    table, quarantine = validate_scan(scan_acdc(cohort.root))
    assert list(table.patient_id) == ["patient001", "patient003"]
    reason, file, detail = rows_by_id(quarantine)["patient002"]
    image = cohort.patients["patient002"]["image"]
    assert (reason, file) == ("frame_count_mismatch", str(image.absolute()))
    assert "6 time frames" in detail and "NbFrame 8" in detail
    assert str((cohort.patients["patient002"]["folder"] / "Info.cfg").absolute()) in detail


# --- 5. an Info.cfg ending in DOS's end-of-file mark -------------------------------------------------


def test_an_info_cfg_ending_in_a_dos_end_of_file_mark_is_read(tmp_path):
    """Old Windows tools (``copy /a``, some editors) end a text file with Ctrl-Z (0x1A), DOS's
    end-of-file mark: the last "line" '\\x1a' was "not 'Key: value'" and the whole patient, valid
    in every other way, was quarantined as bad_metadata."""
    cohort = write_acdc_cohort(tmp_path, [{"id": 1}, {"id": 2}, {"id": 3, "info_crlf": True}])
    for pid in ("patient002", "patient003"):
        cfg = cohort.patients[pid]["folder"] / "Info.cfg"
        cfg.write_bytes(cfg.read_bytes() + b"\x1a")
    table, quarantine = validate_scan(scan_acdc(cohort.root))
    assert list(table.patient_id) == ["patient001", "patient002", "patient003"]
    assert list(table.es_frame) == [3, 3, 3] and quarantine.empty
