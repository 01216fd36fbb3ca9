"""One phantom patient's anatomy: geometry and contrast parameters from its attributes.

:func:`sample_anatomy` turns a patient's attributes (sex, age, BMI, HF) into the
parameters of its images (:class:`PatientParams`), drawing the individual variation from
``default_rng([seed, eid, 1])``. This is where attributes shape images, through
overlapping distributions as in life. What the parameters draw is in
:mod:`cardio_assets.phantom.geometry` (shapes and labels) and
:mod:`cardio_assets.phantom.render` (the cine).

The one knob on how hard HF is to see is ``difficulty`` (see :func:`separation`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.population import PatientAttributes
from cardio_assets.phantom.scanners import SCANNERS, acquisition

# ---------------------------------------------------------------------------------------
# Attribute effects, in one place. Baselines are for a 64-year-old woman.
# ---------------------------------------------------------------------------------------
LV_RADIUS_MM = 23.5  # ED endocardial equivalent radius at the base (LVEDD ~47 mm)
MYO_THICKNESS_MM = 7.0  # ED wall thickness at the base
MALE_RADIUS_FACTOR = 1.10  # men: ~10% larger radius
MALE_WALL_FACTOR = 1.08
AGE_WALL_PER_YEAR = 0.006  # +0.6% wall per year over 64 (45 y: -11%, 82 y: +11%)
AGE_RADIUS_PER_YEAR = -0.002  # slightly smaller cavity with age
HEALTHY_EF = (0.62, 0.04, 0.53, 0.72)  # mean, sd, min, max
HEALTHY_RV_EF = (0.55, 0.05, 0.42, 0.68)
HF_PRESERVED_SHARE = 0.30  # HF patients with mildly reduced / preserved EF (HFmrEF/HFpEF)
# Disease targets and shifts, expressed fully at difficulty 0:
HFREF_EF = (0.26, 0.07, 0.10, 0.40)  # target EF: mean, sd, min, max
HFREF_DILATION = (0.20, 0.07)  # LV radius x (1 + dilation)
HFREF_THINNING = (0.18, 0.06)  # wall x (1 - thinning)
HFREF_RV_EF_DROP = (0.12, 0.05)
HFPEF_EF = (0.41, 0.58)  # uniform target EF
HFPEF_DILATION = (0.03, 0.04)
HFPEF_THINNING = (-0.15, 0.06)  # negative: concentric hypertrophy
HFPEF_RV_EF_DROP = (0.04, 0.03)
# Fat (mm) as a function of BMI:
PERICARDIAL_FAT_MM = (1.0, 0.30, 0.7)  # intercept at BMI 18, slope per BMI unit, noise sd
SUBCUT_FAT_MM = (3.0, 1.25, 1.5)

# Tissue signal in reference units (blood ~220, the scale the noise sigma is given in):
TISSUE = {
    "blood": (220.0, 8.0), "myo": (70.0, 5.0), "fat": (200.0, 8.0), "muscle": (100.0, 6.0),
    "lung": (15.0, 4.0), "liver": (90.0, 7.0), "aorta": (190.0, 10.0),
}


def separation(difficulty: float) -> float:
    """Fraction of each HF patient's disease shift that is expressed: ``1 - difficulty**2``.

    ``difficulty`` moves exactly this, and nothing else: for an HF patient, EF, LV
    dilation (and the RV dilation that follows it), wall thinning (HFrEF) or thickening
    (HFpEF) and the RV EF drop are each
    ``healthy + separation * (disease target - healthy)``, where "healthy" is the value
    the same patient would have had without HF. Healthy patients, demographics,
    prevalence and the HFpEF share do not depend on it.

    - 0: full disease effect (HFrEF EF ~26%, LV radius +20%, wall -18%): HFrEF is
      separable from healthy; only HFmrEF/HFpEF overlaps.
    - 0.5 (default): 75% expressed (HFrEF EF ~35%).
    - 1: no effect; HF and healthy images have the same distribution given sex, age and
      BMI (only the HF-attribute correlation remains).

    The square keeps HFrEF EF mostly under 40% at the default while still reaching
    "indistinguishable" at 1.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    return 1.0 - difficulty**2


@dataclass(frozen=True)
class PatientParams:
    """Everything that decides one patient's images, besides the noise draw.

    Written to truth.csv column for column, so a result can be traced back to the
    geometry that caused it.
    """

    # attributes
    eid: str
    subset: str
    sex: str
    age: float
    bmi: float
    hf: bool
    icd10: str
    phenotype: str  # "healthy" | "hfref" | "hfpef"
    # heart
    ef_design: float  # LV EF by construction (area scaling), before voxelisation
    rv_ef: float
    lv_radius_mm: float  # ED endocardial equivalent radius at the base
    myo_thickness_mm: float  # ED wall thickness at the base
    rv_size: float  # RV radius relative to the LV epicardial radius
    rv_angle_deg: float  # direction LV -> RV centre (180 = image left)
    ellipticity: float
    rotation_deg: float
    center_u_mm: float
    center_v_mm: float
    drift_u_mm: float  # heart centre drift per slice toward the apex
    drift_v_mm: float
    papillary_angle_1_deg: float  # anterolateral papillary muscle, around the LV centre
    papillary_angle_2_deg: float  # posteromedial
    papillary_size: float  # papillary radius relative to the ED endocardial radius
    trabecula_depth_mm: float  # how far the trabeculae reach into the cavity (image only: labelled LV cavity)
    trabecula_count: int  # trabeculae around the endocardium
    trabecula_phase_deg: float
    texture_amplitude: float  # relative signal variation of the liver and chest muscle (smooth texture)
    es_frame_design: int
    heart_rate_bpm: float
    # surroundings
    fat_mm: float  # pericardial fat thickness (mean around the heart)
    fat_angle_deg: float  # where around the heart the fat is thickest
    subcut_fat_mm: float
    chest_muscle_mm: float
    chest_gap_mm: float  # heart-to-chest-wall gap beyond the fat
    diaphragm_mm: float  # diaphragm below the heart's inferior edge
    aorta_u_mm: float
    aorta_v_mm: float
    aorta_radius_mm: float
    # acquisition (`phantom.scanners`: the scanner decides these, not the patient)
    site: str
    vendor: str
    edge_width_voxels: float  # partial-volume width of tissue edges, in voxels
    spacing_mm: float
    slice_mm: float
    gain: float
    noise_sigma: float  # reference units (stored: x FILE_SCALE)
    bias_u: float
    bias_v: float
    bias_uv: float
    bias_uu: float
    bias_vv: float
    bias_z: float
    # tissue signal
    blood_signal: float
    myo_signal: float
    fat_signal: float
    muscle_signal: float
    lung_signal: float
    liver_signal: float
    aorta_signal: float

    def as_row(self) -> dict:
        return asdict(self)


def _clipped_normal(rng: np.random.Generator, spec: tuple[float, float, float, float]) -> float:
    mean, sd, lo, hi = spec
    return float(np.clip(rng.normal(mean, sd), lo, hi))



def sample_anatomy(attrs: PatientAttributes, config: PhantomConfig) -> PatientParams:
    """Geometry and contrast of one patient, drawn around what its attributes imply.

    Every attribute effect is a shift of a distribution with patient-level spread, so
    groups overlap: a large woman can have a bigger heart than a small man, an obese
    patient can have little pericardial fat.
    """
    # The draws below must stay in this order: any change alters every later parameter.
    rng = np.random.default_rng([config.seed, int(attrs.eid), 1])
    male = attrs.sex == "male"
    heart = _sample_heart(rng, attrs, separation(config.difficulty))

    T = config.n_frames
    es_frame = int(round(T * rng.uniform(0.34, 0.40)))
    es_frame = min(max(es_frame, 1), T - 1)

    fat_mm, subcut = _sample_fat(rng, attrs.bmi)
    signal = {name: float(rng.normal(mean, sd)) for name, (mean, sd) in TISSUE.items()}
    signal["lung"] = max(signal["lung"], 2.0)
    # the scanner's draws come from a stream of their own: the anatomy is the same on any scanner
    scan = acquisition(SCANNERS[attrs.vendor], signal,
                       np.random.default_rng([config.seed, int(attrs.eid), 3]))

    return PatientParams(
        eid=attrs.eid, subset=attrs.subset, sex=attrs.sex, age=attrs.age, bmi=attrs.bmi,
        hf=attrs.hf, icd10=attrs.icd10, **heart,
        rv_angle_deg=round(float(rng.normal(200.0, 8.0)), 2),
        ellipticity=round(float(rng.uniform(0.0, 0.12)), 4),
        rotation_deg=round(float(rng.uniform(0.0, 180.0)), 2),
        center_u_mm=round(float(rng.normal(3.0, 3.0)), 3),
        center_v_mm=round(float(rng.normal(6.0, 3.0)), 3),
        drift_u_mm=round(float(rng.normal(0.0, 0.8)), 3),
        drift_v_mm=round(float(rng.normal(0.0, 0.8)), 3),
        papillary_angle_1_deg=round(float(rng.normal(-40.0, 10.0)), 2),
        papillary_angle_2_deg=round(float(rng.normal(100.0, 10.0)), 2),
        papillary_size=round(float(rng.uniform(0.20, 0.27)), 4),
        es_frame_design=es_frame, heart_rate_bpm=round(float(rng.uniform(55.0, 85.0)), 1),
        fat_mm=round(fat_mm, 3), fat_angle_deg=round(float(rng.uniform(0.0, 360.0)), 2),
        subcut_fat_mm=round(subcut, 3),
        chest_muscle_mm=round(float(rng.uniform(9.0, 14.0)) + (2.0 if male else 0.0), 3),
        chest_gap_mm=round(float(rng.uniform(1.0, 5.0)), 3),
        diaphragm_mm=round(float(rng.uniform(0.0, 5.0)), 3),
        aorta_u_mm=round(float(rng.normal(18.0, 3.0)), 3),
        aorta_v_mm=round(float(rng.normal(8.0, 3.0)), 3),
        aorta_radius_mm=round(float(rng.uniform(9.0, 12.0)), 3),
        site=attrs.site, **scan, **_sample_texture(np.random.default_rng([config.seed, int(attrs.eid), 4])),
    )


def _sample_texture(rng: np.random.Generator) -> dict:
    """Trabeculation and organ texture, from a stream of their own (the anatomy above stays as it was)."""
    return {"trabecula_depth_mm": round(float(rng.uniform(0.8, 2.0)), 3),
            "trabecula_count": int(rng.integers(9, 15)),
            "trabecula_phase_deg": round(float(rng.uniform(0.0, 360.0)), 2),
            "texture_amplitude": round(float(rng.uniform(0.04, 0.09)), 4)}


def on_scanner(params: PatientParams, vendor: str, config: PhantomConfig) -> PatientParams:
    """The same patient scanned on another scanner: same anatomy, that scanner's acquisition."""
    reference = {tissue: getattr(params, f"{tissue}_signal") / SCANNERS[params.vendor].contrast_of(tissue)
                 for tissue in TISSUE}
    scan = acquisition(SCANNERS[vendor], reference, np.random.default_rng([config.seed, int(params.eid), 3]))
    return replace(params, **scan)


def _sample_heart(rng: np.random.Generator, attrs: PatientAttributes, sep: float) -> dict:
    """LV size, wall, EFs and RV size: the patient as if healthy, then its HF shift.

    Returns the matching :class:`PatientParams` fields (phenotype, ef_design, rv_ef,
    lv_radius_mm, myo_thickness_mm, rv_size).
    """
    male = attrs.sex == "male"
    # the patient as if healthy
    radius = (LV_RADIUS_MM * (MALE_RADIUS_FACTOR if male else 1.0)
              * (1.0 + AGE_RADIUS_PER_YEAR * (attrs.age - 64.0)) * math.exp(rng.normal(0, 0.06)))
    wall = (MYO_THICKNESS_MM * (MALE_WALL_FACTOR if male else 1.0)
            * (1.0 + AGE_WALL_PER_YEAR * (attrs.age - 64.0)) * math.exp(rng.normal(0, 0.08)))
    ef_h = _clipped_normal(rng, HEALTHY_EF)
    rv_ef_h = _clipped_normal(rng, HEALTHY_RV_EF)
    rv_size = float(rng.uniform(0.95, 1.10))

    # the disease, drawn for everyone (keeps the random stream aligned) and used for HF
    preserved = rng.random() < HF_PRESERVED_SHARE
    if preserved:
        ef_t = float(rng.uniform(*HFPEF_EF))
        dil = float(rng.normal(*HFPEF_DILATION))
        thin = float(rng.normal(*HFPEF_THINNING))
        rv_drop = float(rng.normal(*HFPEF_RV_EF_DROP))
    else:
        ef_t = _clipped_normal(rng, HFREF_EF)
        dil = max(0.03, float(rng.normal(*HFREF_DILATION)))
        thin = float(np.clip(rng.normal(*HFREF_THINNING), 0.0, 0.4))
        rv_drop = float(rng.normal(*HFREF_RV_EF_DROP))
    if attrs.hf:
        phenotype = "hfpef" if preserved else "hfref"
        ef = ef_h + sep * (ef_t - ef_h)
        radius *= 1.0 + sep * dil
        wall *= 1.0 - sep * thin
        rv_ef = float(np.clip(rv_ef_h - sep * max(rv_drop, 0.0), 0.15, 0.7))
        rv_size *= 1.0 + 0.5 * sep * max(dil, 0.0)
    else:
        phenotype, ef, rv_ef = "healthy", ef_h, rv_ef_h

    return {"phenotype": phenotype, "ef_design": round(float(ef), 4), "rv_ef": round(rv_ef, 4),
            "lv_radius_mm": round(radius, 3), "myo_thickness_mm": round(wall, 3),
            "rv_size": round(rv_size, 4)}


def _sample_fat(rng: np.random.Generator, bmi: float) -> tuple[float, float]:
    """Pericardial and subcutaneous fat thickness (mm), both growing with BMI."""
    fat0, fat_slope, fat_sd = PERICARDIAL_FAT_MM
    sub0, sub_slope, sub_sd = SUBCUT_FAT_MM
    fat_mm = float(np.clip(fat0 + fat_slope * (bmi - 18.0) + rng.normal(0, fat_sd), 0.5, 12.0))
    subcut = float(np.clip(sub0 + sub_slope * (bmi - 18.0) + rng.normal(0, sub_sd), 2.0, 40.0))
    return fat_mm, subcut
