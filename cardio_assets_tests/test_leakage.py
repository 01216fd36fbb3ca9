"""Classifier runs record the patients they trained and validated on, and a leak planted
upstream (frames built from stale splits) reaches the blocking check through that record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardio_assets.classify.strategies import ImageSet, real_training_rows, run_patients, run_record, run_strategy, validation_rows
from cardio_assets.cohort.training_patients import CLASSIFIER_FOLDER, read_training_patients, write_training_patients
from cardio_assets.defs import checks
from cardio_assets.defs.check_rules import chance_auroc_bound
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets_tests.test_classify import CONFIG, _cohort

RUN_CONFIG = CONFIG.with_(epochs=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _quiet(_msg: str) -> None:
    pass


def _splits_of(real: ImageSet) -> pd.DataFrame:
    return real.index[["patient_id", "cell", "split"]].drop_duplicates("patient_id").reset_index(drop=True)


def test_a_run_records_exactly_the_patients_behind_its_training_and_validation_images(tmp_path):
    real = _cohort()
    predictions = run_strategy("real", real, None, RUN_CONFIG, seed=0, log=_quiet)
    recorded = run_patients(predictions)
    trained = set(real.index["patient_id"].iloc[real_training_rows(real.index, RUN_CONFIG, 0)])
    validated = set(real.index["patient_id"].iloc[validation_rows(real.index, RUN_CONFIG, 0)])
    assert set(recorded.loc[recorded["role"] == "train", "patient_id"]) == trained
    assert set(recorded.loc[recorded["role"] == "val", "patient_id"]) == validated
    assert set(recorded["run"]) == {"real seed 0"} and set(recorded["model"]) == {"classifier"}
    # the runs table keeps its one row per run small: the lists live in the record only
    assert not {"train_patients", "val_patients"} & set(run_record(predictions))
    write_training_patients(tmp_path, recorded)
    pd.testing.assert_frame_equal(read_training_patients(tmp_path), recorded)


def test_frames_built_from_stale_splits_make_the_leakage_check_fail(tmp_path):
    """The frames say a patient is a training patient; the current splits say test. The
    classifier trains on it, records it, and the blocking check stops the run."""
    real = _cohort()
    splits = _splits_of(real)
    trained = real.index["patient_id"].iloc[real_training_rows(real.index, RUN_CONFIG, 0)]
    leaked = trained.iloc[0]
    stale_splits = splits.assign(split=np.where(splits["patient_id"] == leaked, "test", splits["split"]))
    predictions = run_strategy("real", real, None, RUN_CONFIG, seed=0, log=_quiet)
    settings = PipelineSettings(profile="smoke", data_lake=str(tmp_path))
    write_training_patients(settings.models_dir() / CLASSIFIER_FOLDER, run_patients(predictions))
    runs = pd.DataFrame([run_record(predictions)])

    clean = checks.classifiers_no_test_patient_in_training(settings=settings, classifier_runs=runs, patient_splits=splits)
    assert clean.passed
    leak = checks.classifiers_no_test_patient_in_training(settings=settings, classifier_runs=runs, patient_splits=stale_splits)
    assert not leak.passed and leaked in leak.metadata["problems"].data[0]


def test_a_classifier_on_an_easy_task_beats_chance_and_one_on_shuffled_labels_does_not():
    real = _cohort(n_val=40)
    # labels shuffled across patients: the images no longer say anything about the diagnosis
    patients = real.index.drop_duplicates("patient_id")
    shuffled = dict(zip(patients["patient_id"], np.random.default_rng(0).permutation(patients["diagnosis"].to_numpy())))
    noise = ImageSet(real.images, real.index.assign(diagnosis=real.index["patient_id"].map(shuffled)))
    runs = pd.DataFrame([run_record(run_strategy("real", data, None, RUN_CONFIG, seed=0, log=_quiet)) for data in (real, noise)])
    assert runs["val_auroc"].iloc[0] > chance_auroc_bound(runs["n_val_hf"].iloc[0], runs["n_val"].iloc[0] - runs["n_val_hf"].iloc[0])
    assert checks.classifiers_beat_chance(classifier_runs=runs.iloc[[0]]).passed
    assert not checks.classifiers_beat_chance(classifier_runs=runs.iloc[[1]]).passed
