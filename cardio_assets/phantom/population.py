"""Who is in the phantom cohort: sex, age, BMI and diagnosis of every patient.

The study cohort is biased the way the UK Biobank imaging cohort is: middle-aged to old,
BMI around 26.5, and heart failure (HF) far more common among the old, the obese and men
than among the young, the lean and women. That bias is what leaves some subgroup cells
nearly empty, which is the problem the pipeline exists to fix, so it is modelled on
purpose rather than by accident.

The held-out cohort is the opposite: exactly ``per_cell`` patients in each of the 36
cells, so fairness can be measured against ground truth on a balanced set. It is never
used for training.

Only attributes are sampled here; what they do to the images lives in
:mod:`cardio_assets.phantom.anatomy`. Every band decision goes through
:mod:`cardio_assets.cohort.cells`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardio_assets.cohort.cells import ALL_CELLS, BMI_BANDS, Cell
from cardio_assets.phantom.scanners import draw_sites_and_vendors, heldout_site, heldout_vendor

STUDY_EID_BASE = 1_000_000  # study eids are 1000001, 1000002, ...
HELDOUT_EID_BASE = 9_000_000  # held-out eids are 9000001, ...

# UK Biobank imaging visit: ages 45-82, mean about 64. A scaled beta keeps the bounds hard.
AGE_MIN, AGE_MAX = 45.0, 82.0
AGE_BETA = (2.6, 2.45)  # mean 45 + 37 * 2.6 / 5.05 = 64.0, sd about 7.5

# BMI: lognormal with mean 26.5 and sd 4.4, clipped to a plausible adult range.
BMI_MEAN, BMI_SD = 26.5, 4.4
BMI_CLIP = (16.0, 50.0)

# Held-out draws: age within 45-82 and BMI within these per-band ranges (half-open at the
# top except the last band, which is closed; see `_grid_uniform`).
HELDOUT_AGE_RANGES = {"lt60": (45.0, 60.0), "60to70": (60.0, 70.0), "ge70": (70.0, 82.0)}
HELDOUT_BMI_RANGES = {"normal": (18.5, 25.0), "overweight": (25.0, 30.0), "obese": (30.0, 40.0)}

HF_CODE = "I500"  # ICD-10 I50.0 congestive heart failure; HF is any code starting "I50"
# A few healthy patients carry a non-HF cardiometabolic code, as real records do, so a
# reader must test the I50 prefix rather than "any code present".
OTHER_CODES = ("I10", "E119", "I48")
OTHER_CODE_SHARE = 0.06


@dataclass(frozen=True)
class HFRisk:
    """Logistic HF risk: logit p = intercept + age + BMI + sex terms.

    Slopes are set to reproduce the UK Biobank ratios in the paper's Table 2: women have
    about a third of men's prevalence (0.56% vs 1.56%), under-60s a fifth of over-70s
    (0.37% vs 1.93%) and normal-BMI a quarter of obese (0.60% vs 2.43%). The intercept
    is not a constant: it is solved per cohort so the expected prevalence hits the target.
    """

    per_decade_age: float = 0.90
    per_bmi_unit: float = 0.14
    male: float = 1.05
    age_center: float = 64.0
    bmi_center: float = 26.5

    def linear_term(self, male: np.ndarray, age: np.ndarray, bmi: np.ndarray) -> np.ndarray:
        """Logit without the intercept."""
        return (
            self.per_decade_age * (np.asarray(age, float) - self.age_center) / 10.0
            + self.per_bmi_unit * (np.asarray(bmi, float) - self.bmi_center)
            + self.male * np.asarray(male, float)
        )


HF_RISK = HFRisk()


@dataclass(frozen=True)
class PatientAttributes:
    """One patient's demographics and diagnosis, as the metadata table will state them.

    ``age`` and ``bmi`` are already rounded to one decimal, the precision written to
    metadata.csv, so the cell computed here is the cell any reader will compute.
    """

    eid: str
    subset: str  # "study" | "heldout"
    sex: str  # "female" | "male"
    age: float
    bmi: float
    hf: bool
    icd10: str  # "I500" for HF, "" or a non-HF code for healthy
    site: str = ""  # where the patient was scanned (`phantom.scanners.SITES`)
    vendor: str = ""  # on which scanner (`phantom.scanners.SCANNERS`)

    @property
    def diagnosis(self) -> str:
        return "hf" if self.hf else "healthy"

    @property
    def cell(self) -> Cell:
        return Cell.of(self.sex, self.age, self.bmi, self.diagnosis)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def solve_intercept(linear_term: np.ndarray, prevalence: float, tol: float = 1e-10) -> float:
    """Intercept b0 with mean(sigmoid(b0 + linear_term)) == prevalence, by bisection.

    The mean is monotone in b0, so bisection on a wide bracket always converges.
    """
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"hf_prevalence must be in (0, 1), got {prevalence}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(np.mean(_sigmoid(mid + linear_term))) < prevalence:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return 0.5 * (lo + hi)


def _icd_codes(hf: np.ndarray, rng: np.random.Generator) -> list[str]:
    other = rng.random(hf.size) < OTHER_CODE_SHARE
    which = rng.integers(0, len(OTHER_CODES), hf.size)
    return [HF_CODE if h else (OTHER_CODES[w] if o else "") for h, o, w in zip(hf, other, which)]


def sample_demographics(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(male bool, age, BMI) for ``n`` UK-Biobank-like people, rounded to one decimal."""
    male = rng.random(n) < 0.5
    age = AGE_MIN + (AGE_MAX - AGE_MIN) * rng.beta(*AGE_BETA, size=n)
    sigma = math.sqrt(math.log1p((BMI_SD / BMI_MEAN) ** 2))
    mu = math.log(BMI_MEAN) - 0.5 * sigma**2
    bmi = np.clip(rng.lognormal(mu, sigma, size=n), *BMI_CLIP)
    return male, np.round(age, 1), np.round(bmi, 1)


def hf_probability(male: np.ndarray, age: np.ndarray, bmi: np.ndarray, prevalence: float,
                   risk: HFRisk = HF_RISK) -> np.ndarray:
    """Per-person HF probability, intercept solved so its mean over these people is ``prevalence``."""
    linear = risk.linear_term(male, age, bmi)
    return _sigmoid(solve_intercept(linear, prevalence) + linear)


def sample_study_attributes(n_patients: int, hf_prevalence: float, seed: int) -> list[PatientAttributes]:
    """The biased study cohort. Exact HF counts are random but fixed by ``seed``."""
    rng = np.random.default_rng([seed, 0, 0])
    male, age, bmi = sample_demographics(n_patients, rng)
    p = hf_probability(male, age, bmi, hf_prevalence)
    hf = rng.random(n_patients) < p
    codes = _icd_codes(hf, rng)
    # a stream of its own: sites and vendors leave every draw above as it was
    sites, vendors = draw_sites_and_vendors(age, bmi, np.random.default_rng([seed, 0, 1]))
    return [
        PatientAttributes(
            eid=str(STUDY_EID_BASE + i + 1), subset="study",
            sex="male" if male[i] else "female", age=float(age[i]), bmi=float(bmi[i]),
            hf=bool(hf[i]), icd10=codes[i], site=sites[i], vendor=vendors[i],
        )
        for i in range(n_patients)
    ]


def _grid_uniform(lo: float, hi: float, n: int, closed: bool, rng: np.random.Generator) -> np.ndarray:
    """Uniform draws on the 0.1 grid inside [lo, hi) (or [lo, hi] when ``closed``).

    Drawing on the grid, instead of rounding a continuous draw, means 59.97 can never
    round up to 60.0 and land in the next band.
    """
    k_lo, k_hi = int(round(lo * 10)), int(round(hi * 10)) + (1 if closed else 0)
    return rng.integers(k_lo, k_hi, size=n) / 10.0


def sample_heldout_attributes(per_cell: int, seed: int) -> list[PatientAttributes]:
    """``per_cell`` patients in each of the 36 cells, in ``ALL_CELLS`` order, every vendor
    equally often in each cell (`scanners.heldout_vendor`)."""
    rng = np.random.default_rng([seed, 1, 0])
    site_rng = np.random.default_rng([seed, 1, 1])
    out: list[PatientAttributes] = []
    last_age_band, last_bmi_band = "ge70", BMI_BANDS[-1]
    for cell_index, cell in enumerate(ALL_CELLS):
        ages = _grid_uniform(*HELDOUT_AGE_RANGES[cell.age_band], per_cell,
                             cell.age_band == last_age_band, rng)
        bmis = _grid_uniform(*HELDOUT_BMI_RANGES[cell.bmi_band], per_cell,
                             cell.bmi_band == last_bmi_band, rng)
        hf = np.full(per_cell, cell.diagnosis == "hf")
        codes = _icd_codes(hf, rng)
        for i, (age, bmi, code) in enumerate(zip(ages, bmis, codes)):
            vendor = heldout_vendor(cell_index, i)
            attrs = PatientAttributes(
                eid=str(HELDOUT_EID_BASE + len(out) + 1), subset="heldout", sex=cell.sex,
                age=float(age), bmi=float(bmi), hf=bool(hf[0]), icd10=code,
                site=heldout_site(vendor, site_rng), vendor=vendor,
            )
            if attrs.cell != cell:  # guards the band ranges above against cells.py
                raise AssertionError(f"held-out draw {attrs} fell outside {cell.key}")
            out.append(attrs)
    return out
