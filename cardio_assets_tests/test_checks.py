"""Every asset check fails on a planted defect and passes without it.

The checks are invoked through Dagster (the decorated check called with its asset values
and resources), on small tables made by the project's own code where it has any (cohort
splits, fairness metrics, training-patient records)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckResult, AssetCheckSeverity
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from cardio_assets.classify.strategies import PREDICTION_COLUMNS
from cardio_assets.cohort.cells import ALL_CELLS, cell_key_or_none
from cardio_assets.cohort.ood import OodPolicy
from cardio_assets.cohort.splits import split_patients
from cardio_assets.cohort.training_patients import CLASSIFIER_FOLDER, classifier_run_name, patient_roles, write_training_patients
from cardio_assets.cohort.validation import COHORT_COLUMNS
from cardio_assets.defs import checks
from cardio_assets.defs.check_rules import MEMORIZATION_RMS, chance_auroc_bound, runs_not_beating_chance
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.generation.synthesis import patient_hash, privacy_salt
from cardio_assets.lake.values import FrameSet
from cardio_assets.metrics.fairness import fairness_metrics
from cardio_assets.profiles import get_profile

PROFILE = get_profile("smoke")
SIZE = PROFILE.frames.size
AGE = {"lt60": 50.0, "60to70": 65.0, "ge70": 75.0}
BMI = {"normal": 22.0, "overweight": 27.0, "obese": 33.0}


@pytest.fixture
def settings(tmp_path) -> PipelineSettings:
    return PipelineSettings(profile="smoke", data_lake=str(tmp_path / "lake"))


def _passed(result: AssetCheckResult) -> bool:
    assert isinstance(result, AssetCheckResult)
    return result.passed


def _failed_as(result: AssetCheckResult, severity: AssetCheckSeverity) -> bool:
    return not _passed(result) and result.severity == severity


# --------------------------------------------------------------------------- small tables


def _cohort(per_cell: int = 4, heldout_per_cell: int = 1) -> pd.DataFrame:
    """A valid cohort table: `per_cell` study patients and `heldout_per_cell` held-out ones in every cell."""
    rows = []
    for i, cell in enumerate(ALL_CELLS):
        for j in range(per_cell + heldout_per_cell):
            age, bmi = AGE[cell.age_band], BMI[cell.bmi_band]
            row = dict.fromkeys(COHORT_COLUMNS)
            row.update(patient_id=f"p{i:02d}{j}", source="phantom", subset="heldout" if j >= per_cell else "study",
                       vendor="ABCD"[(i + j) % 4], site=f"site-{1 + (i + j) % 4}",
                       sex=cell.sex, age=age, bmi=bmi, diagnosis=cell.diagnosis,
                       cell=cell_key_or_none(cell.sex, age, bmi, cell.diagnosis), age_band=cell.age_band,
                       bmi_band=cell.bmi_band, ed_frame=0, es_frame=10, n_frames=25, label_map="canonical")
            rows.append(row)
    return pd.DataFrame(rows, columns=COHORT_COLUMNS)


def _splits(ood: OodPolicy | None = None) -> pd.DataFrame:
    return split_patients(_cohort(), seed=0, ood=ood)


def _ids(splits: pd.DataFrame, split: str) -> list[str]:
    return sorted(splits.loc[splits["split"] == split, "patient_id"])


def _frameset(n_patients: int = 3, split: str = "train", per_patient: int = 9, synthetic: bool = False) -> FrameSet:
    rng = np.random.default_rng(0)
    n = n_patients * per_patient
    index = pd.DataFrame({"patient_id": np.repeat([f"q{i}" for i in range(n_patients)], per_patient), "split": split,
                          "synthetic": synthetic, "source_hash": "h"})
    images = rng.random((n, 3, SIZE, SIZE)).astype(np.float16)
    controls = rng.integers(0, 4, (n, 3, SIZE, SIZE)).astype(np.uint8)
    return FrameSet(index, images, controls)


def _qc_log(n: int, n_passed: int, rms: float = 0.2) -> pd.DataFrame:
    passed = np.arange(n) < n_passed
    return pd.DataFrame({"qc_passed": passed, "failure_modes": np.where(passed, "", "mask_dice"),
                         "nearest_real_rms": np.where(passed, rms, np.nan), "near_copy": np.where(passed, rms < MEMORIZATION_RMS, False)})


def _predictions(splits: pd.DataFrame, strategies=("real",), seeds=(0, 1)) -> pd.DataFrame:
    """Scores for every test and held-out patient that follow the label (a useful classifier)."""
    rng = np.random.default_rng(1)
    cells = {c.key: c for c in ALL_CELLS}
    rows = []
    for strategy in strategies:
        for seed in seeds:
            for pid, cell, split in splits[splits["split"].isin(["test", "heldout"])].itertuples(index=False):
                c = cells[cell]
                label = int(c.diagnosis == "hf")
                score = float(np.clip(0.3 + 0.4 * label + 0.2 * rng.standard_normal(), 0, 1))
                rows.append(dict(strategy=strategy, seed=seed, evaluation_set=split, patient_id=pid, cell=cell, sex=c.sex,
                                 age_band=c.age_band, bmi_band=c.bmi_band, label=label, score=score, threshold=0.5,
                                 prediction=int(score >= 0.5)))
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


def _runs(val_auroc=(0.9, 0.9), n_val=40, n_val_hf=10, skipped=()) -> pd.DataFrame:
    """A classifier_runs table: one `real` row per seed, plus a row per skipped strategy."""
    rows = [dict(strategy="real", seed=seed, n_val=n_val, n_val_hf=n_val_hf, val_auroc=a, val_balanced_accuracy=0.8)
            for seed, a in enumerate(val_auroc)]
    rows += [dict(strategy=s, skipped_reason="no synthetic images passed QC") for s in skipped]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- cohort


def test_cohort_schema_passes_a_valid_cohort_and_fails_a_wrong_cell():
    cohort = _cohort()
    assert _passed(checks.cohort_schema(cohort=cohort))
    bad = cohort.copy()
    bad.loc[0, "bmi"] = 35.0  # obese, but the cell still says otherwise
    assert _failed_as(checks.cohort_schema(cohort=bad), AssetCheckSeverity.ERROR)


def test_cohort_unique_ids_fails_a_duplicated_patient():
    cohort = _cohort()
    assert _passed(checks.cohort_unique_ids(cohort=cohort))
    assert _failed_as(checks.cohort_unique_ids(cohort=pd.concat([cohort, cohort.iloc[[3]]])), AssetCheckSeverity.ERROR)


def test_quarantine_share_warns_above_the_profile_limit(settings):
    cohort = _cohort()
    limit = PROFILE.max_quarantine_share
    n_ok = int(limit * len(cohort))  # share n_ok / (len + n_ok) stays under the limit
    n_bad = int(np.ceil(2 * limit * len(cohort)))

    def quarantine(n: int, rows_each: int = 1) -> pd.DataFrame:
        ids = [f"bad{i}" for i in range(n) for _ in range(rows_each)]
        return pd.DataFrame({"patient_id": ids, "reason": "unreadable"})

    # a patient with several problems counts once
    assert _passed(checks.quarantine_share(settings=settings, cohort=cohort, cohort_quarantine=quarantine(n_ok, rows_each=5)))
    assert _failed_as(checks.quarantine_share(settings=settings, cohort=cohort, cohort_quarantine=quarantine(n_bad)), AssetCheckSeverity.WARN)


def test_no_patient_in_two_splits_fails_a_patient_split_twice_or_a_heldout_patient_in_training(settings):
    ood = settings.ood_policy()
    assert ood == OodPolicy("vendor", ("D",))  # the phantom's default: vendor D is never trained on
    cohort, splits = _cohort(), _splits(ood)

    def check(table):
        return checks.no_patient_in_two_splits(settings=settings, patient_splits=table, cohort=cohort)

    assert _passed(check(splits))
    twice = pd.concat([splits, splits.iloc[[0]].assign(split="test" if splits.iloc[0]["split"] != "test" else "train")])
    assert _failed_as(check(twice), AssetCheckSeverity.ERROR)
    heldout_trained = splits.copy()
    heldout_trained.loc[heldout_trained["split"] == "heldout", "split"] = "train"
    assert not _passed(check(heldout_trained))
    assert not _passed(check(splits.iloc[1:]))  # one unsplit
    # a patient of the held-out vendor in training, or one of a training vendor tested out of distribution
    vendor_of = dict(zip(cohort["patient_id"], cohort["vendor"]))
    ood_rows = splits.index[splits["split"] == "ood_test"]
    assert len(ood_rows) and all(vendor_of[p] == "D" for p in splits.loc[ood_rows, "patient_id"])
    for moved in (splits.assign(split=splits["split"].where(splits.index != ood_rows[0], "train")),
                  splits.assign(split=splits["split"].where(splits["split"] != "test", "ood_test"))):
        result = check(moved)
        assert _failed_as(result, AssetCheckSeverity.ERROR)
    # the same splits under no policy: the D patients' ood splits are themselves the leak
    assert not _passed(checks.no_patient_in_two_splits(
        settings=PipelineSettings(profile="smoke", data_lake=settings.data_lake, ood_holdout="none"),
        patient_splits=splits, cohort=cohort))


def test_cell_minimum_counts_warns_about_a_cell_below_the_minimum(settings):
    minimum = PROFILE.min_train_patients_per_cell
    cells = pd.DataFrame({"cell": [c.key for c in ALL_CELLS], "n_train": minimum})
    assert _passed(checks.cell_minimum_counts(settings=settings, subgroup_cells=cells))
    cells.loc[5, "n_train"] = minimum - 1
    result = checks.cell_minimum_counts(settings=settings, subgroup_cells=cells)
    assert _failed_as(result, AssetCheckSeverity.WARN)
    assert list(result.metadata["cells_below"].data) == [cells.loc[5, "cell"]]


# --------------------------------------------------------------------------- frames


def test_frames_valid_passes_good_frames_and_fails_nan_labels_or_counts(settings):
    assert _passed(checks.frames_valid(settings=settings, frames=_frameset()))
    assert _passed(checks.frames_valid(settings=settings, frames=_frameset(n_patients=0)))  # an empty cell
    nan = _frameset()
    nan.images[4, 0, 1, 1] = np.nan
    assert _failed_as(checks.frames_valid(settings=settings, frames=nan), AssetCheckSeverity.ERROR)
    labels = _frameset()
    labels.controls[0, 0, 0, 0] = 7
    assert not _passed(checks.frames_valid(settings=settings, frames=labels))
    two_val_images = _frameset(split="val", per_patient=2)
    assert not _passed(checks.frames_valid(settings=settings, frames=two_val_images))
    wrong_size = _frameset()
    wrong_size = FrameSet(wrong_size.index, wrong_size.images[:, :, :-1], wrong_size.controls)
    assert not _passed(checks.frames_valid(settings=settings, frames=wrong_size))


# --------------------------------------------------------------------------- synthetic frames


def test_synthetic_count_passes_a_full_cell_warns_a_shortfall_and_errors_on_unaccounted_images(settings):
    n = PROFILE.synthetic_per_cell
    full = _frameset(n_patients=n, per_patient=1, synthetic=True)
    assert _passed(checks.synthetic_count(settings=settings, synthetic_frames=full, synthetic_qc_log=_qc_log(n, n)))
    short = _frameset(n_patients=n - 1, per_patient=1, synthetic=True)
    assert _failed_as(checks.synthetic_count(settings=settings, synthetic_frames=short, synthetic_qc_log=_qc_log(n, n - 1)),
                      AssetCheckSeverity.WARN)
    # the log says every image passed, but one is missing from the partition
    assert _failed_as(checks.synthetic_count(settings=settings, synthetic_frames=short, synthetic_qc_log=_qc_log(n, n)),
                      AssetCheckSeverity.ERROR)
    assert _failed_as(checks.synthetic_count(settings=settings, synthetic_frames=short, synthetic_qc_log=_qc_log(n - 1, n - 1)),
                      AssetCheckSeverity.ERROR)


def test_synthetic_valid_fails_untagged_rows(settings):
    tagged = _frameset(per_patient=1, synthetic=True)
    assert _passed(checks.synthetic_valid(settings=settings, synthetic_frames=tagged))
    assert _passed(checks.synthetic_valid(settings=settings, synthetic_frames=_frameset(n_patients=0, synthetic=True)))
    untagged = _frameset(per_patient=1, synthetic=True)
    untagged.index.loc[1, "synthetic"] = False
    assert _failed_as(checks.synthetic_valid(settings=settings, synthetic_frames=untagged), AssetCheckSeverity.ERROR)


def test_qc_pass_rate_warns_below_the_profile_rate(settings):
    n = 20
    good = int(np.ceil(PROFILE.min_qc_pass_rate * n))
    assert _passed(checks.qc_pass_rate(settings=settings, synthetic_qc_log=_qc_log(n, good)))
    assert _failed_as(checks.qc_pass_rate(settings=settings, synthetic_qc_log=_qc_log(n, good - 1)), AssetCheckSeverity.WARN)


def test_memorization_warns_about_near_copies_and_unmeasured_images():
    assert _passed(checks.memorization(synthetic_qc_log=_qc_log(10, 8, rms=4 * MEMORIZATION_RMS)))
    assert _passed(checks.memorization(synthetic_qc_log=_qc_log(10, 0)))  # nothing kept, nothing to copy
    near = _qc_log(10, 8, rms=4 * MEMORIZATION_RMS)
    near.loc[3, "nearest_real_rms"] = MEMORIZATION_RMS / 2
    assert _failed_as(checks.memorization(synthetic_qc_log=near), AssetCheckSeverity.WARN)
    unmeasured = _qc_log(10, 8, rms=4 * MEMORIZATION_RMS)
    unmeasured.loc[2, "nearest_real_rms"] = np.nan
    assert _failed_as(checks.memorization(synthetic_qc_log=unmeasured), AssetCheckSeverity.WARN)


def test_masks_from_training_only_fails_a_mask_from_a_validation_patient(settings):
    splits = _splits()
    salt = privacy_salt(settings.data_lake)
    frames = _frameset(n_patients=3, per_patient=1, synthetic=True)
    frames.index["source_hash"] = [patient_hash(p, salt) for p in _ids(splits, "train")[:3]]
    assert _passed(checks.masks_from_training_only(settings=settings, synthetic_frames=frames, patient_splits=splits))
    frames.index.loc[1, "source_hash"] = patient_hash(_ids(splits, "val")[0], salt)
    assert _failed_as(checks.masks_from_training_only(settings=settings, synthetic_frames=frames, patient_splits=splits),
                      AssetCheckSeverity.ERROR)
    # a hash made with another salt is not a training patient either
    frames.index.loc[1, "source_hash"] = patient_hash(_ids(splits, "train")[0], "another salt")
    assert not _passed(checks.masks_from_training_only(settings=settings, synthetic_frames=frames, patient_splits=splits))


# --------------------------------------------------------------------------- classifiers


def test_no_evaluation_patient_in_training_fails_a_prediction_on_a_validation_patient():
    splits = _splits()
    predictions = _predictions(splits)
    assert _passed(checks.no_evaluation_patient_in_training(classifier_predictions=predictions, patient_splits=splits))
    leaked = predictions.copy()
    leaked.loc[0, "patient_id"] = _ids(splits, "val")[0]
    assert _failed_as(checks.no_evaluation_patient_in_training(classifier_predictions=leaked, patient_splits=splits),
                      AssetCheckSeverity.ERROR)


@pytest.mark.parametrize("skipped", [(), ("synth_only", "real_plus_synth_1x")], ids=["no skipped rows", "skipped rows"])
def test_classifiers_beat_chance_passes_above_the_bound_and_warns_at_chance(skipped):
    bound = chance_auroc_bound(10, 30)
    assert _passed(checks.classifiers_beat_chance(classifier_runs=_runs(val_auroc=(bound + 0.01, 0.95), skipped=skipped)))
    # above 0.5, as any tuned balanced accuracy would be, but within what a random scorer reaches
    result = checks.classifiers_beat_chance(classifier_runs=_runs(val_auroc=(0.95, bound - 0.01), skipped=skipped))
    assert _failed_as(result, AssetCheckSeverity.WARN)
    assert [p.split(":")[0] for p in result.metadata["runs_at_or_below_chance"].data] == ["real seed 1"]
    assert list(result.metadata["skipped_strategies"].data) == sorted(skipped)


def test_classifiers_beat_chance_fails_a_classifier_with_random_scores():
    rng = np.random.default_rng(0)
    labels = (np.arange(120) < 30).astype(int)
    random_scores = rng.random(len(labels))
    auroc = roc_auc_score(labels, random_scores)
    runs = _runs(val_auroc=(auroc,), n_val=len(labels), n_val_hf=int(labels.sum()))
    assert _failed_as(checks.classifiers_beat_chance(classifier_runs=runs), AssetCheckSeverity.WARN)
    assert runs["val_balanced_accuracy"].iloc[0] > 0.5  # what the old check looked at would have passed it


def test_a_random_scorer_beats_the_chance_bound_about_five_percent_of_the_time():
    rng = np.random.default_rng(1)
    n_pos, n_neg, trials = 25, 75, 4000
    # AUROC as the Mann-Whitney statistic, for 4000 random scorers at once (the first n_pos are HF)
    ranks = rankdata(rng.random((trials, n_pos + n_neg)), axis=1)
    aurocs = (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    runs = pd.DataFrame({"strategy": "random", "seed": np.arange(trials), "n_val": n_pos + n_neg, "n_val_hf": n_pos, "val_auroc": aurocs})
    false_passes = 1 - len(runs_not_beating_chance(runs)) / trials
    assert 0.035 < false_passes < 0.065  # one-sided 5 %; binomial spread over 4000 trials ~0.35 %


def test_classifiers_beat_chance_fails_without_an_auroc_or_without_any_run():
    assert not _passed(checks.classifiers_beat_chance(classifier_runs=_runs().drop(columns="val_auroc")))
    assert not _passed(checks.classifiers_beat_chance(classifier_runs=_runs(val_auroc=(np.nan, 0.95))))  # one-class validation
    only_skipped = _runs(val_auroc=(), skipped=("synth_only",))
    assert not _passed(checks.classifiers_beat_chance(classifier_runs=only_skipped))


@pytest.fixture(scope="module")
def fairness() -> pd.DataFrame:
    return fairness_metrics(_predictions(_splits()), bootstrap_n=20, seed=0)


@pytest.mark.parametrize("skipped", [(), ("synth_only",)], ids=["no skipped rows", "skipped rows"])
def test_report_rows_present_fails_a_missing_table2_row_or_an_empty_report(fairness, skipped):
    runs = _runs(skipped=skipped)
    assert _passed(checks.report_rows_present(fairness_report=fairness, classifier_runs=runs))
    ba = fairness["metric"] == "balanced_accuracy"
    one_row = ba & (fairness["evaluation_set"] == "heldout") & (fairness["group"] == "Obese")
    assert one_row.sum() == 1
    assert _failed_as(checks.report_rows_present(fairness_report=fairness[~one_row], classifier_runs=runs), AssetCheckSeverity.ERROR)
    assert not _passed(checks.report_rows_present(fairness_report=fairness[~ba], classifier_runs=runs))


# --------------------------------------------------------------------------- leakage: what each model trained on


GENERATOR_CHECKS = {
    "controlnet": checks.controlnet_no_test_patient_in_training,
    "attribute_predictors": checks.attribute_predictors_no_test_patient_in_training,
}


def _record(settings, folder: str, table: pd.DataFrame) -> None:
    write_training_patients(settings.models_dir() / folder, table)


def _leak_check(name: str, settings, splits):
    if name == "diffusion_backbone":
        return checks.backbone_no_test_patient_in_training(settings=settings, diffusion_backbone={"trained_here": True},
                                                           patient_splits=splits)
    return GENERATOR_CHECKS[name](settings=settings, patient_splits=splits)


@pytest.mark.parametrize("model", ["diffusion_backbone", "controlnet", "attribute_predictors"])
@pytest.mark.parametrize("leaked_split", ["test", "heldout"])
def test_generator_models_fail_when_they_trained_on_a_test_or_heldout_patient(settings, model, leaked_split):
    splits = _splits()
    train, val = _ids(splits, "train"), _ids(splits, "val")
    _record(settings, model, patient_roles(model, model, train, val))
    assert _passed(_leak_check(model, settings, splits))
    _record(settings, model, patient_roles(model, model, train + [_ids(splits, leaked_split)[0]], val))
    result = _leak_check(model, settings, splits)
    assert _failed_as(result, AssetCheckSeverity.ERROR)
    assert _ids(splits, leaked_split)[0] in result.metadata["problems"].data[0]


@pytest.mark.parametrize("model", ["diffusion_backbone", "controlnet", "attribute_predictors"])
def test_generator_models_without_a_record_or_with_unknown_patients_fail(settings, model):
    splits = _splits()
    assert not _passed(_leak_check(model, settings, splits))  # nothing recorded: leakage unproven
    _record(settings, model, patient_roles(model, model, _ids(splits, "train") + ["not-in-the-cohort"]))
    assert not _passed(_leak_check(model, settings, splits))
    _record(settings, model, patient_roles(model, "another run", _ids(splits, "train")))
    assert not _passed(_leak_check(model, settings, splits))  # a record, but not of this model's run


def test_a_backbone_trained_elsewhere_needs_no_record(settings):
    result = checks.backbone_no_test_patient_in_training(settings=settings, diffusion_backbone={"trained_here": False},
                                                         patient_splits=_splits())
    assert _passed(result)


@pytest.mark.parametrize("skipped", [(), ("synth_only", "real_plus_synth_2x")], ids=["no skipped rows", "skipped rows"])
def test_classifier_runs_fail_when_a_run_validated_on_a_test_patient_or_left_no_record(settings, skipped):
    splits = _splits()
    runs = _runs(skipped=skipped)
    train, val = _ids(splits, "train"), _ids(splits, "val")

    def record(*tables):
        _record(settings, CLASSIFIER_FOLDER, pd.concat(tables, ignore_index=True))

    def check():
        return checks.classifiers_no_test_patient_in_training(settings=settings, classifier_runs=runs, patient_splits=splits)

    assert not _passed(check())  # nothing recorded
    seed0 = patient_roles("classifier", classifier_run_name("real", 0), train, val)
    seed1 = patient_roles("classifier", classifier_run_name("real", 1), train, val)
    record(seed0, seed1)
    assert _passed(check())
    record(seed0)
    assert _failed_as(check(), AssetCheckSeverity.ERROR)  # seed 1 trained but is not on record
    record(seed0, patient_roles("classifier", classifier_run_name("real", 1), train, val + [_ids(splits, "test")[0]]))
    assert _failed_as(check(), AssetCheckSeverity.ERROR)
