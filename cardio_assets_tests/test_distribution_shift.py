"""Distribution shift: the phantom's scanners and sites, the out-of-distribution split policy,
vendor and site from every reader, and the in- vs out-of-distribution report."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import binary_erosion

from cardio_assets.cohort.cells import ALL_CELLS
from cardio_assets.cohort.labels import LV, MYO
from cardio_assets.cohort.ood import OodPolicy
from cardio_assets.cohort.readers import scan_acdc, scan_mms, scan_ukbb
from cardio_assets.cohort.splits import split_patients
from cardio_assets.defs.check_rules import split_leaks
from cardio_assets.metrics.fairness import fairness_metrics
from cardio_assets.metrics.fairness_report import write_fairness_report
from cardio_assets.metrics.shift import shift_values
from cardio_assets.phantom.anatomy import TISSUE, on_scanner, sample_anatomy
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.generate import cohort_attributes, generate_phantom_cohort
from cardio_assets.phantom.population import sample_heldout_attributes, sample_study_attributes
from cardio_assets.phantom.render import render_patient
from cardio_assets.phantom.scanners import SCANNERS, SITES, VENDORS, expected_contrast
from cardio_assets.phantom.truth import TRUTH_MEASURED
from cardio_assets_tests.layouts import make_patients, write_acdc_cohort, write_mms_cohort, write_ukbb_cohort

SMALL = PhantomConfig(n_patients=12, heldout_per_cell=1, hf_prevalence=0.3, matrix=64, n_slices=4, n_frames=20, seed=3)
ACQUISITION = {"vendor", "spacing_mm", "slice_mm", "gain", "noise_sigma", "edge_width_voxels",
               "bias_u", "bias_v", "bias_uv", "bias_uu", "bias_vv", "bias_z"} | {f"{t}_signal" for t in TISSUE}


# --- the phantom's scanners ----------------------------------------------------------------


def _blood_to_myocardium(params) -> float:
    cine, ed_mask, _, _, _ = render_patient(params, SMALL)
    ed = cine[..., 0].astype(float)
    return float(np.median(ed[ed_mask == LV]) / np.median(ed[ed_mask == MYO]))


def test_a_patient_on_another_scanner_keeps_its_anatomy_and_takes_that_scanners_acquisition():
    attrs = cohort_attributes(SMALL)["study"][0]
    params = sample_anatomy(attrs, SMALL)
    for vendor in VENDORS:
        moved = on_scanner(params, vendor, SMALL)
        scanner = SCANNERS[vendor]
        changed = {f.name for f in dataclasses.fields(params) if getattr(params, f.name) != getattr(moved, f.name)}
        assert changed <= ACQUISITION, changed - ACQUISITION  # the heart, fat, organs: the same
        assert moved.vendor == vendor and moved.edge_width_voxels == scanner.edge_width_voxels
        assert scanner.spacing_mm[0] <= moved.spacing_mm <= scanner.spacing_mm[1]
        assert scanner.noise_sigma[0] <= moved.noise_sigma <= scanner.noise_sigma[1]
        assert moved.slice_mm in scanner.slice_mm
        assert abs(moved.bias_u) <= scanner.bias_amplitude
    assert on_scanner(params, params.vendor, SMALL) == params  # its own scanner: itself


def test_each_scanner_draws_its_own_blood_to_myocardium_contrast():
    """Measured on rendered images (noise, bias and partial volume included): the contrast of one heart
    on each scanner, relative to the reference scanner A, is what the scanner's design says, +-15%."""
    for attrs in cohort_attributes(SMALL)["study"][:3]:
        params = sample_anatomy(attrs, SMALL)
        reference = _blood_to_myocardium(on_scanner(params, "A", SMALL))
        for vendor in VENDORS[1:]:
            measured = _blood_to_myocardium(on_scanner(params, vendor, SMALL)) / reference
            designed = expected_contrast(vendor, "blood", "myo", TISSUE) / expected_contrast("A", "blood", "myo", TISSUE)
            assert measured == pytest.approx(designed, rel=0.15), (attrs.eid, vendor)
    # D, the demo's held-out scanner, is the least contrasted: the shift a classifier must survive
    assert min(VENDORS, key=lambda v: expected_contrast(v, "blood", "myo", TISSUE)) == "D"


def test_sites_differ_in_demographics_and_scanners_so_vendor_is_confounded_with_subgroups():
    people = sample_study_attributes(4000, 0.08, seed=0)
    by_site = {s.name: [p for p in people if p.site == s.name] for s in SITES}
    age = {name: np.mean([p.age for p in group]) for name, group in by_site.items()}
    bmi = {name: np.mean([p.bmi for p in group]) for name, group in by_site.items()}
    assert max(age, key=age.get) == "site-1" and min(age, key=age.get) == "site-4"  # the older, the younger site
    assert max(bmi, key=bmi.get) == "site-2"  # the obese site
    for site in SITES:  # a site scans only on its own scanners, in about its own mix
        counts = Counter(p.vendor for p in by_site[site.name])
        assert set(counts) <= set(dict(site.vendor_mix))
        for vendor, share in site.vendor_mix:
            assert counts[vendor] / len(by_site[site.name]) == pytest.approx(share, abs=0.06)
    obese_share = {v: np.mean([p.bmi >= 30 for p in people if p.vendor == v]) for v in VENDORS}
    assert obese_share["D"] > obese_share["A"] + 0.03  # D is mostly at the obese site


def test_the_balanced_heldout_cohort_has_every_vendor_equally_in_every_cell():
    people = sample_heldout_attributes(8, seed=0)
    for cell in ALL_CELLS:
        counts = Counter(p.vendor for p in people if p.cell == cell)
        assert counts == {v: 2 for v in VENDORS}
    for p in people:  # held-out patients come from a site that runs their scanner
        assert p.vendor in dict(next(s for s in SITES if s.name == p.site).vendor_mix)
    one_each = sample_heldout_attributes(1, seed=0)  # one per cell: the vendors take turns over the cells
    assert Counter(p.vendor for p in one_each) == {v: 9 for v in VENDORS}


def test_vendor_and_site_are_written_and_read_back_for_every_phantom_patient(tmp_path):
    manifest = generate_phantom_cohort(tmp_path, SMALL)
    truth = pd.read_csv(tmp_path / "study" / "truth.csv", dtype={"eid": str})
    scan = scan_ukbb(tmp_path / "study", tmp_path / "study" / "metadata.csv", source="phantom")
    assert not scan.quarantine
    read = {e.patient_id: (e.vendor, e.site) for e in scan.entries}
    assert read == {eid: (v, s) for eid, v, s in zip(truth["eid"], truth["vendor"], truth["site"])}
    assert manifest["counts"]["study"]["per_vendor"] == dict(Counter(truth["vendor"]))
    for row in truth.itertuples():  # the truth's acquisition is its scanner's
        scanner = SCANNERS[row.vendor]
        assert scanner.spacing_mm[0] <= row.spacing_mm <= scanner.spacing_mm[1]


# --- the split policy ------------------------------------------------------------------------


def _cohort(n_study: int = 400, per_cell: int = 4) -> pd.DataFrame:
    people = sample_study_attributes(n_study, 0.3, seed=1) + sample_heldout_attributes(per_cell, seed=1)
    return pd.DataFrame({
        "patient_id": [p.eid for p in people], "subset": [p.subset for p in people],
        "cell": [p.cell.key for p in people], "vendor": [p.vendor for p in people], "site": [p.site for p in people],
    })


def test_a_held_out_vendor_is_in_no_training_validation_or_in_distribution_set():
    cohort = _cohort()
    policy = OodPolicy.parse("vendor=D")
    splits = split_patients(cohort, seed=0, ood=policy).merge(cohort[["patient_id", "vendor", "subset"]], on="patient_id")
    inside = splits[splits["split"].isin(["train", "val", "test", "heldout"])]
    outside = splits[splits["split"].isin(["ood_test", "ood_heldout"])]
    assert "D" not in set(inside["vendor"]) and set(outside["vendor"]) == {"D"}
    assert len(outside) == (cohort["vendor"] == "D").sum()
    assert set(outside.loc[outside["subset"] == "heldout", "split"]) == {"ood_heldout"}
    assert set(outside.loc[outside["subset"] == "study", "split"]) == {"ood_test"}
    # the rest is split exactly as a cohort without the held-out vendor would be
    rest = split_patients(cohort[cohort["vendor"] != "D"], seed=0)
    pd.testing.assert_frame_equal(rest, splits.loc[splits["vendor"] != "D", list(rest.columns)].reset_index(drop=True))
    assert split_leaks(splits, cohort, policy) == []


def test_sites_can_be_held_out_too_and_a_bad_policy_says_what_is_wrong():
    cohort = _cohort()
    splits = split_patients(cohort, seed=0, ood=OodPolicy.parse("site = site-4, site-2"))
    ood_sites = set(cohort.set_index("patient_id").loc[splits.loc[splits["split"] == "ood_test", "patient_id"], "site"])
    assert ood_sites == {"site-4", "site-2"}
    assert OodPolicy.parse("none") is None and OodPolicy.parse("") is None
    with pytest.raises(ValueError, match="column=value"):
        OodPolicy.parse("scanner=D")
    with pytest.raises(ValueError, match=r"no patient has that vendor; the cohort's values are \['A', 'B', 'C', 'D'\]"):
        split_patients(cohort, seed=0, ood=OodPolicy.parse("vendor=Z"))
    with pytest.raises(ValueError, match="none would be left to train on"):
        split_patients(cohort, seed=0, ood=OodPolicy.parse("vendor=A,B,C,D"))
    with pytest.raises(ValueError, match="has no 'vendor' column"):
        split_patients(cohort.drop(columns="vendor"), seed=0, ood=OodPolicy.parse("vendor=D"))


def test_mms_leave_one_vendor_out_reads_the_vendor_letter_and_centre(tmp_path):
    patients = make_patients(8)
    for i, p in enumerate(patients):
        p.update(vendor="ABCD"[i % 4], vendor_name=("Siemens", "Philips", "GE", "Canon")[i % 4], centre=1 + i % 3)
    patients[7]["vendor"] = ""  # a blank letter: the vendor's name stands in
    paths = write_mms_cohort(tmp_path, patients)
    scan = scan_mms(paths.root, paths.metadata)
    got = {e.patient_id: (e.vendor, e.site) for e in scan.entries}
    assert got[patients[0]["id"]] == ("A", "1") and got[patients[2]["id"]] == ("C", "3")
    assert got[patients[7]["id"]] == ("Canon", "2")
    cohort = pd.DataFrame({"patient_id": list(got), "subset": "study", "cell": None,
                           "vendor": [v for v, _ in got.values()], "site": [s for _, s in got.values()]})
    splits = split_patients(cohort, seed=0, ood=OodPolicy.parse("vendor=C"))
    assert set(splits.loc[splits["split"] == "ood_test", "patient_id"]) == {patients[2]["id"], patients[6]["id"]}


def test_uk_biobank_is_one_vendor_with_its_imaging_centres_and_acdc_one_site(tmp_path):
    patients = make_patients(3)
    paths = write_ukbb_cohort(tmp_path, patients)
    table = pd.read_csv(paths.metadata, dtype=str)
    table["54-2.0"] = ["11025", "11027", ""]  # Cheadle, Newcastle, blank
    table.to_csv(paths.metadata, index=False)
    entries = {e.patient_id: e for e in scan_ukbb(paths.root, paths.metadata).entries}
    assert [(entries[p["id"]].vendor, entries[p["id"]].site) for p in patients] == [
        ("Siemens", "Cheadle"), ("Siemens", "Newcastle"), ("Siemens", None)]
    acdc = write_acdc_cohort(tmp_path / "acdc", [{"id": 1, "ed": 0, "es": 3}])
    (entry,) = scan_acdc(acdc.root).entries
    assert (entry.vendor, entry.site) == ("Siemens", "Dijon")


# --- the report ------------------------------------------------------------------------------


def _predictions(rng: np.random.Generator) -> pd.DataFrame:
    """Two strategies; in distribution both separate HF well, out of distribution `real` is near chance
    and `real_plus_synth_1x` keeps more."""
    rows = []
    for evaluation_set, skill in (("test", {"real": 2.0, "real_plus_synth_1x": 2.0}),
                                  ("ood_test", {"real": 0.1, "real_plus_synth_1x": 1.5})):
        for k, cell in enumerate(ALL_CELLS * 6):
            label = int(cell.diagnosis == "hf")
            noise = rng.normal(size=2)
            for (strategy, s), e in zip(skill.items(), noise):
                score = 1 / (1 + np.exp(-(s * (2 * label - 1) + e)))
                rows.append({"strategy": strategy, "seed": 0, "evaluation_set": evaluation_set,
                             "patient_id": f"{evaluation_set}{k}", "cell": cell.key, "sex": cell.sex,
                             "age_band": cell.age_band, "bmi_band": cell.bmi_band, "label": label, "score": score,
                             "threshold": 0.5, "prediction": int(score >= 0.5)})
    return pd.DataFrame(rows)


def test_the_fairness_report_sets_in_and_out_of_distribution_side_by_side(tmp_path):
    fairness = fairness_metrics(_predictions(np.random.default_rng(0)), bootstrap_n=50)
    values = shift_values(fairness, "test", "ood_test", ["real", "real_plus_synth_1x"]).set_index("strategy")
    assert values.loc["real", "drop"] < -0.2  # real-only loses most of its skill on the unseen scanner
    assert values.loc["real_plus_synth_1x", "gain_out"] > 0.15 > abs(values.loc["real_plus_synth_1x", "gain_in"])
    paths = write_fairness_report(fairness, tmp_path)
    text = paths["report"].read_text()
    section = text[text.index("## In and out of distribution"):text.index("## Plots")]
    assert "Out of distribution: the held-out vendor or site, at its own prevalence" in section
    assert f"{values.loc['real', 'drop']:+.3f}" in section
    table = pd.read_csv(paths["distribution_shift_ood_test"])
    assert list(table["strategy"]) == ["Real", "Real + synth 1x"]
    assert "### Out of distribution: the held-out vendor or site, at its own prevalence" in text  # its own Table 2


def test_trabeculae_and_organ_texture_change_the_image_never_the_labels():
    params = sample_anatomy(cohort_attributes(SMALL)["study"][1], SMALL)
    smooth = dataclasses.replace(params, trabecula_depth_mm=0.0, texture_amplitude=0.0)
    cine, ed_mask, es_mask, _, truth = render_patient(params, SMALL)
    cine0, ed_mask0, es_mask0, _, truth0 = render_patient(smooth, SMALL)
    assert (ed_mask == ed_mask0).all() and (es_mask == es_mask0).all()
    assert {k: truth[k] for k in TRUTH_MEASURED} == {k: truth0[k] for k in TRUTH_MEASURED}  # volumes, EF, ES frame
    changed = cine[..., 0] != cine0[..., 0]
    cavity = ed_mask == LV
    # trabeculae darken the cavity's rim, not its centre
    core = binary_erosion(cavity, structure=np.ones((3, 3, 1), bool), iterations=2)  # in-plane
    rim = cavity & ~core
    assert changed[rim].mean() > 5 * changed[core].mean() and cine[..., 0][rim].mean() < cine0[..., 0][rim].mean()
    assert changed[ed_mask == 0].sum() > 200  # the texture of the liver and chest muscle (hundreds of voxels)
