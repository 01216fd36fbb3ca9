"""Every bad input gives its documented quarantine row; good ones give cohort rows."""


import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cardio_assets.cohort.labels import LV
from cardio_assets.cohort.readers import scan_acdc, scan_mms, scan_ukbb
from cardio_assets.cohort.validation import drop_duplicate_ids, validate_entries
from cardio_assets.frames.preprocess import FrameSpec, frames_for_row
from cardio_assets_tests.layouts import write_acdc_cohort, write_mms_cohort, write_ukbb_cohort


def _validate(scan):
    cohort, quarantine = validate_entries(scan.entries)
    reader_rows = pd.DataFrame([q.as_dict() for q in scan.quarantine], columns=quarantine.columns)
    return cohort, pd.concat([reader_rows, quarantine], ignore_index=True)


def _reason(quarantine, pid):
    rows = quarantine[quarantine["patient_id"] == pid]
    assert len(rows), f"{pid} not quarantined"
    return set(rows["reason"])


def test_ukbb_good_and_bad_patients(tmp_path):
    paths = write_ukbb_cohort(tmp_path, [
        {"id": "1001", "sex": "male", "age": 64.0, "bmi": 31.0, "diagnosis": "hf", "es": 3},
        {"id": "1002", "sex": "female", "age": 59.9, "bmi": 24.9, "es": 5},
        {"id": "1003", "nan_voxels": True},
        {"id": "1004", "bad_label": 7},
        {"id": "1005", "mask_shape": (20, 24, 4)},
        {"id": "1006", "missing": ["es_mask"]},
        {"id": "1007", "age": 150.0},
        {"id": "1008"},  # truncated below
        {"id": "1009"},  # re-oriented ED mask below
    ])
    image = paths.patients["1008"]["image"]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    ed_mask = paths.patients["1009"]["ed_mask"]
    img = nib.load(ed_mask)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), np.diag([1.8, 1.8, 8.0, 1.0])), ed_mask)

    cohort, quarantine = _validate(scan_ukbb(paths.root, paths.metadata))

    assert sorted(cohort["patient_id"]) == ["1001", "1002"]
    good = cohort.set_index("patient_id")
    assert good.loc["1001", "cell"] == "male-60to70-obese-hf"
    assert good.loc["1002", "cell"] == "female-lt60-normal-healthy"
    assert good.loc["1001", "es_frame"] == 3 and good.loc["1002", "es_frame"] == 5  # found from the images
    assert set(good["es_from"]) == {"images"}
    assert _reason(quarantine, "1003") == {"nonfinite_voxels"}
    assert _reason(quarantine, "1004") == {"labels_outside_canonical_set"}
    assert _reason(quarantine, "1005") == {"shape_mismatch"}
    assert _reason(quarantine, "1006") == {"missing_es_mask"}
    assert _reason(quarantine, "1007") == {"implausible_age"}
    assert _reason(quarantine, "1008") == {"unreadable_image"}
    assert _reason(quarantine, "1009") == {"orientation_mismatch"}
    # every row names the patient and the file
    for row in quarantine.itertuples():
        assert row.patient_id in row.detail and row.file


def test_acdc_labels_are_converted_and_frames_are_zero_based(tmp_path):
    paths = write_acdc_cohort(tmp_path, [{"id": 1, "ed": 0, "es": 4, "bmi": 27.0, "diagnosis": "hf"}])
    cohort, quarantine = _validate(scan_acdc(paths.root))
    assert quarantine.empty
    row = cohort.iloc[0].to_dict()
    assert (row["ed_frame"], row["es_frame"], row["es_from"]) == (0, 4, "metadata")
    assert row["sex"] is None and np.isnan(row["age"]) and row["cell"] is None and row["bmi_band"] == "overweight"
    out = frames_for_row({**row, "split": "test"}, training=False, spec=FrameSpec(crop_px=24, size=24))
    # canonical LV (1) is the cavity in the middle of the heart, surrounded by myocardium (2)
    ed = out.controls[0, 0]
    rows, cols = np.nonzero(ed == LV)
    assert len(rows) and (ed[rows.min() - 1, int(np.median(cols))] == 2)


def test_mms_masks_come_from_the_4d_ground_truth(tmp_path):
    paths = write_mms_cohort(tmp_path, [{"id": "A0S9V9", "ed": 1, "es": 5, "sex": "male", "age": 45.0, "bmi": 22.0, "diagnosis": "hf"}])
    cohort, quarantine = _validate(scan_mms(paths.root, paths.metadata))
    assert quarantine.empty
    row = cohort.iloc[0]
    assert (row["ed_frame"], row["es_frame"], row["ed_mask_frame"], row["es_mask_frame"]) == (1, 5, 1, 5)
    assert row["cell"] == "male-lt60-normal-hf"


def test_duplicate_ids_across_sources_keep_the_first(tmp_path):
    first = write_ukbb_cohort(tmp_path / "a", [{"id": "42", "sex": "male", "age": 60.0, "bmi": 25.0}])
    second = write_ukbb_cohort(tmp_path / "b", [{"id": "42", "sex": "female", "age": 70.0, "bmi": 30.0}])
    entries = scan_ukbb(first.root, first.metadata).entries + scan_ukbb(second.root, second.metadata).entries
    cohort, _ = validate_entries(entries)
    kept, dropped = drop_duplicate_ids(cohort)
    assert kept["patient_id"].tolist() == ["42"] and kept.iloc[0]["sex"] in ("male", "female")
    assert dropped["reason"].tolist() == ["duplicate_id"]


def test_validation_in_worker_processes_gives_the_same_table(tmp_path):
    paths = write_ukbb_cohort(tmp_path, [{"id": str(1000 + i), "age": 50.0 + i, "es": 2 + i % 4} for i in range(6)])
    entries = scan_ukbb(paths.root, paths.metadata).entries
    serial, _ = validate_entries(entries, workers=1)
    parallel, _ = validate_entries(entries, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


# --- NIfTI files as they turn up in real folders ---------------------------------------------


def _resave(path, data):
    """`data` saved over the NIfTI at `path`, same affine, dtype taken from `data`."""
    nib.save(nib.Nifti1Image(data, nib.load(path).affine), path)


def _voxels(path):
    return np.asanyarray(nib.load(path).dataobj)


def _set_stored_pixdim(path, axis, value):
    """Write `value` into pixdim[axis] of the header on disk (nibabel's writer would fix a zero)."""
    raw = gzip.decompress(path.read_bytes())
    header = nib.Nifti1Header(binaryblock=raw[:348], check=False)
    pixdim = header["pixdim"].copy()
    pixdim[axis] = value
    header["pixdim"] = pixdim
    path.write_bytes(gzip.compress(header.binaryblock + raw[348:]))


def test_broken_and_odd_nifti_files_quarantine_only_their_patient(tmp_path):
    cases = {
        "z01": ("unreadable_image", "image", "Empty file"),  # zero bytes
        "z02": ("unreadable_image", "image", "not a gzip file"),  # text named .nii.gz
        "z03": ("unreadable_image", "image", "not a gzip file"),  # an uncompressed .nii named .nii.gz
        "z04": ("unreadable_image", "image", "expected a 4D cine"),  # 3-D cine
        # 5-D with a real 5th axis (a trailing size-1 axis is dropped instead: test_readers_real_world)
        "z05": ("unreadable_image", "image", "expected a 4D cine"),  # 5-D cine, 2 channels
        "z06": ("unreadable_ed_mask", "ed_mask", "expected a 3D label map"),  # 5-D mask (x, y, z, 1, 2)
        "z07": ("labels_outside_canonical_set", "ed_mask", "non-integer labels such as [0.5]"),
        "z08": ("labels_outside_canonical_set", "ed_mask", "labels [-1] outside"),
        "z09": ("blank_image", "image", "every voxel of the cine"),  # all zeros
        "z10": ("unreadable_image", "image", "voxel sizes (pixdim 1-3) are 0, 1.8, 8;"),
        "z11": ("unreadable_image", "image", "not real numbers"),  # complex voxels
        "z12": ("unreadable_image", "image", "not real numbers"),  # RGB voxels: crashed the run
        "z13": ("nonfinite_voxels", "image", "beyond float32's range"),  # float64 values a float32 frame cannot hold
    }
    kept = ["k1", "k2", "k3"]  # k2: float labels off by rounding noise; k3: a negative pixdim
    paths = write_ukbb_cohort(tmp_path, [{"id": pid} for pid in kept + list(cases)])
    files = {pid: paths.patients[pid] for pid in kept + list(cases)}
    cine = _voxels(files["k1"]["image"])
    files["z01"]["image"].write_bytes(b"")
    files["z02"]["image"].write_text("eid,age\n1001,62\n")
    nib.save(nib.Nifti1Image(cine, nib.load(files["z03"]["image"]).affine), tmp_path / "plain.nii")
    files["z03"]["image"].write_bytes((tmp_path / "plain.nii").read_bytes())
    _resave(files["z04"]["image"], cine[..., 0])
    _resave(files["z05"]["image"], np.stack([cine] * 2, axis=-1))
    _resave(files["z06"]["ed_mask"], np.stack([_voxels(files["z06"]["ed_mask"])[..., None]] * 2, axis=-1))
    noisy = _voxels(files["k2"]["ed_mask"]).astype(np.float32)
    noisy[noisy == 1] = np.float32(1.0000001)
    _resave(files["k2"]["ed_mask"], noisy)
    half = _voxels(files["z07"]["ed_mask"]).astype(np.float32)
    half[0, 0, 0] = 0.5
    _resave(files["z07"]["ed_mask"], half)
    negative = _voxels(files["z08"]["ed_mask"]).astype(np.int16)
    negative[0, 0, 0] = -1
    _resave(files["z08"]["ed_mask"], negative)
    _resave(files["z09"]["image"], np.zeros_like(cine))
    _set_stored_pixdim(files["z10"]["image"], 1, 0.0)
    _set_stored_pixdim(files["k3"]["image"], 2, -1.8)
    _resave(files["z11"]["image"], cine.astype(np.complex64))
    rgb = np.zeros(cine.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(cine, 0, 255)
    _resave(files["z12"]["image"], rgb)
    _resave(files["z13"]["image"], cine.astype(np.float64) * 1e300)

    cohort, quarantine = _validate(scan_ukbb(paths.root, paths.metadata))

    assert sorted(cohort["patient_id"]) == kept
    good = cohort.set_index("patient_id")
    assert good.loc["k2", "lv_slices"] == good.loc["k1", "lv_slices"]  # 1.0000001 read as LV
    assert good.loc["k3", ["spacing_x", "spacing_y", "spacing_z"]].tolist() == pytest.approx([1.8, 1.8, 8.0])
    assert len(quarantine) == len(cases)
    for pid, (reason, key, problem) in cases.items():
        row = quarantine[quarantine["patient_id"] == pid].iloc[0]
        file = str(files[pid][key].absolute())
        assert (row["reason"], row["file"]) == (reason, file), pid
        assert pid in row["detail"] and file in row["detail"] and problem in row["detail"], row["detail"]


def test_frames_past_the_end_of_the_cine_name_the_metadata_line(tmp_path):
    paths = write_mms_cohort(tmp_path, [{"id": "F1"}, {"id": "F2", "raw": {"ES": "30"}}, {"id": "F3", "raw": {"ED": "8"}}])
    cohort, quarantine = _validate(scan_mms(paths.root, paths.metadata))
    assert cohort["patient_id"].tolist() == ["F1"]
    rows = quarantine.set_index("patient_id")
    assert rows["reason"].to_dict() == {"F2": "frame_out_of_range", "F3": "frame_out_of_range"}
    assert f"ES frame 30 ({paths.metadata}:3) outside 0..7" in rows.loc["F2", "detail"]
    assert f"ED frame 8 ({paths.metadata}:4) outside 0..7" in rows.loc["F3", "detail"]
    assert rows.loc["F2", "file"] == str(paths.patients["F2"]["image"].absolute())
