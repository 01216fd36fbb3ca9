"""The 36 subgroup cells: sex x age band x BMI band x diagnosis.

Band edges are defined once, here, and every other module calls these functions.
Bands are half-open on the right, so an edge value belongs to the *upper* band:

- age:  [0, 60) -> "lt60",  [60, 70) -> "60to70",  [70, inf) -> "ge70"
- BMI:  [0, 25) -> "normal" (underweight included), [25, 30) -> "overweight",
        [30, inf) -> "obese"

This matches WHO BMI classes (obese is BMI >= 30) and the paper's decade prompts
(a 70-year-old is "in 70s", so belongs with the over-70s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

SEXES: tuple[str, ...] = ("female", "male")
AGE_BANDS: tuple[str, ...] = ("lt60", "60to70", "ge70")
BMI_BANDS: tuple[str, ...] = ("normal", "overweight", "obese")
DIAGNOSES: tuple[str, ...] = ("healthy", "hf")

AGE_EDGES: tuple[float, float] = (60.0, 70.0)
BMI_EDGES: tuple[float, float] = (25.0, 30.0)

AGE_BAND_LABELS = {"lt60": "Age < 60", "60to70": "Age 60-70", "ge70": "Age > 70"}
BMI_BAND_LABELS = {"normal": "Normal BMI", "overweight": "Overweight", "obese": "Obese"}
SEX_LABELS = {"female": "Female", "male": "Male"}
DIAGNOSIS_LABELS = {"healthy": "healthy", "hf": "heart failure"}

# Plausible bounds used by the phantom's balanced cohort and by input validation.
AGE_RANGE: tuple[float, float] = (18.0, 100.0)
BMI_RANGE: tuple[float, float] = (12.0, 70.0)


def _band(value: float, edges: tuple[float, float], names: tuple[str, ...]) -> str:
    if value is None or not math.isfinite(value):
        raise ValueError(f"cannot band a missing or non-finite value: {value!r}")
    if value < edges[0]:
        return names[0]
    if value < edges[1]:
        return names[1]
    return names[2]


def age_band(age: float) -> str:
    """Age band of an age in years: 59.9 -> lt60, 60 -> 60to70, 70 -> ge70."""
    return _band(age, AGE_EDGES, AGE_BANDS)


def bmi_band(bmi: float) -> str:
    """BMI band: 24.9 -> normal, 25 -> overweight, 30 -> obese."""
    return _band(bmi, BMI_EDGES, BMI_BANDS)


@dataclass(frozen=True, order=True)
class Cell:
    """One subgroup cell; its `key` is the Dagster partition key."""

    sex: str
    age_band: str
    bmi_band: str
    diagnosis: str

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.sex, SEXES, "sex"),
            (self.age_band, AGE_BANDS, "age band"),
            (self.bmi_band, BMI_BANDS, "BMI band"),
            (self.diagnosis, DIAGNOSES, "diagnosis"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")

    @property
    def key(self) -> str:
        return f"{self.sex}-{self.age_band}-{self.bmi_band}-{self.diagnosis}"

    @property
    def demographic_key(self) -> str:
        return f"{self.sex}-{self.age_band}-{self.bmi_band}"

    @classmethod
    def parse(cls, key: str) -> "Cell":
        parts = key.split("-")
        if len(parts) != 4:
            raise ValueError(f"not a cell key: {key!r} (expected sex-age-bmi-diagnosis)")
        return cls(*parts)

    @classmethod
    def of(cls, sex: str, age: float, bmi: float, diagnosis: str) -> "Cell":
        return cls(sex, age_band(age), bmi_band(bmi), diagnosis)


ALL_CELLS: tuple[Cell, ...] = tuple(
    Cell(s, a, b, d) for s, a, b, d in product(SEXES, AGE_BANDS, BMI_BANDS, DIAGNOSES)
)
CELL_KEYS: tuple[str, ...] = tuple(c.key for c in ALL_CELLS)


def cell_key_or_none(sex, age, bmi, diagnosis) -> str | None:
    """The cell key of a patient, or None when an attribute is missing (e.g. ACDC has no sex)."""
    if sex not in SEXES or diagnosis not in DIAGNOSES:
        return None
    try:
        return Cell.of(sex, float(age), float(bmi), diagnosis).key
    except (TypeError, ValueError):
        return None


def decade(age: float) -> int:
    return int(math.floor(age / 10.0) * 10)


def prompt(sex: str, age: float, bmi: float, diagnosis: str) -> str:
    """The paper's text prompt, e.g. ``Male, age in 70s, normal BMI, heart failure``."""
    bmi_word = {"normal": "normal", "overweight": "overweight", "obese": "obese"}[bmi_band(bmi)]
    return f"{SEX_LABELS[sex]}, age in {decade(age)}s, {bmi_word} BMI, {DIAGNOSIS_LABELS[diagnosis]}"


def label_prompt(diagnosis: str) -> str:
    """The prompt of the conditioning ablation's generator: the diagnosis alone, e.g. ``heart failure``."""
    return DIAGNOSIS_LABELS[diagnosis]
