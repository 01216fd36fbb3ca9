"""The groups the fairness tables are cut by: their names, their order, and Table 2's rows.

Groups: Overall; sex; BMI band; age band (the rows of the paper's Table 2); intersections
sex x age and sex x BMI; the 18 demographic cells (sex x age x BMI); the 36 cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardio_assets.cohort.cells import (
    AGE_BAND_LABELS,
    AGE_BANDS,
    BMI_BAND_LABELS,
    BMI_BANDS,
    CELL_KEYS,
    SEX_LABELS,
    SEXES,
)

# the group name of a row that holds a whole attribute (a gap, the worst group)
ALL_GROUPS = "(all groups)"

ATTRIBUTE_TITLES = {
    "overall": "Overall",
    "sex": "Sex",
    "bmi_band": "BMI",
    "age_band": "Age",
    "sex_x_age": "Sex x age",
    "sex_x_bmi": "Sex x BMI",
    "demographic_cell": "Sex x age x BMI",
    "cell": "Cell (36)",
}


def _group_order() -> dict[str, list[str]]:
    sex = [SEX_LABELS[s] for s in SEXES]
    age = [AGE_BAND_LABELS[a] for a in AGE_BANDS]
    bmi = [BMI_BAND_LABELS[b] for b in BMI_BANDS]
    return {
        "overall": ["Overall"],
        "sex": sex,
        "bmi_band": bmi,
        "age_band": age,
        "sex_x_age": [f"{s}, {a}" for s in sex for a in age],
        "sex_x_bmi": [f"{s}, {b}" for s in sex for b in bmi],
        "demographic_cell": [f"{s}, {a}, {b}" for s in sex for a in age for b in bmi],
        "cell": list(CELL_KEYS),
    }


GROUP_ORDER = _group_order()
ATTRIBUTES = tuple(GROUP_ORDER)

# Table 2 of the paper: (attribute, group) rows
TABLE2_ROWS: tuple[tuple[str, str], ...] = (
    ("overall", "Overall"),
    ("sex", "Female"), ("sex", "Male"),
    ("bmi_band", "Normal BMI"), ("bmi_band", "Overweight"), ("bmi_band", "Obese"),
    ("age_band", "Age < 60"), ("age_band", "Age 60-70"), ("age_band", "Age > 70"),
)


def group_labels(frame: pd.DataFrame, attribute: str) -> np.ndarray:
    """The group of every row for one attribute, as the report names it."""
    sex = frame["sex"].map(SEX_LABELS)
    age = frame["age_band"].map(AGE_BAND_LABELS)
    bmi = frame["bmi_band"].map(BMI_BAND_LABELS)
    if attribute == "overall":
        out = pd.Series("Overall", index=frame.index)
    elif attribute == "sex":
        out = sex
    elif attribute == "bmi_band":
        out = bmi
    elif attribute == "age_band":
        out = age
    elif attribute == "sex_x_age":
        out = sex + ", " + age
    elif attribute == "sex_x_bmi":
        out = sex + ", " + bmi
    elif attribute == "demographic_cell":
        out = sex + ", " + age + ", " + bmi
    elif attribute == "cell":
        out = frame["cell"].astype(str)
    else:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {ATTRIBUTES}")
    return out.fillna("(missing)").to_numpy(dtype=object)


def strategy_sort_key(name: str):
    """Strategies in the order `classify.strategies` defines them, unknown names last."""
    # imported here: the classifier stack (torch) is not needed to read a fairness table
    from cardio_assets.classify.strategies import STRATEGY_NAMES

    return (STRATEGY_NAMES.index(name) if name in STRATEGY_NAMES else len(STRATEGY_NAMES), name)
