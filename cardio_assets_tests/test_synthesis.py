import numpy as np
import pandas as pd
import pytest

from cardio_assets.cohort.cells import Cell
from cardio_assets.defs.check_rules import foreign_sources
from cardio_assets.generation.memorization import NearestRealIndex, block_means, nearest_real_rms
from cardio_assets.generation.synthesis import fallback_cells, patient_hash, plan_items, privacy_salt, source_frames_pass
from cardio_assets.lake.fingerprint import rows_fingerprint
from cardio_assets.lake.values import FrameSet


def _frameset(cell, patients):
    """patients: list of (patient_id, split); 2 images each with a distinct label map."""
    rows, controls = [], []
    for i, (pid, split) in enumerate(patients):
        for k in range(2):
            rows.append({"patient_id": pid, "split": split, "cell": cell, "prompt": f"prompt of {pid}"})
            controls.append(np.full((3, 8, 8), (i + k) % 4, np.uint8))
    n = len(rows)
    return FrameSet(pd.DataFrame(rows), np.zeros((n, 3, 8, 8), np.float16), np.stack(controls) if n else np.zeros((0, 3, 8, 8), np.uint8))


def test_fallback_relaxes_bmi_first_then_age():
    order = fallback_cells(Cell.parse("female-lt60-normal-hf"))
    assert order[:2] == ["female-lt60-overweight-hf", "female-lt60-obese-hf"]
    assert order[2] == "female-60to70-normal-hf"
    assert all(k.startswith("female-") and k.endswith("-hf") for k in order) and len(order) == 8


def test_items_come_from_training_patients_of_the_cell_only(tmp_path):
    cell = "male-ge70-obese-hf"
    frames = {cell: _frameset(cell, [("a", "train"), ("b", "train"), ("c", "val"), ("d", "test")])}
    salt = privacy_salt(tmp_path)
    items, from_cell = plan_items(cell, frames, n=10, seed=0, salt=salt)
    assert from_cell == cell and len(items) == 10
    sources = {it.source for it in items}
    assert sources == {patient_hash("a", salt), patient_hash("b", salt)}  # both used, val/test never
    assert foreign_sources(sources, {patient_hash("a", salt), patient_hash("b", salt)}) == []
    assert all(it.prompt in ("prompt of a", "prompt of b") for it in items)
    again, _ = plan_items(cell, frames, n=10, seed=0, salt=salt)
    assert [it.source for it in again] == [it.source for it in items]  # deterministic
    assert all(np.array_equal(x.labels, y.labels) for x, y in zip(items, again))


def test_an_empty_cell_borrows_from_the_nearest_cell_with_its_own_prompt(tmp_path):
    empty, donor = "female-lt60-normal-hf", "female-lt60-obese-hf"
    frames = {empty: _frameset(empty, [("v", "val")]), donor: _frameset(donor, [("x", "train")]), "female-lt60-overweight-hf": _frameset("female-lt60-overweight-hf", [])}
    items, from_cell = plan_items(empty, frames, n=3, seed=0, salt=privacy_salt(tmp_path))
    assert from_cell == donor
    assert all(it.prompt == "Female, age in 50s, normal BMI, heart failure" for it in items)
    with pytest.raises(ValueError, match="no training patient"):
        plan_items("male-lt60-normal-hf", frames, n=1, seed=0, salt="s")


def test_each_item_is_referenced_to_the_real_frame_its_mask_came_from(tmp_path):
    donor = "female-lt60-obese-hf"
    frames = {donor: _frameset(donor, [("x", "train"), ("y", "train")])}
    for attribute, value in (("sex", "female"), ("age_band", "lt60"), ("bmi_band", "obese"), ("diagnosis", "hf")):
        frames[donor].index[attribute] = value
    frames[donor].images[:] = np.arange(4, dtype=np.float16)[:, None, None, None] / 4  # brightness = row / 4
    items, from_cell = plan_items("female-lt60-normal-hf", frames, n=12, seed=0, salt=privacy_salt(tmp_path))
    assert from_cell == donor and {it.source_row for it in items} == {0, 1, 2, 3}
    seen = []

    def check(images, checked):  # a real frame "passes" when bright; records what it was asked to expect
        seen.extend(it.expected for it in checked)
        assert all(np.array_equal(it.labels, frames[donor].controls[row]) for it, row in zip(checked, range(4)))
        return [[] if image.mean() >= 0.5 else ["mask: too dark"] for image in images]

    passed = source_frames_pass(check, frames[donor], items)
    assert passed.tolist() == [it.source_row >= 2 for it in items]
    assert len(seen) == 4  # each source frame checked once, however many items draw it
    # the borrowed mask's real frame is held to its own attributes (obese), not the prompted cell's (normal)
    assert all(e["bmi_band"] == "obese" for e in seen)
    assert source_frames_pass(check, frames[donor], []).tolist() == []


def test_salt_is_created_once_and_hashes_hide_ids(tmp_path):
    salt = privacy_salt(tmp_path)
    assert privacy_salt(tmp_path) == salt and len(salt) == 32
    assert patient_hash("1000001", salt) != patient_hash("1000001", "other") and "1000001" not in patient_hash("1000001", salt)


def test_nearest_real_distance_finds_copies():
    rng = np.random.default_rng(0)
    real = rng.random((50, 3, 8, 8)).astype(np.float32)
    synthetic = np.stack([real[7], rng.random((3, 8, 8))]).astype(np.float32)
    rms, arg = nearest_real_rms(synthetic, real, batch=16)
    assert rms[0] < 1e-3 and arg[0] == 7
    assert rms[1] > 0.2


def test_nearest_real_image_is_found_batch_by_batch_from_lazy_frames(tmp_path):
    from cardio_assets.classify.train import Frames

    rng = np.random.default_rng(0)
    real = rng.random((700, 3, 8, 8), dtype=np.float32)
    np.save(tmp_path / "real.npy", real)
    on_disk = Frames([(np.load(tmp_path / "real.npy", mmap_mode="r"), None)])
    synthetic = np.stack([real[650], real[3] + 0.01, rng.random((3, 8, 8), dtype=np.float32)])
    rms, row = nearest_real_rms(synthetic, on_disk, batch=128)  # 6 batches, the copy in the last
    assert row[0] == 650 and rms[0] == pytest.approx(0.0, abs=1e-3)
    assert row[1] == 3 and rms[1] == pytest.approx(0.01, abs=1e-3)
    in_memory_rms, in_memory_row = nearest_real_rms(synthetic, real)
    np.testing.assert_allclose(rms, in_memory_rms, atol=1e-6)
    assert np.array_equal(row, in_memory_row)


def test_the_shared_index_finds_the_exact_nearest_image_reading_few(tmp_path):
    """Against reading every real image (nearest_real_rms): same rows, same distances, on
    phantom-like frames (smooth shapes plus noise) with copies, near-copies and new images."""
    from cardio_assets.classify.train import Frames
    from cardio_assets.generation.toy import toy_dataset

    real, _, _, _ = toy_dataset(400, 32, seed=3)
    np.save(tmp_path / "real.npy", real)
    on_disk = Frames([(np.load(tmp_path / "real.npy", mmap_mode="r"), None)])
    others, _, _, _ = toy_dataset(20, 32, seed=4)
    rng = np.random.default_rng(0)
    synthetic = np.concatenate([real[[5, 250]], np.clip(real[[77]] + rng.normal(0, 0.02, (1, 3, 32, 32)), 0, 1), others]).astype(np.float32)

    fingerprint = rows_fingerprint(on_disk, pd.DataFrame({"row": np.arange(400)}))
    index = NearestRealIndex.open_or_build(tmp_path / "index", on_disk, fingerprint)
    rms, rows = index.nearest(synthetic)
    brute_rms, brute_rows = nearest_real_rms(synthetic, real)
    np.testing.assert_allclose(rms, brute_rms, atol=1e-5)
    assert np.array_equal(rows, brute_rows)
    assert rows[0] == 5 and rows[1] == 250 and rows[2] == 77 and rms[:2].max() < 1e-6
    assert index.images_read < 0.5 * len(synthetic) * len(real)  # the bound rules most images out

    # stored once: a second partition reads it; other rows (another fingerprint) rebuild it
    again = NearestRealIndex.open_or_build(tmp_path / "index", on_disk, fingerprint)
    assert isinstance(again.means, np.memmap) and np.array_equal(np.asarray(again.means), index.means)
    other = NearestRealIndex.open_or_build(tmp_path / "index", on_disk, "another fingerprint")
    assert not isinstance(other.means, np.memmap)


def test_block_means_bound_the_rms_from_below():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 5, 3, 16, 16), dtype=np.float32)
    full = np.sqrt(((a - b) ** 2).reshape(5, -1).mean(1))
    coarse = np.sqrt(((block_means(a, 4) - block_means(b, 4)) ** 2).mean(1))
    assert (coarse <= full + 1e-7).all() and (coarse < full).any()
