"""One phantom patient: anatomy parameters from attributes, then a short-axis cine.

Two steps, both deterministic given (config, eid):

1. :func:`sample_anatomy` turns a patient's attributes (sex, age, BMI, HF) into geometry
   and contrast parameters, drawing the individual variation from
   ``default_rng([seed, eid, 1])``. This is where attributes shape images, through
   overlapping distributions as in life.
2. :func:`render_patient` draws a bSSFP-like short-axis cine from those parameters:
   ``n_slices`` slices base to apex, ``n_frames`` frames over one cardiac cycle, the
   label maps at ED (frame 0) and ES (smallest LV cavity), and ground truth measured on
   the very same geometry. Noise comes from ``default_rng([seed, eid, 2])``.

Geometry (in-plane, mm, image-centred; u grows to image right = patient left, v grows
down = posterior/inferior):

- The LV is an ellipse in "equivalent radius" coordinates
  ``rho = sqrt((x'/(1+e))^2 + (y'(1+e))^2)`` (x', y' rotated). The region ``rho < r``
  has area pi r^2 whatever the ellipticity e, so area-based reasoning (EF, wall area
  conservation) is exact.
- Endocardial radius over the cycle: a raised cosine from ``r_ed`` at frame 0 to
  ``r_es = r_ed * sqrt(1 - EF)`` at ``es_frame``, and back. Myocardial area is conserved,
  so the epicardial radius is ``sqrt(r^2 + A_myo / pi)`` and the wall thickens in systole.
- The RV is an ellipse centred on the septal side, elongated across the septum, minus the
  LV epicardium: a crescent. It shrinks with its own EF and vanishes at the apex.
- Around the heart: a pericardial fat layer (thicker with BMI, uneven around the heart),
  lungs, the liver below the diaphragm, the descending aorta, the anterior chest wall
  (muscle, subcutaneous fat growing with BMI, air).

Images use soft edges (a sigmoid of the signed distance, width ~0.3 voxel), painted back
to front, so boundary voxels take partial-volume values; labels are the hard threshold of
the same distances. A smooth multiplicative coil bias field and Rician noise finish it;
the stored int16 values are 0.4 x the reference signal (see FILE_SCALE).

The one knob on how hard HF is to see is ``difficulty`` (see :func:`separation`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from cardio_assets.cohort.labels import BACKGROUND, LV, MYO, RV
from cardio_assets.phantom.population import PatientAttributes

if TYPE_CHECKING:  # avoid a runtime import cycle: generate imports this module
    from cardio_assets.phantom.generate import PhantomConfig

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
# Papillary muscles sit in the LV cavity (labelled LV cavity, as UK Biobank masks do)
# between these base-to-apex fractions, touching the wall and moving with it.
PAPILLARY_SLICE_RANGE = (0.15, 0.75)
# Stored int16 = FILE_SCALE x reference signal: blood ~88, maximum ~125, noise sigma
# 1.2-2.0 (still above one quantisation step). Contrast and SNR (blood/sigma ~45-75)
# are those of the reference scale, but the narrow value range compresses ~25% better
# under nibabel's gzip (its int16 high byte costs ~2 bits a voxel whatever we do), which
# keeps the 1716-patient demo cohort near 1 GB (manifest.json: bytes_nifti).
FILE_SCALE = 0.4
NOISE_SIGMA = (3.0, 5.0)  # reference units, uniform per patient
EDGE_WIDTH_VOXELS = 0.3  # sigmoid scale as a fraction of the in-plane spacing
RV_WALL_MM = 3.0
# RV ellipse, in units of the LV epicardial radius: centre offset toward the septum,
# semi-axes along and across that direction. Thin along, long across: a crescent.
RV_OFFSET, RV_ALONG, RV_ACROSS = 0.75, 0.7, 1.35
AIR = 0.0


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
    # acquisition
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


def sample_anatomy(attrs: PatientAttributes, config: "PhantomConfig") -> PatientParams:
    """Geometry and contrast of one patient, drawn around what its attributes imply.

    Every attribute effect is a shift of a distribution with patient-level spread, so
    groups overlap: a large woman can have a bigger heart than a small man, an obese
    patient can have little pericardial fat.
    """
    rng = np.random.default_rng([config.seed, int(attrs.eid), 1])
    male = attrs.sex == "male"
    sep = separation(config.difficulty)

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

    T = config.n_frames
    es_frame = int(round(T * rng.uniform(0.34, 0.40)))
    es_frame = min(max(es_frame, 1), T - 1)

    fat0, fat_slope, fat_sd = PERICARDIAL_FAT_MM
    sub0, sub_slope, sub_sd = SUBCUT_FAT_MM
    fat_mm = float(np.clip(fat0 + fat_slope * (attrs.bmi - 18.0) + rng.normal(0, fat_sd), 0.5, 12.0))
    subcut = float(np.clip(sub0 + sub_slope * (attrs.bmi - 18.0) + rng.normal(0, sub_sd), 2.0, 40.0))

    signal = {name: float(rng.normal(mean, sd)) for name, (mean, sd) in TISSUE.items()}
    bias = rng.uniform(-0.08, 0.08, size=6)

    return PatientParams(
        eid=attrs.eid, subset=attrs.subset, sex=attrs.sex, age=attrs.age, bmi=attrs.bmi,
        hf=attrs.hf, icd10=attrs.icd10, phenotype=phenotype,
        ef_design=round(float(ef), 4), rv_ef=round(rv_ef, 4),
        lv_radius_mm=round(radius, 3), myo_thickness_mm=round(wall, 3),
        rv_size=round(rv_size, 4), rv_angle_deg=round(float(rng.normal(200.0, 8.0)), 2),
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
        spacing_mm=round(float(rng.uniform(1.7, 1.9)), 4),
        slice_mm=float(rng.choice([8.0, 10.0])),
        gain=round(float(rng.uniform(0.9, 1.1)), 4),
        noise_sigma=round(float(rng.uniform(*NOISE_SIGMA)), 3),
        bias_u=round(float(bias[0]), 4), bias_v=round(float(bias[1]), 4),
        bias_uv=round(float(bias[2]), 4), bias_uu=round(float(bias[3]), 4),
        bias_vv=round(float(bias[4]), 4), bias_z=round(float(bias[5]), 4),
        blood_signal=round(signal["blood"], 2), myo_signal=round(signal["myo"], 2),
        fat_signal=round(signal["fat"], 2), muscle_signal=round(signal["muscle"], 2),
        lung_signal=round(max(signal["lung"], 2.0), 2), liver_signal=round(signal["liver"], 2),
        aorta_signal=round(signal["aorta"], 2),
    )


# ---------------------------------------------------------------------------------------
# Geometry shared by images and labels
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    """Per-slice distance maps (Z, Y, X) and per-(frame, slice) radii (T, Z), in mm.

    Static maps are computed once per slice; the motion is carried entirely by the radii,
    so a frame costs only a comparison (labels) or a sigmoid (image) per layer.
    """

    u: np.ndarray  # (Y, X) image-centred lateral coordinate
    v: np.ndarray  # (Y, X) image-centred vertical coordinate
    rho_lv: np.ndarray  # (Z, Y, X)
    rho_rv: np.ndarray  # (Z, Y, X)
    fat_map: np.ndarray  # (Z, Y, X) local pericardial fat thickness
    has_rv: np.ndarray  # (Z,) bool
    r_endo: np.ndarray  # (T, Z)
    r_epi: np.ndarray  # (T, Z)
    r_rv: np.ndarray  # (T, Z)
    lv_center: np.ndarray  # (Z, 2) u, v
    heart_top_v: float  # most anterior heart extent at ED (basal slice), incl. fat
    heart_bottom_v: float


def contraction(n_frames: int, es_frame: int) -> np.ndarray:
    """Contraction fraction per frame: 0 at ED (frame 0), 1 at ``es_frame``, raised cosine."""
    t = np.arange(n_frames, dtype=np.float64)
    c = np.empty(n_frames)
    sys = t <= es_frame
    c[sys] = 0.5 * (1.0 - np.cos(np.pi * t[sys] / es_frame))
    c[~sys] = 0.5 * (1.0 + np.cos(np.pi * (t[~sys] - es_frame) / (n_frames - es_frame)))
    return c


def _slice_fraction(n_slices: int) -> np.ndarray:
    """Position of each slice from base (0) toward the apex (1)."""
    return (np.arange(n_slices) + 0.5) / n_slices * 0.9


def _geometry(p: PatientParams, config: "PhantomConfig") -> _Geometry:
    n, Z, T = config.matrix, config.n_slices, config.n_frames
    axis = ((np.arange(n) - (n - 1) / 2.0) * p.spacing_mm).astype(np.float32)
    v, u = np.meshgrid(axis, axis, indexing="ij")  # arrays are (Y, X)

    f = _slice_fraction(Z)
    taper = np.sqrt(1.0 - f**2)  # half-ellipsoid LV
    r_ed = p.lv_radius_mm * taper  # (Z,)
    wall = p.myo_thickness_mm * (1.0 - 0.15 * f)
    myo_area = (r_ed + wall) ** 2 - r_ed**2  # /pi
    r_es = r_ed * math.sqrt(1.0 - p.ef_design)
    c = contraction(T, p.es_frame_design)[:, None]  # (T, 1)
    r_endo = r_ed[None, :] - c * (r_ed - r_es)[None, :]
    r_epi = np.sqrt(r_endo**2 + myo_area[None, :])
    r_epi_ed = r_epi[0]

    rv_taper = np.sqrt(np.clip(1.0 - (f / 0.72) ** 2, 0.0, None))
    has_rv = rv_taper > 0.0
    r_rv_ed = p.rv_size * r_epi_ed * rv_taper
    rv_shrink = 1.0 - math.sqrt(1.0 - p.rv_ef)
    r_rv = r_rv_ed[None, :] * (1.0 - 0.8 * rv_shrink * c)

    k = np.arange(Z)
    centers = np.stack([p.center_u_mm + p.drift_u_mm * k, p.center_v_mm + p.drift_v_mm * k], axis=1)
    th = math.radians(p.rotation_deg)
    phi = math.radians(p.rv_angle_deg)
    cos_t, sin_t, cos_p, sin_p = math.cos(th), math.sin(th), math.cos(phi), math.sin(phi)
    e1 = 1.0 + p.ellipticity
    rv_along, rv_across = RV_ALONG, RV_ACROSS
    fat_angle = math.radians(p.fat_angle_deg)

    rho_lv = np.empty((Z, n, n), np.float32)
    rho_rv = np.empty((Z, n, n), np.float32)
    fat_map = np.empty((Z, n, n), np.float32)
    for z in range(Z):
        du, dv = u - centers[z, 0], v - centers[z, 1]
        xr, yr = du * cos_t + dv * sin_t, -du * sin_t + dv * cos_t
        rho_lv[z] = np.sqrt((xr / e1) ** 2 + (yr * e1) ** 2)
        d = RV_OFFSET * r_epi_ed[z]
        ru, rv_ = du - d * cos_p, dv - d * sin_p
        along, across = ru * cos_p + rv_ * sin_p, -ru * sin_p + rv_ * cos_p
        rho_rv[z] = np.sqrt((along / rv_along) ** 2 + (across / rv_across) ** 2)
        # pericardial fat: uneven around the heart, thicker at the base (AV groove)
        ang = np.arctan2(dv, du)
        fat_map[z] = p.fat_mm * (1.15 - 0.3 * f[z]) * np.maximum(0.2, 1.0 + 0.6 * np.cos(ang - fat_angle))

    # anterior/inferior extent of the heart at ED, basal slice (the largest), plus fat
    d0 = RV_OFFSET * r_epi_ed[0]
    rv_half_height = r_rv_ed[0] * math.hypot(rv_along * sin_p, rv_across * cos_p)
    rv_c = centers[0, 1] + d0 * sin_p
    top = min(centers[0, 1] - r_epi_ed[0], rv_c - rv_half_height) - 1.6 * p.fat_mm
    bottom = max(centers[0, 1] + r_epi_ed[0], rv_c + rv_half_height) + 0.5 * p.fat_mm
    return _Geometry(u=u, v=v, rho_lv=rho_lv, rho_rv=rho_rv, fat_map=fat_map, has_rv=has_rv,
                     r_endo=r_endo.astype(np.float32), r_epi=r_epi.astype(np.float32),
                     r_rv=r_rv.astype(np.float32), lv_center=centers,
                     heart_top_v=float(top), heart_bottom_v=float(bottom))


def _labels(g: _Geometry, frames: np.ndarray) -> np.ndarray:
    """Hard label maps (len(frames), Z, Y, X): the 0-threshold of the image's distances."""
    r = g.r_endo[frames][:, :, None, None]
    R = g.r_epi[frames][:, :, None, None]
    Rrv = g.r_rv[frames][:, :, None, None]
    lv = g.rho_lv[None] < r
    epi = g.rho_lv[None] < R
    rv = (g.rho_rv[None] < Rrv) & ~epi & g.has_rv[None, :, None, None]
    out = np.full(lv.shape, BACKGROUND, np.uint8)
    out[rv] = RV
    out[epi] = MYO
    out[lv] = LV
    return out


def lv_voxels_per_frame(g: _Geometry) -> np.ndarray:
    """LV cavity voxel count per frame, over all slices: the curve ES is the minimum of."""
    return (g.rho_lv[None] < g.r_endo[:, :, None, None]).sum(axis=(1, 2, 3))


def render_labels(params: PatientParams, config: "PhantomConfig") -> np.ndarray:
    """Label maps of every frame, (X, Y, Z, T) uint8: cheap, for tests and checks."""
    g = _geometry(params, config)
    return _labels(g, np.arange(config.n_frames)).transpose(3, 2, 1, 0)


def affine_of(params: PatientParams) -> np.ndarray:
    """Diagonal voxel-to-mm affine shared by the cine and both masks."""
    return np.diag([params.spacing_mm, params.spacing_mm, params.slice_mm, 1.0])


def frame_seconds(params: PatientParams, config: "PhantomConfig") -> float:
    """Time between cine frames: one heartbeat over ``n_frames``."""
    return 60.0 / params.heart_rate_bpm / config.n_frames


TRUTH_MEASURED = ("eid", "es_frame", "ef", "lv_edv_ml", "lv_esv_ml", "rv_edv_ml", "rv_esv_ml",
                  "myo_thickness_mm", "fat_mm", "hf", "sex", "age", "bmi", "cell")


def truth_columns() -> list[str]:
    """truth.csv columns: the measured ground truth first, then every other parameter."""
    rest = [f.name for f in fields(PatientParams) if f.name not in TRUTH_MEASURED]
    return list(TRUTH_MEASURED) + rest


def patient_truth(params: PatientParams, config: "PhantomConfig") -> tuple[dict, np.ndarray, np.ndarray]:
    """Ground truth and the ED/ES label maps (X, Y, Z), without rendering the image.

    ES is the first frame of smallest LV cavity voxel count, as a reader would find it;
    by construction it is ``es_frame_design`` (checked by the tests). Volumes are voxel
    counts times voxel volume on these exact masks, and ``ef`` is computed from them.
    """
    g = _geometry(params, config)
    return _truth(params, config, g)


def _truth(params: PatientParams, config: "PhantomConfig",
           g: _Geometry) -> tuple[dict, np.ndarray, np.ndarray]:
    counts = lv_voxels_per_frame(g)
    es = int(np.argmin(counts))
    lab = _labels(g, np.array([0, es]))
    voxel_ml = params.spacing_mm**2 * params.slice_mm / 1000.0
    edv, esv = float(counts[0]) * voxel_ml, float(counts[es]) * voxel_ml
    rv_edv = float((lab[0] == RV).sum()) * voxel_ml
    rv_esv = float((lab[1] == RV).sum()) * voxel_ml
    measured = {
        "eid": params.eid,
        "es_frame": es,
        "ef": round(1.0 - esv / edv, 4),
        "lv_edv_ml": round(edv, 3),
        "lv_esv_ml": round(esv, 3),
        "rv_edv_ml": round(rv_edv, 3),
        "rv_esv_ml": round(rv_esv, 3),
        "myo_thickness_mm": params.myo_thickness_mm,
        "fat_mm": params.fat_mm,
        "hf": int(params.hf),
        "sex": params.sex,
        "age": params.age,
        "bmi": params.bmi,
        "cell": PatientAttributes(params.eid, params.subset, params.sex, params.age,
                                  params.bmi, params.hf, params.icd10).cell.key,
    }
    row = {**params.as_row(), **measured}
    truth = {key: int(row[key]) if isinstance(row[key], bool) else row[key] for key in truth_columns()}
    ed_mask = np.ascontiguousarray(lab[0].transpose(2, 1, 0))
    es_mask = np.ascontiguousarray(lab[1].transpose(2, 1, 0))
    return truth, ed_mask, es_mask


# ---------------------------------------------------------------------------------------
# Image
# ---------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic sigmoid, float32, computed in place on ``x`` (a temporary).

    Several times faster than scipy.special.expit on float32, and the clip keeps exp
    from overflowing (alpha is 0 or 1 to float32 precision beyond |x| = 30 anyway).
    """
    np.clip(x, -30.0, 30.0, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += np.float32(1.0)
    return np.reciprocal(x, out=x)


def _paint(img: np.ndarray, alpha: np.ndarray, value: float) -> None:
    """Composite one soft layer over ``img`` in place: img <- img + alpha (value - img)."""
    img += alpha * (np.float32(value) - img)


def _surroundings(p: PatientParams, g: _Geometry, n_slices: int, w: float) -> np.ndarray:
    """Static tissue around the heart, (Z, Y, X): chest wall, lungs, liver, aorta."""
    u, v = g.u, g.v
    curvature = u**2 / (2.0 * 170.0)  # the chest wall curves back laterally
    wall_inner = g.heart_top_v - p.chest_gap_mm + curvature
    muscle_top = wall_inner - p.chest_muscle_mm
    skin = muscle_top - p.subcut_fat_mm
    f = _slice_fraction(n_slices)
    out = np.empty((n_slices,) + u.shape, np.float32)
    for z in range(n_slices):
        img = np.full(u.shape, AIR, np.float32)
        _paint(img, _sigmoid((v - skin) / w), p.fat_signal)
        _paint(img, _sigmoid((v - muscle_top) / w), p.muscle_signal)
        _paint(img, _sigmoid((v - wall_inner) / w), p.lung_signal)
        # diaphragm: under the heart, higher on the liver side (image left), rising apically
        diaphragm = g.heart_bottom_v + p.diaphragm_mm - 10.0 * f[z] + 0.2 * u + u**2 / 400.0
        _paint(img, _sigmoid((v - diaphragm) / w), p.liver_signal)
        cu, cv = g.lv_center[z]
        dist = np.sqrt((u - cu - p.aorta_u_mm) ** 2 + (v - g.heart_bottom_v - p.aorta_v_mm) ** 2)
        _paint(img, _sigmoid((p.aorta_radius_mm - dist) / w), p.aorta_signal)
        out[z] = img
    return out


def _bias_field(p: PatientParams, g: _Geometry, n_slices: int) -> np.ndarray:
    """Smooth low-order coil sensitivity, (Z, Y, X), clipped to [0.75, 1.25]."""
    half = float(np.abs(g.u).max()) or 1.0
    un, vn = g.u / half, g.v / half
    zn = np.linspace(-1.0, 1.0, n_slices, dtype=np.float32)[:, None, None]
    field = (1.0 + p.bias_u * un + p.bias_v * vn + p.bias_uv * un * vn
             + p.bias_uu * (un**2 - 1.0 / 3.0) + p.bias_vv * (vn**2 - 1.0 / 3.0))[None] + p.bias_z * zn
    return np.clip(field, 0.75, 1.25).astype(np.float32)


def _heart_box(g: _Geometry, z: int, margin: float) -> tuple[slice, slice]:
    """Rows and columns of slice ``z`` that any heart layer can reach (its ED extent,
    the largest of the cycle, plus ``margin`` mm). Outside it every heart layer's alpha is
    below sigmoid(-margin / w), so the sigmoids need not be computed there.
    """
    reach = g.rho_lv[z] < g.r_epi[0, z] + g.fat_map[z] + margin
    if g.has_rv[z]:
        reach |= g.rho_rv[z] < g.r_rv[0, z] + RV_WALL_MM + g.fat_map[z] + margin
    rows, cols = np.flatnonzero(reach.any(axis=1)), np.flatnonzero(reach.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _papillary_alpha(p: PatientParams, g: _Geometry, z: int, box: tuple[slice, slice],
                     inv_w: np.float32) -> np.ndarray:
    """Soft mask (T, box rows, box cols) of the two papillary muscles of slice ``z``.

    Their size is fixed and their centres ride on the endocardium, so they fill more
    of the cavity at ES, as in real cines.
    """
    r = g.r_endo[:, z, None, None]  # (T, 1, 1)
    size = np.float32(p.papillary_size * g.r_endo[0, z])
    cu, cv = g.lv_center[z]
    u, v = g.u[box][None], g.v[box][None]
    alpha = None
    for angle in (p.papillary_angle_1_deg, p.papillary_angle_2_deg):
        a = math.radians(angle)
        reach = r - np.float32(0.9) * size
        du = u - (np.float32(cu) + reach * np.float32(math.cos(a)))
        dv = v - (np.float32(cv) + reach * np.float32(math.sin(a)))
        one = _sigmoid((size - np.sqrt(du * du + dv * dv)) * inv_w)
        alpha = one if alpha is None else np.maximum(alpha, one)
    return alpha


def render_patient(params: PatientParams, config: "PhantomConfig"):
    """Render one patient without touching disk.

    Returns ``(cine, ed_mask, es_mask, affine, truth)``: cine int16 (X, Y, Z, T), masks
    uint8 (X, Y, Z) at ED (frame 0) and ES (``truth["es_frame"]``), the 4x4 affine, and
    the truth row (see :func:`patient_truth`).
    """
    g = _geometry(params, config)
    Z, T, n = config.n_slices, config.n_frames, config.matrix
    w = EDGE_WIDTH_VOXELS * params.spacing_mm
    inv_w = np.float32(1.0 / w)
    background = _surroundings(params, g, Z, w)
    f = _slice_fraction(Z)

    # C-order (T, Z, Y, X) is F-order (X, Y, Z, T): NIfTI's layout, written without a copy
    img = np.empty((T, Z, n, n), np.float32)
    img[:] = background[None]
    for z in range(Z):
        box = _heart_box(g, z, margin=12.0 * w)
        rho, rho_rv, fat = g.rho_lv[z][box][None], g.rho_rv[z][box][None], g.fat_map[z][box][None]
        r = g.r_endo[:, z, None, None]
        R = g.r_epi[:, z, None, None]
        layer = img[:, z][(slice(None),) + box]  # a view: painting writes into img
        a_epi = _sigmoid((R - rho) * inv_w)
        a_fat = _sigmoid((R + fat - rho) * inv_w)
        a_muscle = a_epi
        a_rv = None
        if g.has_rv[z]:
            Rrv = g.r_rv[:, z, None, None]
            a_fat = np.maximum(a_fat, _sigmoid((Rrv + RV_WALL_MM + fat - rho_rv) * inv_w))
            a_muscle = np.maximum(a_epi, _sigmoid((Rrv + RV_WALL_MM - rho_rv) * inv_w))
            a_rv = _sigmoid((Rrv - rho_rv) * inv_w) * (1.0 - a_epi)
        _paint(layer, a_fat, params.fat_signal)
        _paint(layer, a_muscle, params.myo_signal)
        if a_rv is not None:
            _paint(layer, a_rv, params.blood_signal)
        _paint(layer, _sigmoid((r - rho) * inv_w), params.blood_signal)
        if PAPILLARY_SLICE_RANGE[0] <= f[z] <= PAPILLARY_SLICE_RANGE[1]:
            _paint(layer, _papillary_alpha(params, g, z, box, inv_w), params.myo_signal)

    img *= _bias_field(params, g, Z)[None] * np.float32(params.gain)
    rng = np.random.default_rng([config.seed, int(params.eid), 2])
    noise = rng.standard_normal((2,) + img.shape, dtype=np.float32)
    noise *= np.float32(params.noise_sigma)
    img += noise[0]
    img *= img
    noise[1] *= noise[1]
    img += noise[1]
    magnitude = np.sqrt(img, out=img)  # Rician: |S + n1 + i n2|
    magnitude *= np.float32(FILE_SCALE)
    np.minimum(magnitude, np.float32(32767), out=magnitude)
    cine = np.rint(magnitude).astype(np.int16).transpose(3, 2, 1, 0)

    truth, ed_mask, es_mask = _truth(params, config, g)
    return cine, ed_mask, es_mask, affine_of(params), truth
