import numpy as np
import pandas as pd

from cardio_assets.cohort.splits import split_patients


def _cohort(n=300, seed=0):
    rng = np.random.default_rng(seed)
    cells = rng.choice(["male-ge70-obese-hf", "female-lt60-normal-healthy", "male-60to70-overweight-healthy"], size=n)
    cohort = pd.DataFrame({"patient_id": [f"p{i:04d}" for i in range(n)], "cell": cells, "subset": "study"})
    cohort.loc[cohort.index[:2], "cell"] = "female-lt60-normal-hf"  # a rare cell of two
    cohort.loc[cohort.index[2], "cell"] = None  # a patient without a cell
    held = pd.DataFrame({"patient_id": ["h1", "h2"], "cell": ["male-ge70-obese-hf"] * 2, "subset": "heldout"})
    return pd.concat([cohort, held], ignore_index=True)


def test_splits_are_by_patient_with_the_paper_fractions():
    cohort = _cohort()
    splits = split_patients(cohort, seed=3)
    assert splits["patient_id"].is_unique and set(splits["patient_id"]) == set(cohort["patient_id"])
    study = splits[splits["split"] != "heldout"]
    share = study["split"].value_counts(normalize=True)
    assert abs(share["test"] - 0.2) < 0.03
    assert abs(share["val"] - 0.16) < 0.03
    assert set(splits.loc[splits["patient_id"].isin(["h1", "h2"]), "split"]) == {"heldout"}


def test_splits_are_stratified_and_rare_cells_stay_in_training():
    splits = split_patients(_cohort(), seed=3)
    rare = splits[splits["cell"] == "female-lt60-normal-hf"]
    assert set(rare["split"]) == {"train"}
    for cell, group in splits[splits["split"] != "heldout"].groupby("cell"):
        if len(group) >= 20:
            assert abs((group["split"] == "test").mean() - 0.2) < 0.05, cell


def test_splits_are_deterministic_given_the_seed():
    cohort = _cohort()
    pd.testing.assert_frame_equal(split_patients(cohort, seed=7), split_patients(cohort, seed=7))
    assert not split_patients(cohort, seed=7).equals(split_patients(cohort, seed=8))
