"""Patient-level splits: 20% test, 20% of the rest validation, stratified by cell.

Stratification is done by hand per cell (sklearn's stratified splitter refuses strata
of one patient, and our rare cells hold one or two): within each cell the patients
are shuffled with the run's seed and the first round(20%) go to test. A cell of one
or two patients therefore keeps them all in training, which is what the generator
needs most. Patients with no cell (a missing attribute) are split as one more stratum.
The phantom's balanced held-out cohort is never split: it is all "heldout".

With an out-of-distribution policy (:mod:`cardio_assets.cohort.ood`), the patients of the
held-out vendors or sites are set apart first, as "ood_test" (study) and "ood_heldout"
(balanced held-out cohort); the rest is split as above.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardio_assets.cohort.ood import OOD_SPLITS, OodPolicy

SPLITS = ("train", "val", "test", "heldout", "ood_test", "ood_heldout")
# what the classifiers are evaluated on: never trained, validated or selected on
EVALUATION_SETS = ("test", "heldout", "ood_test", "ood_heldout")


def split_patients(cohort: pd.DataFrame, seed: int, test_fraction: float = 0.2, val_fraction: float = 0.2,
                   ood: OodPolicy | None = None) -> pd.DataFrame:
    """One row per patient: patient_id, cell, split."""
    rng = np.random.default_rng(seed)
    out = []
    if ood is not None:
        held = ood.held_out(cohort)
        out += [(pid, cell, OOD_SPLITS[subset]) for pid, cell, subset
                in zip(cohort.loc[held, "patient_id"], cohort.loc[held, "cell"], cohort.loc[held, "subset"])]
        cohort = cohort[~held]
    heldout = cohort[cohort["subset"] == "heldout"]
    out += [(pid, cell, "heldout") for pid, cell in zip(heldout["patient_id"], heldout["cell"])]
    study = cohort[cohort["subset"] != "heldout"].copy()
    study["stratum"] = study["cell"].fillna("<no cell>")
    for stratum in sorted(study["stratum"].unique()):
        members = study[study["stratum"] == stratum].sort_values("patient_id")
        ids = members["patient_id"].to_numpy()
        cells = dict(zip(members["patient_id"], members["cell"]))
        order = rng.permutation(len(ids))
        ids = ids[order]
        n_test = int(round(test_fraction * len(ids)))
        n_val = int(round(val_fraction * (len(ids) - n_test)))
        for i, pid in enumerate(ids):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            out.append((pid, cells[pid], split))
    frame = pd.DataFrame(out, columns=["patient_id", "cell", "split"])
    return frame.sort_values("patient_id", kind="stable").reset_index(drop=True)
