"""The phantom cohort: its layout, its ground truth, its biases, and its determinism.

Configs are tiny (small matrix, few slices, few patients) so the file runs in seconds;
statistical checks use attributes or label-only truth, never rendered images.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardio_assets.cohort.cells import ALL_CELLS, CELL_KEYS, Cell, age_band, bmi_band
from cardio_assets.cohort.labels import CANONICAL_LABELS, LV, MYO, RV
from cardio_assets.phantom.anatomy import sample_anatomy
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.generate import (
    METADATA_COLUMNS,
    PATIENT_FILES,
    cohort_attributes,
    generate_phantom_cohort,
)
from cardio_assets.phantom.geometry import render_labels
from cardio_assets.phantom.population import (
    sample_heldout_attributes,
    sample_study_attributes,
)
from cardio_assets.phantom.render import render_patient
from cardio_assets.phantom.truth import patient_truth

TINY = PhantomConfig(n_patients=10, heldout_per_cell=1, hf_prevalence=0.3, matrix=48,
                     n_slices=3, n_frames=20, seed=7)


def _params(config: PhantomConfig, index: int = 0):
    attrs = cohort_attributes(config)["study"][index]
    return sample_anatomy(attrs, config)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phantom")
    return out, generate_phantom_cohort(out, TINY, workers=1)


# --- determinism --------------------------------------------------------------------------

def test_same_seed_same_arrays_different_seed_different():
    a = render_patient(_params(TINY), TINY)
    b = render_patient(_params(TINY), TINY)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)
    assert a[4] == b[4]

    other = dataclasses.replace(TINY, seed=8)
    c = render_patient(_params(other), other)
    assert not np.array_equal(a[0], c[0])


def test_config_hash_is_stable_and_covers_every_field():
    assert TINY.config_hash() == dataclasses.replace(TINY).config_hash()
    changed = {"n_patients": 11, "heldout_per_cell": 2, "hf_prevalence": 0.2, "difficulty": 0.4,
               "matrix": 64, "n_slices": 4, "n_frames": 24, "seed": 1}
    assert set(changed) == {f.name for f in dataclasses.fields(PhantomConfig)}
    hashes = {dataclasses.replace(TINY, **{k: v}).config_hash() for k, v in changed.items()}
    assert len(hashes) == len(changed) and TINY.config_hash() not in hashes


def test_parallel_generation_is_byte_identical(tmp_path, cohort):
    out1, _ = cohort
    out2 = tmp_path / "parallel"
    generate_phantom_cohort(out2, TINY, workers=2)
    for f in sorted(out1.rglob("*.nii.gz")) + sorted(out1.rglob("*.csv")):
        rel = f.relative_to(out1)
        assert (out2 / rel).read_bytes() == f.read_bytes(), rel


# --- geometry and labels ------------------------------------------------------------------

@pytest.mark.parametrize("index", range(6))
def test_es_frame_is_the_smallest_lv_cavity(index):
    p = _params(TINY, index)
    cine, ed, es, affine, truth = render_patient(p, TINY)
    labels = render_labels(p, TINY)  # (X, Y, Z, T), every frame
    lv_per_frame = (labels == LV).sum(axis=(0, 1, 2))
    assert truth["es_frame"] == int(np.argmin(lv_per_frame)) == p.es_frame_design
    assert 0.3 * TINY.n_frames <= truth["es_frame"] <= 0.42 * TINY.n_frames
    np.testing.assert_array_equal(ed, labels[..., 0])
    np.testing.assert_array_equal(es, labels[..., truth["es_frame"]])
    assert cine.shape == (TINY.matrix, TINY.matrix, TINY.n_slices, TINY.n_frames)
    assert cine.dtype == np.int16 and ed.dtype == es.dtype == np.uint8


def test_labels_are_canonical_and_all_present():
    p = _params(TINY, 1)
    _, ed, es, _, truth = render_patient(p, TINY)
    for mask in (ed, es):
        assert set(np.unique(mask).tolist()) <= set(CANONICAL_LABELS)
        assert {LV, MYO, RV} <= set(np.unique(mask).tolist())
    assert (es == LV).sum() < (ed == LV).sum()
    # the RV vanishes toward the apex (last slice of a 3-slice stack is apical)
    assert (ed[..., 0] == RV).sum() > (ed[..., -1] == RV).sum()


def test_image_follows_the_labels():
    """Blood is bright and myocardium dark in the rendered cine, where the masks say so."""
    cine, ed, _, _, _ = render_patient(_params(TINY, 2), TINY)
    frame = cine[..., 0].astype(float)
    assert frame[ed == LV].mean() > 2.0 * frame[ed == MYO].mean()
    assert frame[ed == RV].mean() > 2.0 * frame[ed == MYO].mean()


def test_truth_volumes_match_the_masks():
    p = _params(TINY, 3)
    _, ed, es, affine, truth = render_patient(p, TINY)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    assert truth["lv_edv_ml"] == pytest.approx((ed == LV).sum() * voxel_ml, abs=1e-3)
    assert truth["lv_esv_ml"] == pytest.approx((es == LV).sum() * voxel_ml, abs=1e-3)
    assert truth["ef"] == pytest.approx(1 - truth["lv_esv_ml"] / truth["lv_edv_ml"], abs=1e-3)
    assert truth["ef"] == pytest.approx(p.ef_design, abs=0.04)  # voxelisation only


# --- attributes shape images ---------------------------------------------------------------

def _truth_table(config: PhantomConfig) -> list[dict]:
    people = sample_heldout_attributes(config.heldout_per_cell, config.seed)
    return [patient_truth(sample_anatomy(a, config), config)[0] for a in people]


def _ef_gap(rows: list[dict]) -> float:
    hf = np.mean([r["ef"] for r in rows if r["hf"]])
    healthy = np.mean([r["ef"] for r in rows if not r["hf"]])
    return healthy - hf


def test_hf_has_lower_ef_and_larger_edv():
    rows = _truth_table(dataclasses.replace(TINY, heldout_per_cell=3, matrix=80))
    hf = [r for r in rows if r["hf"]]
    healthy = [r for r in rows if not r["hf"]]
    assert np.mean([r["ef"] for r in hf]) < np.mean([r["ef"] for r in healthy]) - 0.1
    assert np.mean([r["lv_edv_ml"] for r in hf]) > np.mean([r["lv_edv_ml"] for r in healthy])
    assert min(r["ef"] for r in healthy) > 0.5
    # not trivially separable: some HF patients keep a healthy-range EF
    assert any(r["ef"] > 0.5 for r in hf)


def test_difficulty_closes_the_gap():
    gaps = [_ef_gap(_truth_table(dataclasses.replace(TINY, heldout_per_cell=2, matrix=80,
                                                     difficulty=d)))
            for d in (0.0, 0.5, 1.0)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert abs(gaps[2]) < 0.03


def test_bmi_thickens_fat_and_sex_enlarges_heart():
    rows = _truth_table(dataclasses.replace(TINY, heldout_per_cell=3, matrix=80, difficulty=1.0))

    def by(part: int, value: str, col: str) -> float:
        return float(np.mean([float(r[col]) for r in rows if r["cell"].split("-")[part] == value]))

    assert by(2, "obese", "fat_mm") > by(2, "normal", "fat_mm") + 1.5
    assert by(2, "obese", "subcut_fat_mm") > by(2, "normal", "subcut_fat_mm") + 5
    assert by(0, "male", "lv_edv_ml") > by(0, "female", "lv_edv_ml")
    assert by(1, "ge70", "myo_thickness_mm") > by(1, "lt60", "myo_thickness_mm")


# --- population ----------------------------------------------------------------------------

def test_prevalence_rises_with_age_bmi_and_male_sex():
    people = sample_study_attributes(20000, 0.08, seed=3)
    rate = lambda pred: np.mean([p.hf for p in people if pred(p)])  # noqa: E731
    assert abs(np.mean([p.hf for p in people]) - 0.08) < 0.01
    young, mid, old = (rate(lambda p, b=b: age_band(p.age) == b) for b in ("lt60", "60to70", "ge70"))
    assert young < mid < old and old > 2.5 * young
    assert rate(lambda p: bmi_band(p.bmi) == "normal") < rate(lambda p: bmi_band(p.bmi) == "obese")
    assert rate(lambda p: p.sex == "female") < rate(lambda p: p.sex == "male")
    ages = np.array([p.age for p in people])
    assert ages.min() >= 45 and ages.max() <= 82 and abs(ages.mean() - 64) < 1.5


def test_study_cohort_is_deterministic_and_hf_codes_are_i50():
    a, b = sample_study_attributes(300, 0.1, seed=5), sample_study_attributes(300, 0.1, seed=5)
    assert a == b
    assert all(p.icd10.startswith("I50") == p.hf for p in a)


def test_heldout_is_balanced_over_all_36_cells():
    people = sample_heldout_attributes(3, seed=2)
    counts = Counter(p.cell.key for p in people)
    assert set(counts) == set(CELL_KEYS) and set(counts.values()) == {3}
    for p in people:
        assert 45 <= p.age <= 82
        assert (18.5 <= p.bmi < 25) or (25 <= p.bmi < 30) or (30 <= p.bmi <= 40)
        assert p.eid.startswith("9")


# --- the files on disk ---------------------------------------------------------------------

def test_layout_and_csv_columns(cohort):
    out, manifest = cohort
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["config"] == dataclasses.asdict(TINY)
    assert manifest["config_hash"] == TINY.config_hash()
    for subset, n, first in (("study", 10, "1000001"), ("heldout", 36, "9000001")):
        meta = _read_csv(out / subset / "metadata.csv")
        truth = _read_csv(out / subset / "truth.csv")
        assert tuple(meta[0]) == METADATA_COLUMNS
        assert len(meta) == len(truth) == n == manifest["counts"][subset]["patients"]
        assert meta[0]["eid"] == first and all(r["eid"].isdigit() for r in meta)
        for col in ("es_frame", "ef", "lv_edv_ml", "lv_esv_ml", "myo_thickness_mm", "fat_mm",
                    "hf", "sex", "age", "bmi", "cell"):
            assert col in truth[0], col
        for m, t in zip(meta, truth):
            assert m["eid"] == t["eid"]
            assert m["31-0.0"] == ("1" if t["sex"] == "male" else "0")
            assert m["41270-0.0"].startswith("I50") == (t["hf"] == "1")
            assert float(m["21003-2.0"]) == float(t["age"]) and len(m["21003-2.0"].split(".")[1]) == 1
            diagnosis = "hf" if t["hf"] == "1" else "healthy"
            sex = "male" if m["31-0.0"] == "1" else "female"
            assert Cell.of(sex, float(m["21003-2.0"]), float(m["21001-2.0"]), diagnosis).key == t["cell"]
            assert all((out / subset / m["eid"] / f).is_file() for f in PATIENT_FILES)
    heldout_cells = Counter(r["cell"] for r in _read_csv(out / "heldout" / "truth.csv"))
    assert heldout_cells == Counter({c.key: 1 for c in ALL_CELLS})


def test_nifti_dtype_spacing_and_units(cohort):
    out, _ = cohort
    row = _read_csv(out / "study" / "truth.csv")[0]
    folder = out / "study" / row["eid"]
    img = nib.load(folder / "sa.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert img.shape == (TINY.matrix, TINY.matrix, TINY.n_slices, TINY.n_frames)
    zooms = img.header.get_zooms()
    assert zooms[0] == pytest.approx(float(row["spacing_mm"]), abs=1e-4)
    assert zooms[2] == pytest.approx(float(row["slice_mm"])) and zooms[2] in (8.0, 10.0)
    assert 1.7 <= zooms[0] <= 1.9 and zooms[0] == zooms[1]
    assert 0.02 < zooms[3] < 0.07  # seconds per frame
    assert img.header.get_xyzt_units() == ("mm", "sec")
    for name, frame in (("seg_sa_ED.nii.gz", 0), ("seg_sa_ES.nii.gz", int(row["es_frame"]))):
        seg = nib.load(folder / name)
        assert seg.get_data_dtype() == np.uint8 and seg.shape == img.shape[:3]
        np.testing.assert_array_equal(seg.affine, img.affine)
        data = np.asarray(seg.dataobj)
        assert set(np.unique(data).tolist()) <= set(CANONICAL_LABELS)
    cine = np.asarray(img.dataobj)
    lv = [(np.asarray(nib.load(folder / n).dataobj) == LV).sum()
          for n in ("seg_sa_ED.nii.gz", "seg_sa_ES.nii.gz")]
    assert lv[1] < lv[0] and cine.min() >= 0


def test_complete_cohort_is_not_rewritten(cohort):
    out, manifest = cohort
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    again = generate_phantom_cohort(out, TINY, workers=1)
    assert again == manifest
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_interrupted_run_resumes_and_skips_present_patients(tmp_path):
    cfg = dataclasses.replace(TINY, n_patients=4, heldout_per_cell=0)
    generate_phantom_cohort(tmp_path, cfg)
    images = sorted(tmp_path.rglob("sa.nii.gz"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in images}
    # simulate a run killed before its last patient and the manifest
    (tmp_path / "manifest.json").unlink()
    victim = images[-1]
    victim.unlink()
    manifest = generate_phantom_cohort(tmp_path, cfg)
    assert (tmp_path / "manifest.json").is_file() and manifest["counts"]["study"]["patients"] == 4
    for p in images:
        if p == victim:
            assert p.read_bytes() == before[p][1]  # re-rendered identically
        else:
            assert p.stat().st_mtime_ns == before[p][0]  # skipped, not rewritten


def test_new_config_replaces_stale_patients(tmp_path):
    generate_phantom_cohort(tmp_path, dataclasses.replace(TINY, n_patients=4, heldout_per_cell=0))
    smaller = dataclasses.replace(TINY, n_patients=2, heldout_per_cell=0, seed=9)
    manifest = generate_phantom_cohort(tmp_path, smaller)
    assert manifest["config_hash"] == smaller.config_hash()
    assert sorted(p.name for p in (tmp_path / "study").iterdir() if p.is_dir()) == ["1000001", "1000002"]
    fresh = render_patient(_params(smaller, 0), smaller)[0]
    on_disk = np.asarray(nib.load(tmp_path / "study" / "1000001" / "sa.nii.gz").dataobj)
    np.testing.assert_array_equal(on_disk, fresh)


def test_attribute_ceiling_is_high_for_what_the_parameters_carry_and_chance_for_what_they_do_not():
    import pandas as pd

    from cardio_assets.phantom.ceiling import accuracy_against_ceiling, attribute_ceiling, phantom_attribute_ceiling

    rng = np.random.default_rng(0)
    n = 400
    male = rng.random(n) < 0.5
    bmi = rng.uniform(19.0, 35.0, n)
    truth = pd.DataFrame({
        "eid": np.arange(n), "sex": np.where(male, "male", "female"), "age": rng.uniform(45.0, 82.0, n), "bmi": bmi,
        "hf": (rng.random(n) < 0.3).astype(int), "cell": "x", "subset": "study",
        # the image parameters: heart size follows sex, fat follows BMI; nothing follows age or HF
        "lv_radius_mm": np.where(male, 26.0, 22.0) + rng.normal(0, 0.5, n),
        "fat_mm": 0.5 * (bmi - 18.0) + rng.normal(0, 0.2, n),
        "noise_sigma": rng.uniform(2.0, 4.0, n),
    })
    ceiling = attribute_ceiling(truth)
    assert ceiling["sex"] > 0.95 and ceiling["bmi_band"] > 0.85
    assert ceiling["age_band"] < 0.5 and ceiling["diagnosis"] < 0.62  # chance: 1/3 and 1/2
    table = accuracy_against_ceiling({"sex": 0.9, "age_band": 0.4}, {"sex": 0.95})
    assert table.loc[0, "share_of_ceiling"] == pytest.approx(0.9 / 0.95)
    assert np.isnan(table.loc[1, "share_of_ceiling"])  # no ceiling: no share
    assert phantom_attribute_ceiling({"source": "acdc", "parts": []}) == {}  # real data has no ground truth


def test_the_phantoms_ceiling_leaves_out_the_held_out_scanner(tmp_path):
    import pandas as pd

    from cardio_assets.cohort.ood import OodPolicy
    from cardio_assets.phantom.ceiling import phantom_attribute_ceiling

    rng = np.random.default_rng(1)
    n = 600
    male = rng.random(n) < 0.5
    vendor = np.where(np.arange(n) < 400, "A", "D")
    # on scanner D the heart's size is blurred beyond use: sex is hard to tell there
    radius = np.where(male, 26.0, 22.0) + rng.normal(0, np.where(vendor == "D", 8.0, 0.5))
    pd.DataFrame({"eid": np.arange(n), "sex": np.where(male, "male", "female"), "age": rng.uniform(45.0, 82.0, n),
                  "bmi": rng.uniform(19.0, 35.0, n), "hf": (rng.random(n) < 0.3).astype(int), "cell": "x",
                  "subset": "study", "site": "site-1", "vendor": vendor, "lv_radius_mm": radius}).to_csv(tmp_path / "truth.csv", index=False)
    source = {"source": "phantom", "parts": [{"subset": "study", "root": str(tmp_path)}]}
    every_scanner = phantom_attribute_ceiling(source)["sex"]
    training_scanners = phantom_attribute_ceiling(source, OodPolicy.parse("vendor=D"))["sex"]
    assert training_scanners > 0.95 > every_scanner
