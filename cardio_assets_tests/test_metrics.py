"""Fairness metrics, bootstrap, Table 2, FID/KID, diversity and the reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from cardio_assets.classify.strategies import PREDICTION_COLUMNS
from cardio_assets.cohort.cells import ALL_CELLS
from cardio_assets.metrics.bootstrap import bootstrap_class_metrics, stratified_bootstrap_weights, weighted_auroc
from cardio_assets.metrics.fairness import fairness_metrics
from cardio_assets.metrics.fairness_report import FAIRNESS_SECTIONS, write_fairness_report
from cardio_assets.metrics.group_metrics import group_metrics
from cardio_assets.metrics.groups import ALL_GROUPS, TABLE2_ROWS, group_labels
from cardio_assets.metrics.realism import (
    REALISM_COLUMNS,
    SANITY_COLUMNS,
    classifier_extractor,
    diversity_table,
    extractor_sanity,
    fid_kid,
    inception_extractor,
    intra_prompt_diversity,
    memorisation_check,
    module_extractor,
    realism_table,
    sanity_holds,
)
from cardio_assets.metrics.realism_report import REALISM_SECTIONS, write_realism_report
from cardio_assets.metrics.summary import FAIRNESS_COLUMNS
from cardio_assets.metrics.table2 import table2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _row(pid, cell_key, label, prediction, score=None, strategy="real", seed=0, evaluation_set="test"):
    cell = next(c for c in ALL_CELLS if c.key == cell_key)
    return dict(strategy=strategy, seed=seed, evaluation_set=evaluation_set, patient_id=pid, cell=cell.key,
                sex=cell.sex, age_band=cell.age_band, bmi_band=cell.bmi_band, label=label,
                score=float(prediction if score is None else score), threshold=0.5, prediction=prediction)


def _hand_case() -> pd.DataFrame:
    """Female: 2 HF (1 found), 2 healthy (1 correct): BA 0.5, FNR 0.5.
    Male: 2 HF (2 found), 2 healthy (1 correct): BA 0.75, FNR 0."""
    f_hf, f_ok = "female-lt60-normal-hf", "female-lt60-normal-healthy"
    m_hf, m_ok = "male-ge70-obese-hf", "male-ge70-obese-healthy"
    rows = [
        _row("f1", f_hf, 1, 1), _row("f2", f_hf, 1, 0), _row("f3", f_ok, 0, 0), _row("f4", f_ok, 0, 1),
        _row("m1", m_hf, 1, 1), _row("m2", m_hf, 1, 1), _row("m3", m_ok, 0, 0), _row("m4", m_ok, 0, 1),
    ]
    return pd.DataFrame(rows)[list(PREDICTION_COLUMNS)]


def _random_predictions(strategies=("real", "real_plus_synth_2x"), seeds=(0, 1), n=240, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patients = []
    for es, count in (("test", n), ("heldout", 72)):
        for i in range(count):
            cell = ALL_CELLS[i % 36] if es == "heldout" else ALL_CELLS[int(rng.integers(36))]
            patients.append((es, f"{es}-{i}", cell))
    rows = []
    for k, strategy in enumerate(strategies):
        for sd in seeds:
            r = np.random.default_rng([seed, k, sd])
            for es, pid, cell in patients:
                y = int(cell.diagnosis == "hf")
                score = 1 / (1 + np.exp(-(r.normal() + 2.5 * y - 1.2)))
                rows.append(_row(pid, cell.key, y, int(score >= 0.5), score, strategy, sd, es))
    return pd.DataFrame(rows)[list(PREDICTION_COLUMNS)]


def _get(table, **where):
    sel = table
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, where
    return sel.iloc[0]


def test_balanced_accuracy_and_fnr_gap_match_hand_computation():
    table = fairness_metrics(_hand_case(), bootstrap_n=50)
    assert tuple(table.columns) == FAIRNESS_COLUMNS
    female = _get(table, attribute="sex", group="Female", metric="balanced_accuracy")
    male = _get(table, attribute="sex", group="Male", metric="balanced_accuracy")
    assert female["mean"] == pytest.approx(0.5) and male["mean"] == pytest.approx(0.75)
    assert (female["n_patients"], female["n_hf"]) == (4, 2)
    assert _get(table, attribute="overall", group="Overall", metric="balanced_accuracy")["mean"] == pytest.approx(0.625)
    assert _get(table, attribute="sex", group="Female", metric="fnr")["mean"] == pytest.approx(0.5)
    assert _get(table, attribute="sex", group="Male", metric="fnr")["mean"] == pytest.approx(0.0)
    gap = _get(table, attribute="sex", group=ALL_GROUPS, metric="balanced_accuracy_gap")
    assert gap["mean"] == pytest.approx(0.25)
    assert _get(table, attribute="sex", group=ALL_GROUPS, metric="underdiagnosis_gap")["mean"] == pytest.approx(0.5)
    assert _get(table, attribute="sex", group=ALL_GROUPS,
                metric="worst_group_balanced_accuracy")["mean"] == pytest.approx(0.5)


def test_a_one_class_subgroup_gives_nan_and_its_counts():
    table = fairness_metrics(_hand_case(), bootstrap_n=20)
    cell = _get(table, attribute="cell", group="female-lt60-normal-healthy", metric="balanced_accuracy")
    assert np.isnan(cell["mean"]) and np.isnan(cell["ci_low"])
    assert (cell["n_patients"], cell["n_hf"]) == (2, 0)
    assert np.isnan(_get(table, attribute="cell", group="female-lt60-normal-healthy", metric="auroc")["mean"])
    assert _get(table, attribute="cell", group="female-lt60-normal-healthy",
                metric="accuracy")["mean"] == pytest.approx(0.5)  # specificity of a healthy cell
    # a whole attribute group with one class (no HF women) does not crash either
    only_male_hf = _hand_case()
    only_male_hf.loc[only_male_hf["sex"] == "female", "label"] = 0
    only_male_hf.loc[only_male_hf["sex"] == "female", "cell"] = "female-lt60-normal-healthy"
    table = fairness_metrics(only_male_hf, bootstrap_n=20)
    female = _get(table, attribute="sex", group="Female", metric="balanced_accuracy")
    assert np.isnan(female["mean"]) and female["n_hf"] == 0
    assert np.isnan(_get(table, attribute="sex", group="Female", metric="fnr")["mean"])


def test_bootstrap_ci_contains_its_estimate_and_is_seeded():
    predictions = _random_predictions()
    table2_attributes = ("overall", "sex", "bmi_band", "age_band")
    a = fairness_metrics(predictions, bootstrap_n=200, seed=3, attributes=table2_attributes)
    b = fairness_metrics(predictions, bootstrap_n=200, seed=3, attributes=table2_attributes)
    pd.testing.assert_frame_equal(a, b)
    for attribute, group in TABLE2_ROWS:
        row = _get(a, strategy="real", evaluation_set="test", attribute=attribute, group=group,
                   metric="balanced_accuracy")
        assert row["ci_low"] <= row["mean"] <= row["ci_high"], (attribute, group)
        assert row["ci_high"] - row["ci_low"] > 0
        assert row["std"] >= 0 and row["n_seeds"] == 2


def test_the_ci_holds_the_spread_between_training_runs_not_only_the_patients():
    """Two seeds of one strategy that disagree (one finds every HF patient, one none) on many
    patients: a patient-only bootstrap of their average is narrow around 0.75; resampling the
    runs too reaches both runs' own values."""
    cells = [c for c in ALL_CELLS if c.sex == "male"]
    rows = []
    for i in range(720):
        cell = cells[i % len(cells)]
        y = int(cell.diagnosis == "hf")
        rows += [_row(f"p{i}", cell.key, y, 1 if y else 0, seed=0),  # perfect: BA 1.0
                 _row(f"p{i}", cell.key, y, 0, seed=1)]  # says healthy to all: BA 0.5
    predictions = pd.DataFrame(rows)[list(PREDICTION_COLUMNS)]
    row = _get(fairness_metrics(predictions, bootstrap_n=400, attributes=("overall",)),
               attribute="overall", metric="balanced_accuracy")
    assert row["mean"] == pytest.approx(0.75) and row["std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    # a quarter of the resamples draw seed 0 twice (BA 1.0), a quarter seed 1 twice (0.5)
    assert row["ci_low"] == pytest.approx(0.5) and row["ci_high"] == pytest.approx(1.0)
    one_run = _get(fairness_metrics(predictions[predictions["seed"] == 0].assign(seed=0), bootstrap_n=400,
                                    attributes=("overall",)), attribute="overall", metric="balanced_accuracy")
    assert one_run["ci_low"] == one_run["ci_high"] == 1.0  # one perfect run: nothing to resample


def test_vectorised_bootstrap_agrees_with_metricframe_on_the_sample_itself():
    run = _random_predictions(strategies=("real",), seeds=(0,))
    run = run[run["evaluation_set"] == "test"]
    y = run["label"].to_numpy(float)
    pred = run["prediction"].to_numpy(float)
    ones = np.ones((1, len(run)))
    for attribute in ("sex", "age_band", "sex_x_bmi"):
        reference = group_metrics(run, attribute)
        labels = group_labels(run, attribute)
        onehot = (labels[:, None] == reference.index.to_numpy()[None, :]).astype(float)
        fast = bootstrap_class_metrics(ones, onehot, y, pred)
        for metric in ("balanced_accuracy", "fnr", "accuracy"):
            np.testing.assert_allclose(fast[metric][0], reference[metric].to_numpy(), equal_nan=True)
        for k, group in enumerate(reference.index):
            members = onehot[:, k] == 1
            au = weighted_auroc(ones[:, members], y[members], run["score"].to_numpy()[members])[0]
            assert au == pytest.approx(reference.loc[group, "auroc"], nan_ok=True)


def test_bootstrap_balanced_accuracy_is_sklearns_with_sample_weights():
    run = _random_predictions(strategies=("real",), seeds=(0,))
    run = run[run["evaluation_set"] == "test"]
    y = run["label"].to_numpy(float)
    pred = run["prediction"].to_numpy(float)
    weights = stratified_bootstrap_weights(run["cell"].to_numpy(), 20, np.random.default_rng(0))
    labels = group_labels(run, "sex")
    onehot = (labels[:, None] == np.array(["Female", "Male"], dtype=object)[None, :]).astype(float)
    fast = bootstrap_class_metrics(weights, onehot, y, pred)["balanced_accuracy"]
    for k in range(onehot.shape[1]):
        members = onehot[:, k] == 1
        reference = [balanced_accuracy_score(y[members], pred[members], sample_weight=w[members]) for w in weights]
        assert np.array_equal(fast[:, k], np.array(reference))  # bit for bit: the weighted counts are exact


def test_stratified_bootstrap_keeps_every_cell_size():
    strata = np.array(["a"] * 5 + ["b"] * 3)
    w = stratified_bootstrap_weights(strata, 100, np.random.default_rng(0))
    assert (w[:, :5].sum(axis=1) == 5).all() and (w[:, 5:].sum(axis=1) == 3).all()


def test_paired_comparison_of_a_strategy_with_itself_is_null():
    predictions = _random_predictions(strategies=("real",), seeds=(0, 1))
    copy = predictions.assign(strategy="real_plus_synth_1x")
    table = fairness_metrics(pd.concat([predictions, copy]), bootstrap_n=100, attributes=("overall", "sex"))
    diff = _get(table, strategy="real_plus_synth_1x", evaluation_set="test", attribute="overall", group="Overall",
                metric="balanced_accuracy_vs_real")
    assert diff["mean"] == 0 and diff["ci_low"] == 0 and diff["ci_high"] == 0 and diff["p_share"] == 1.0
    rel = _get(table, strategy="real_plus_synth_1x", evaluation_set="test", attribute="sex", group=ALL_GROUPS,
               metric="balanced_accuracy_gap_relative_change_vs_real")
    assert rel["mean"] == pytest.approx(0.0)


def test_table2_has_the_papers_rows_and_a_column_per_strategy():
    table = fairness_metrics(_random_predictions(), bootstrap_n=50, attributes=("overall", "sex", "bmi_band", "age_band"))
    t2 = table2(table, "test")
    assert list(t2.index) == ["Overall", "Female", "Male", "Normal BMI", "Overweight", "Obese", "Age < 60",
                              "Age 60-70", "Age > 70"]
    assert list(t2.columns) == ["prevalence", "real", "real_plus_synth_2x"]
    assert t2.loc["Overall", "prevalence"].endswith("%")
    assert "±" in t2.loc["Female", "real"] and "[" not in t2.loc["Female", "real"]
    female = _get(table, strategy="real", evaluation_set="test", attribute="sex", group="Female", metric="balanced_accuracy")
    with_ci = table2(table, "test", with_ci=True).loc["Female", "real"]
    assert with_ci == t2.loc["Female", "real"] + f" [{female['ci_low']:.3f}, {female['ci_high']:.3f}]"
    assert table2(table, "heldout").loc["Overall", "prevalence"] == "50.00%"


# --------------------------------------------------------------------------- realism


class _SmallFeatures(nn.Module):
    """A small fixed 'CNN' for tests: 4x4 average pooling -> 48 features (and their squares)."""

    def forward(self, x):
        pooled = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([pooled, pooled ** 2], dim=1) * 10.0


def _smooth_images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    out = np.empty((n, 3, 16, 16), np.float32)
    for i in range(n):
        a, b, c = rng.uniform(0.2, 0.5, 3)
        out[i] = (a + 0.2 * b * xx + 0.2 * c * yy)[None]
    return out


def test_fid_of_a_set_with_itself_is_near_zero_and_with_noise_large():
    extractor = module_extractor(_SmallFeatures(), "4x4 pooling test extractor")
    real = _smooth_images(48, seed=0)
    noise = np.random.default_rng(1).random((48, 3, 16, 16)).astype(np.float32)
    same = fid_kid(real, real, extractor, n=48, repeats=2, kid_subsets=10)
    other = fid_kid(real, noise, extractor, n=48, repeats=2, kid_subsets=10)
    assert same["fid_mean"] == pytest.approx(0.0, abs=1e-3)
    assert other["fid_mean"] > 100.0
    assert other["kid_mean"] > same["kid_mean"]
    assert same["n"] == 48 and same["repeats"] == 2
    assert same["extractor"] == "4x4 pooling test extractor"
    halves = fid_kid(real, None, extractor, n=100, repeats=2, kid_subsets=10)
    assert halves["n"] == 24  # disjoint halves, equal n, n capped by what is there
    assert halves["fid_mean"] < other["fid_mean"]


def test_a_feature_bank_gives_torch_fidelitys_values_and_extracts_each_image_once():
    import torch_fidelity

    from cardio_assets.metrics.realism import FeatureBank, UInt8Frames

    extractor = module_extractor(_SmallFeatures(), "4x4 pooling test extractor")
    real, other = _smooth_images(40, seed=0), _smooth_images(40, seed=3)
    direct = torch_fidelity.calculate_metrics(
        input1=UInt8Frames(real), input2=UInt8Frames(other), fid=True, kid=True, kid_subsets=10, kid_subset_size=40,
        cuda=False, cache=False, save_cpu_ram=True, verbose=False, **extractor.kwargs())
    bank = FeatureBank(real, extractor)
    banked = fid_kid(bank, other, extractor, n=40, repeats=1, kid_subsets=10)
    assert banked["fid_mean"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-5)
    assert banked["kid_mean"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-5)
    # views share the cache: rows drawn again are not extracted again
    view = bank.subset(np.arange(10, 30))
    assert bank.extracted == 40
    fid_kid(view, None, extractor, n=10, repeats=3, kid_subsets=5)
    assert bank.extracted == 40
    assert torch.equal(view.features([0, 1]), bank.features([10, 11]))
    with pytest.raises(ValueError, match="FeatureBank"):
        fid_kid(bank, other, module_extractor(_SmallFeatures(), "another test extractor"), n=8, repeats=1, kid_subsets=2)


def test_a_trained_classifier_serves_as_fid_feature_extractor(tmp_path):
    from cardio_assets.classify.model import build_classifier

    classifier = build_classifier(image_size=32)
    extractor = classifier_extractor(classifier)
    assert "ResNet-18" in extractor.description and "random initialisation" in extractor.description
    real = _smooth_images(24, seed=0)
    result = fid_kid(real, real[::-1].copy(), extractor, n=24, repeats=1, kid_subsets=5)
    assert result["fid_mean"] == pytest.approx(0.0, abs=1e-2)
    assert classifier.training  # the caller's module is left as it was (a copy is registered)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05.pth"):
        inception_extractor(tmp_path / "pt_inception-2015-12-05.pth")


def _image_set(n_per_cell: int, synthetic: bool, seed: int):
    from cardio_assets.classify.strategies import ImageSet

    rows, imgs = [], _smooth_images(36 * n_per_cell, seed)
    for i in range(36 * n_per_cell):
        cell = ALL_CELLS[i % 36]
        rows.append(dict(patient_id=f"{'s' if synthetic else 'r'}{i}", split="train", cell=cell.key, sex=cell.sex,
                         age_band=cell.age_band, bmi_band=cell.bmi_band, diagnosis=cell.diagnosis,
                         prompt=f"prompt {cell.key}", synthetic=synthetic, mask_id=i % 36))
    return ImageSet(imgs, pd.DataFrame(rows))


def test_realism_table_has_the_shape_of_table1_and_the_report_renders(tmp_path):
    extractor = module_extractor(_SmallFeatures(), "4x4 pooling test extractor")
    real, synthetic = _image_set(2, False, 0), _image_set(2, True, 1)
    table = realism_table(real, synthetic, extractor, n=8, repeats=2, kid_subsets=5, log=lambda m: None)
    assert tuple(table.columns) == REALISM_COLUMNS
    assert len(table) == 4 * 3 * 2
    assert set(table["attribute"]) == {"Sex", "Age", "BMI", "Condition"}
    assert "Male - Female" in set(table["comparison"]) and "Age < 60 - Age > 70" in set(table["comparison"])
    assert table["fid_mean"].notna().all() and (table["n"] == 8).all()
    diversity = diversity_table(synthetic, by=("prompt", "mask_id"))
    assert len(diversity) == 36 and diversity["n_images"].eq(2).all()
    paths = write_realism_report(table, tmp_path / "realism", diversity)
    text = paths["report"].read_text()
    for section in REALISM_SECTIONS:
        assert f"## {section}" in text
    assert "4x4 pooling test extractor" in text and "Male - Female" in text
    assert not list((tmp_path / "realism").glob(".*"))  # no temporary files left


class _ChannelBlindFeatures(nn.Module):
    """Sees only ED + ES (channels R + G): blind to which frame is which."""

    def forward(self, x):
        pooled = nn.functional.adaptive_avg_pool2d(x[:, :2].sum(1, keepdim=True), 4).flatten(1)
        return torch.cat([pooled, pooled ** 2], dim=1) * 10.0


def test_extractor_sanity_catches_an_extractor_blind_to_ed_and_es(tmp_path):
    real = _image_set(8, False, 0)  # 288 images: halves of 144, more than the 96 features (FID's covariances)
    real.images[:, 1] *= 0.5  # ES (G) darker than ED (R, B), as a contracted cavity leaves less blood
    # pixel noise: full-rank feature covariances (the smooth family alone spans 3 directions)
    real.images += 0.05 * np.random.default_rng(3).random(real.images.shape, dtype=np.float32)
    sees = extractor_sanity(real, module_extractor(_SmallFeatures(), "sees channels"), n=140, kid_subsets=5)
    assert tuple(sees.columns) == SANITY_COLUMNS and len(sees) == 3 and (sees["n"] == 140).all()
    floor, swapped, noise = sees["fid"]
    assert floor < 1.0 < 100.0 < min(swapped, noise) and sanity_holds(sees)
    blind = extractor_sanity(real, module_extractor(_ChannelBlindFeatures(), "blind"), n=140, kid_subsets=5)
    assert not sanity_holds(blind)
    paths = write_realism_report(pd.DataFrame(columns=REALISM_COLUMNS), tmp_path / "realism", sanity=blind)
    assert "NOT as expected" in paths["report"].read_text()


def test_intra_prompt_diversity_is_one_for_copies_and_lower_for_different_images():
    images = _smooth_images(3, seed=4)
    assert intra_prompt_diversity(np.repeat(images[:1], 3, axis=0)) == pytest.approx(1.0, abs=1e-4)
    noise = np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32)
    assert intra_prompt_diversity(noise) < 0.5
    assert np.isnan(intra_prompt_diversity(images[:1]))


# --------------------------------------------------------------------------- fairness report


def test_fairness_report_renders_every_section(tmp_path):
    predictions = _random_predictions(strategies=("real", "real_plus_synth_1x", "synth_only"), seeds=(0, 1))
    table = fairness_metrics(predictions, bootstrap_n=50)
    runs = pd.DataFrame([{"strategy": s, "seed": sd, "model_description": "random initialisation (test)",
                          "best_epoch": 0, "val_balanced_accuracy": 0.8, "threshold": 0.5, "alpha": None,
                          "n_train_real": 10, "n_train_synthetic": 0, "seconds": 1.0}
                         for s in ("real", "real_plus_synth_1x", "synth_only") for sd in (0, 1)])
    paths = write_fairness_report(table, tmp_path / "fairness", runs=runs)
    text = paths["report"].read_text()
    for section in FAIRNESS_SECTIONS:
        assert f"## {section}" in text, section
    for _, group in TABLE2_ROWS:
        assert f"| {group} |" in text
    assert "Balanced held-out set" in text and "Test set" in text
    assert "random initialisation (test)" in text
    for key in ("balanced_accuracy_by_group_test", "gap_vs_accuracy_heldout", "table2_test", "fairness_csv"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    assert paths["balanced_accuracy_by_group_test"].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "fairness").glob(".*"))
    # plots get the permissions of every other output (a temporary file's 0600 would hide them)
    assert paths["balanced_accuracy_by_group_test"].stat().st_mode & 0o777 == paths["report"].stat().st_mode & 0o777


def test_matching_weights_give_a_draw_the_reference_mix():
    from cardio_assets.metrics.realism import matching_weights

    reference = ["hf"] * 10 + ["healthy"] * 90  # the cohort: 10% HF
    balanced = ["hf"] * 50 + ["healthy"] * 50 + ["other"] * 5  # a synthetic set: balanced, plus a key the cohort lacks
    weights = matching_weights(reference, balanced)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[:50].sum() == pytest.approx(0.10) and weights[50:100].sum() == pytest.approx(0.90)
    assert (weights[100:] == 0).all()
    draw = np.random.default_rng(0).choice(len(balanced), size=20, replace=False, p=weights)
    assert sum(balanced[i] == "hf" for i in draw) <= 6  # about 2 expected, never the balanced 10


class _MemorisingFeatures(nn.Module):
    """_SmallFeatures plus a feature that lights up on a faint mark only its training images carry
    (the top-left pixel of the first channel): it tells the images it trained on from all others."""

    def forward(self, x):
        return torch.cat([_SmallFeatures()(x), 200.0 * x[:, :1, 0, 0]], dim=1)


def test_memorisation_check_tells_an_extractor_that_memorised_its_training_frames(tmp_path):
    seen, unseen = _image_set(8, False, 0), _image_set(8, False, 5)
    for s in (seen, unseen):
        s.images += 0.05 * np.random.default_rng(3).random(s.images.shape, dtype=np.float32)
    seen.images[:, 0, 0, 0] = 0.2  # a faint mark on the frames the extractor trained on
    unseen.images[:, 0, 0, 0] = 0.0
    general = memorisation_check(seen, unseen, module_extractor(_SmallFeatures(), "general"), n=140, kid_subsets=5)
    memorised = memorisation_check(seen, unseen, module_extractor(_MemorisingFeatures(), "memorising"), n=140, kid_subsets=5)
    for table in (general, memorised):
        assert tuple(table.columns) == SANITY_COLUMNS and (table["n"] == 140).all()
    general_floor, general_unseen = general["fid"]
    memorised_floor, memorised_unseen = memorised["fid"]
    assert general_unseen < 2 * max(general_floor, 1.0)
    assert memorised_unseen > 10 * max(memorised_floor, 1.0)
    paths = write_realism_report(pd.DataFrame(columns=REALISM_COLUMNS), tmp_path / "realism", memorisation=memorised)
    assert "memorised" in paths["report"].read_text() and paths["extractor_memorisation_csv"].exists()


def _brightness_probabilities(images):
    """A stand-in attribute predictor whose p(male) is the image's mean intensity: what the
    table reports is then known by construction."""
    means = np.asarray(images, dtype=np.float32).mean(axis=(1, 2, 3))
    return [{"sex": {"male": float(m), "female": float(1 - m)}} for m in means]


def test_attributes_as_drawn_compares_within_cells_and_shows_a_caricatured_class_and_an_ignored_one(tmp_path):
    from cardio_assets.classify.train import Frames, per_image
    from cardio_assets.metrics.attribute_fidelity import ATTRIBUTE_FIDELITY_COLUMNS, attribute_fidelity

    def images(*levels):
        return np.concatenate([np.full((n, 3, 8, 8), level, np.float32) for level, n in levels])

    def index(*cells):
        return pd.DataFrame({"cell": [c for c, n in cells for _ in range(n)],
                             "sex": [c.split("-")[0] for c, n in cells for _ in range(n)]})

    # p(male) is the brightness: real male healthy frames 0.6, male HF frames 0.2 (HF looks less male)
    real_index = index(("male-healthy", 3), ("male-hf", 1), ("female-healthy", 2))
    real = images((0.6, 3), (0.2, 1), (0.3, 2))
    # synthetic: mostly the rare HF cell, drawn as real (0.2); healthy males over-drawn (0.9); healthy
    # females half-ignored (p(female) 0.5 against 0.7); a cell with no real frame to compare with
    synthetic_index = index(("male-healthy", 1), ("male-hf", 3), ("female-healthy", 4), ("female-hf", 2))
    synthetic = images((0.9, 1), (0.2, 3), (0.5, 4), (0.1, 2))
    # lazy frames, read a chunk at a time, give the same table as arrays
    lazy = Frames([(synthetic, np.arange(len(synthetic)))])
    for synthetic_images in (synthetic, lazy):
        (real_p,), (synthetic_p,) = per_image(real, _brightness_probabilities), per_image(synthetic_images, _brightness_probabilities, chunk=3)
        table = attribute_fidelity(real_p, real_index, synthetic_p, synthetic_index, ("sex",))
        assert tuple(table.columns) == ATTRIBUTE_FIDELITY_COLUMNS
        rows = table.set_index("class")
        assert rows.loc["male", ["cells", "n_real", "n_synthetic"]].tolist() == [2, 4, 4]
        assert rows.loc["female", ["cells", "n_real", "n_synthetic"]].tolist() == [1, 2, 4]
        # weighted to the real mix (3:1): the caricature shows (+0.225); a plain mean over the
        # synthetic frames (0.375, mostly HF) would call it under-drawn
        np.testing.assert_allclose(rows.loc["male", ["real_mean_p", "synthetic_mean_p", "difference"]].astype(float),
                                   [0.5, 0.725, 0.225], atol=1e-6)
        np.testing.assert_allclose(rows.loc["female", ["real_mean_p", "synthetic_mean_p", "difference"]].astype(float),
                                   [0.7, 0.5, -0.2], atol=1e-6)
    paths = write_realism_report(pd.DataFrame(columns=REALISM_COLUMNS), tmp_path / "realism", attributes_as_drawn=table)
    text = paths["report"].read_text()
    assert "## Attributes as drawn" in text and "| sex | male | 2 | 4 | 0.500 | 4 | 0.725 | 0.225 |" in text
    assert pd.read_csv(paths["attributes_as_drawn_csv"]).shape == (2, len(ATTRIBUTE_FIDELITY_COLUMNS))


def test_sharpness_compares_each_frame_within_cells_and_sees_a_blur(tmp_path):
    from scipy.ndimage import gaussian_filter

    from cardio_assets.metrics.sharpness import SHARPNESS_COLUMNS, high_frequency_energy, sharpness_table

    rng = np.random.default_rng(0)
    flat = np.full((1, 3, 16, 16), 0.5, np.float32)
    assert np.allclose(high_frequency_energy(flat), 0.0)

    def frames(n, amplitude, es_blur=0.0):
        x = 0.5 + amplitude * rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        if es_blur:
            x[:, 1] = gaussian_filter(x[:, 1], (0, es_blur, es_blur))
        return x

    # two cells of different texture; the synthetic side holds mostly the smooth cell and, in its
    # ES channel only, is blurred
    real = np.concatenate([frames(30, 0.05), frames(10, 0.2)])
    real_index = pd.DataFrame({"cell": ["smooth"] * 30 + ["rough"] * 10})
    synthetic = np.concatenate([frames(5, 0.05, es_blur=1.0), frames(40, 0.2, es_blur=1.0)])
    synthetic_index = pd.DataFrame({"cell": ["smooth"] * 5 + ["rough"] * 40})
    table = sharpness_table(high_frequency_energy(real), real_index, high_frequency_energy(synthetic), synthetic_index).set_index("frame")
    assert tuple(table.reset_index().columns) == SHARPNESS_COLUMNS
    assert table.loc["ED", "cells"] == 2 and table.loc["ED", "n_real"] == 40 and table.loc["ED", "n_synthetic"] == 45
    # weighted to the real mix, the ED frames match (a plain mean over the rough-heavy synthetic side would be ~2.5x)
    assert 0.95 < table.loc["ED", "synthetic_over_real"] < 1.05
    assert table.loc["ES", "synthetic_over_real"] < 0.5
    paths = write_realism_report(pd.DataFrame(columns=REALISM_COLUMNS), tmp_path / "realism", sharpness=table.reset_index())
    assert "## Sharpness" in paths["report"].read_text()
    assert pd.read_csv(paths["sharpness_csv"])["frame"].tolist() == ["ED", "ES"]


def test_qc_by_cell_sets_each_cell_against_the_real_frames_its_masks_came_from(tmp_path):
    from cardio_assets.metrics.qc_summary import QC_BY_CELL_COLUMNS, qc_by_cell, qc_by_slice

    def items(cell, passed, attempts, source_passed, sources, modes):
        return pd.DataFrame({"cell": cell, "qc_passed": passed, "attempts": attempts, "source_frame_qc_passed": source_passed,
                             "source_hash": sources, "failure_modes": modes})

    log = pd.concat([
        # the generator's shortfall: every source frame passes, half the synthetic frames do not
        items("a", [True, True, False, False], [1, 3, 3, 3], [True] * 4, ["s1", "s2", "s1", "s2"],
              ["", "", "mask: ES: blood pool Dice below threshold", "mask: ES: blood pool Dice below threshold; attribute: x"]),
        # limited by its masks: what fails is drawn on the source frame that fails too
        items("b", [True, True, True, False], [1, 1, 2, 3], [True, True, True, False], ["s3"] * 3 + ["s4"],
              ["", "", "", "mask: ED: RV cavity not brighter than myocardium"]),
    ], ignore_index=True)
    table = qc_by_cell(log)
    assert tuple(table.columns) == QC_BY_CELL_COLUMNS and table["cell"].tolist() == ["a", "b"]  # lowest pass rate first
    a, b = (table.set_index("cell").loc[c] for c in ("a", "b"))
    assert (a["source_patients"], a["requested"], a["kept"], a["pass_rate"], a["first_attempt_pass_rate"]) == (2, 4, 2, 0.5, 0.25)
    assert a["source_frames_pass_rate"] == 1.0 and a["pass_rate_where_source_passes"] == 0.5 and np.isnan(a["pass_rate_where_source_fails"])
    assert a["top_failure_mode"] == "mask: ES: blood pool Dice below threshold"
    assert b["source_frames_pass_rate"] == 0.75 and b["pass_rate_where_source_passes"] == 1.0 and b["pass_rate_where_source_fails"] == 0.0
    # a log written before the reference existed still summarises, with the reference blank
    assert np.isnan(qc_by_cell(log.drop(columns="source_frame_qc_passed"))["source_frames_pass_rate"]).all()
    # by the slice the masks came from: the apical neighbour (+1) is where QC fails
    log["source_slice_offset"] = [0, -1, 1, 1, 0, -1, 0, 1]
    slices = qc_by_slice(log).set_index("source_slice_offset")
    assert slices.index.tolist() == [-1, 0, 1] and slices["requested"].tolist() == [2, 3, 3]
    assert slices["pass_rate"].round(3).tolist() == [1.0, 1.0, 0.0]
    assert slices.loc[1, "source_frames_pass_rate"] == 2 / 3 and slices.loc[1, "pass_rate_where_source_passes"] == 0.0
    assert qc_by_slice(log.drop(columns="source_slice_offset")).empty  # logs before 2026.12.2
    paths = write_realism_report(pd.DataFrame(columns=REALISM_COLUMNS), tmp_path / "realism", qc=table, qc_slices=slices.reset_index())
    assert "## Quality control per cell" in paths["report"].read_text() and "5 of 8 requested" in paths["report"].read_text()
    assert "apical neighbour" in paths["report"].read_text()
    assert pd.read_csv(paths["qc_by_cell_csv"])["cell"].tolist() == ["a", "b"]
    assert pd.read_csv(paths["qc_by_slice_csv"])["source_slice_offset"].tolist() == [-1, 0, 1]
