"""One phantom patient's cine: a bSSFP-like short-axis image drawn from its geometry.

:func:`render_patient` draws ``n_slices`` slices base to apex and ``n_frames`` frames over
one cardiac cycle, with the label maps at ED (frame 0) and ES (smallest LV cavity) and the
ground truth measured on the very same geometry. Noise comes from
``default_rng([seed, eid, 2])``.

Around the heart: pericardial fat, lungs, the liver below the diaphragm, the descending
aorta, the anterior chest wall (muscle, subcutaneous fat growing with BMI, air); liver and
muscle with a smooth texture. Trabeculae reach into the LV blood pool from the endocardium
and papillary muscles sit in it; both move with the wall and are labelled LV cavity.

Images use soft edges (a sigmoid of the signed distance, width 0.25-0.45 voxel by scanner), painted back
to front, so boundary voxels take partial-volume values; labels are the hard threshold of
the same distances. A smooth multiplicative coil bias field and Rician noise finish it
(contrast, edges, resolution, bias and noise are the scanner's: :mod:`cardio_assets.phantom.scanners`);
the stored int16 values are 0.4 x the reference signal (see FILE_SCALE).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from cardio_assets.phantom.anatomy import PatientParams
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.geometry import Geometry, affine_of, patient_geometry, slice_fraction
from cardio_assets.phantom.truth import truth_of

# Papillary muscles sit in the LV cavity (labelled LV cavity, as UK Biobank masks do)
# between these base-to-apex fractions, touching the wall and moving with it.
PAPILLARY_SLICE_RANGE = (0.15, 0.75)
# Stored int16 = FILE_SCALE x reference signal: blood ~88, maximum ~125, noise sigma
# 1.2-2.0 (still above one quantisation step). Contrast and SNR (blood/sigma ~45-75)
# are those of the reference scale, but the narrow value range compresses ~25% better
# under nibabel's gzip (its int16 high byte costs ~2 bits a voxel whatever we do), which
# keeps the 1716-patient demo cohort near 1 GB (manifest.json: bytes_nifti).
FILE_SCALE = 0.4
RV_WALL_MM = 3.0
AIR = 0.0


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


def chest_wall_edges(p: PatientParams, g: Geometry, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chest wall's edges in v (mm, anterior is smaller) at lateral positions `u`, above the heart's
    top (`g.heart_top_v`): the wall's inner face, the muscle's outer face and the skin (`phantom.in_frame`
    reads them too)."""
    curvature = u**2 / (2.0 * 170.0)  # the chest wall curves back laterally
    wall_inner = g.heart_top_v - p.chest_gap_mm + curvature
    muscle_top = wall_inner - p.chest_muscle_mm
    return wall_inner, muscle_top, muscle_top - p.subcut_fat_mm


def _surroundings(p: PatientParams, g: Geometry, n_slices: int, w: float, texture: np.ndarray) -> np.ndarray:
    """Static tissue around the heart, (Z, Y, X): chest wall, lungs, liver, aorta; the chest muscle
    and the liver carry `texture` (Z, Y, X)."""
    u, v = g.u, g.v
    wall_inner, muscle_top, skin = chest_wall_edges(p, g, u)
    f = slice_fraction(n_slices)
    out = np.empty((n_slices,) + u.shape, np.float32)
    for z in range(n_slices):
        img = np.full(u.shape, AIR, np.float32)
        _paint(img, _sigmoid((v - skin) / w), p.fat_signal)
        _paint(img, _sigmoid((v - muscle_top) / w), p.muscle_signal * texture[z])
        _paint(img, _sigmoid((v - wall_inner) / w), p.lung_signal)
        # diaphragm: under the heart, higher on the liver side (image left), rising apically
        diaphragm = g.heart_bottom_v + p.diaphragm_mm - 10.0 * f[z] + 0.2 * u + u**2 / 400.0
        _paint(img, _sigmoid((v - diaphragm) / w), p.liver_signal * texture[z])
        cu, cv = g.lv_center[z]
        dist = np.sqrt((u - cu - p.aorta_u_mm) ** 2 + (v - g.heart_bottom_v - p.aorta_v_mm) ** 2)
        _paint(img, _sigmoid((p.aorta_radius_mm - dist) / w), p.aorta_signal)
        out[z] = img
    return out


def _bias_field(p: PatientParams, g: Geometry, n_slices: int) -> np.ndarray:
    """Smooth low-order coil sensitivity, (Z, Y, X), clipped to [0.75, 1.25]."""
    half = float(np.abs(g.u).max()) or 1.0
    un, vn = g.u / half, g.v / half
    zn = np.linspace(-1.0, 1.0, n_slices, dtype=np.float32)[:, None, None]
    field = (1.0 + p.bias_u * un + p.bias_v * vn + p.bias_uv * un * vn
             + p.bias_uu * (un**2 - 1.0 / 3.0) + p.bias_vv * (vn**2 - 1.0 / 3.0))[None] + p.bias_z * zn
    return np.clip(field, 0.75, 1.25).astype(np.float32)


def _heart_box(g: Geometry, z: int, margin: float) -> tuple[slice, slice]:
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


def _papillary_alpha(p: PatientParams, g: Geometry, z: int, box: tuple[slice, slice],
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



def _trabeculae(p: PatientParams, g: Geometry, z: int, box: tuple[slice, slice]) -> np.ndarray:
    """(1, box rows, box cols) mm by which the blood pool's edge recedes at each angle: thin
    fingers of muscle reaching into the cavity from the endocardium (the label map keeps the
    smooth endocardium: trabeculae are labelled LV cavity, as in UK Biobank's masks)."""
    cu, cv = g.lv_center[z]
    theta = np.arctan2(g.v[box] - np.float32(cv), g.u[box] - np.float32(cu))
    comb = np.maximum(np.cos(p.trabecula_count * (theta - math.radians(p.trabecula_phase_deg))), 0.0) ** 4
    return (np.float32(p.trabecula_depth_mm) * comb.astype(np.float32))[None]


def _texture(p: PatientParams, config: PhantomConfig, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field around 1 (std `texture_amplitude`) for the organs' signal."""
    rng = np.random.default_rng([config.seed, int(p.eid), 5])
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=(0, 1.5, 1.5))
    field /= float(field.std()) or 1.0
    return np.float32(1.0) + np.float32(p.texture_amplitude) * field


def _paint_heart(frames: np.ndarray, p: PatientParams, g: Geometry, z: int, w: float,
                 with_papillary: bool) -> None:
    """Paint the heart of slice ``z`` over its surroundings, every frame at once.

    ``frames`` is the (T, Y, X) view of the cine at this slice; layers go back to front:
    pericardial fat, myocardium (LV and RV walls), RV blood, LV blood, papillary muscles.
    """
    inv_w = np.float32(1.0 / w)
    box = _heart_box(g, z, margin=12.0 * w)
    rho, rho_rv, fat = g.rho_lv[z][box][None], g.rho_rv[z][box][None], g.fat_map[z][box][None]
    r = g.r_endo[:, z, None, None]
    R = g.r_epi[:, z, None, None]
    layer = frames[(slice(None),) + box]  # a view: painting writes into the cine
    a_epi = _sigmoid((R - rho) * inv_w)
    a_fat = _sigmoid((R + fat - rho) * inv_w)
    a_muscle = a_epi
    a_rv = None
    if g.has_rv[z]:
        Rrv = g.r_rv[:, z, None, None]
        a_fat = np.maximum(a_fat, _sigmoid((Rrv + RV_WALL_MM + fat - rho_rv) * inv_w))
        a_muscle = np.maximum(a_epi, _sigmoid((Rrv + RV_WALL_MM - rho_rv) * inv_w))
        a_rv = _sigmoid((Rrv - rho_rv) * inv_w) * (1.0 - a_epi)
    _paint(layer, a_fat, p.fat_signal)
    _paint(layer, a_muscle, p.myo_signal)
    if a_rv is not None:
        _paint(layer, a_rv, p.blood_signal)
    _paint(layer, _sigmoid((r - _trabeculae(p, g, z, box) - rho) * inv_w), p.blood_signal)
    if with_papillary:
        _paint(layer, _papillary_alpha(p, g, z, box, inv_w), p.myo_signal)


def _rician_int16(img: np.ndarray, p: PatientParams, config: PhantomConfig) -> np.ndarray:
    """Add Rician noise to the clean (T, Z, Y, X) image and store it as int16 (X, Y, Z, T).

    Works in place on ``img``, which is spent afterwards.
    """
    rng = np.random.default_rng([config.seed, int(p.eid), 2])
    noise = rng.standard_normal((2,) + img.shape, dtype=np.float32)
    noise *= np.float32(p.noise_sigma)
    img += noise[0]
    img *= img
    noise[1] *= noise[1]
    img += noise[1]
    magnitude = np.sqrt(img, out=img)  # Rician: |S + n1 + i n2|
    magnitude *= np.float32(FILE_SCALE)
    np.minimum(magnitude, np.float32(32767), out=magnitude)
    return np.rint(magnitude).astype(np.int16).transpose(3, 2, 1, 0)


def render_patient(params: PatientParams, config: PhantomConfig):
    """Render one patient without touching disk.

    Returns ``(cine, ed_mask, es_mask, affine, truth)``: cine int16 (X, Y, Z, T), masks
    uint8 (X, Y, Z) at ED (frame 0) and ES (``truth["es_frame"]``), the 4x4 affine, and
    the truth row (see :func:`cardio_assets.phantom.truth.patient_truth`).
    """
    g = patient_geometry(params, config)
    Z, T, n = config.n_slices, config.n_frames, config.matrix
    w = params.edge_width_voxels * params.spacing_mm  # sigmoid scale: the scanner's edge sharpness
    background = _surroundings(params, g, Z, w, _texture(params, config, (Z, n, n)))
    f = slice_fraction(Z)

    # C-order (T, Z, Y, X) is F-order (X, Y, Z, T): NIfTI's layout, written without a copy
    img = np.empty((T, Z, n, n), np.float32)
    img[:] = background[None]
    for z in range(Z):
        with_papillary = PAPILLARY_SLICE_RANGE[0] <= f[z] <= PAPILLARY_SLICE_RANGE[1]
        _paint_heart(img[:, z], params, g, z, w, with_papillary)
    img *= _bias_field(params, g, Z)[None] * np.float32(params.gain)
    cine = _rician_int16(img, params, config)

    truth, ed_mask, es_mask = truth_of(params, g)
    return cine, ed_mask, es_mask, affine_of(params), truth
