"""One phantom patient's heart in space and time: distance maps, radii and label maps.

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
- Around the heart: a pericardial fat map (thicker with BMI, uneven around the heart);
  the rest of the surroundings is painted by :mod:`cardio_assets.phantom.render`.

Labels are the hard 0-threshold of the same distances the image's soft edges are drawn
from, so images and masks agree voxel for voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardio_assets.cohort.labels import BACKGROUND, LV, MYO, RV
from cardio_assets.phantom.anatomy import PatientParams
from cardio_assets.phantom.config import PhantomConfig

# RV ellipse, in units of the LV epicardial radius: centre offset toward the septum,
# semi-axes along and across that direction. Thin along, long across: a crescent.
RV_OFFSET, RV_ALONG, RV_ACROSS = 0.75, 0.7, 1.35


@dataclass(frozen=True)
class Geometry:
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


def slice_fraction(n_slices: int) -> np.ndarray:
    """Position of each slice from base (0) toward the apex (1)."""
    return (np.arange(n_slices) + 0.5) / n_slices * 0.9


def patient_geometry(p: PatientParams, config: PhantomConfig) -> Geometry:
    """The patient's distance maps and radii on the config's voxel grid and frames."""
    n, Z, T = config.matrix, config.n_slices, config.n_frames
    axis = ((np.arange(n) - (n - 1) / 2.0) * p.spacing_mm).astype(np.float32)
    v, u = np.meshgrid(axis, axis, indexing="ij")  # arrays are (Y, X)

    f = slice_fraction(Z)
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
    return Geometry(u=u, v=v, rho_lv=rho_lv, rho_rv=rho_rv, fat_map=fat_map, has_rv=has_rv,
                    r_endo=r_endo.astype(np.float32), r_epi=r_epi.astype(np.float32),
                    r_rv=r_rv.astype(np.float32), lv_center=centers,
                    heart_top_v=float(top), heart_bottom_v=float(bottom))


def label_maps(g: Geometry, frames: np.ndarray) -> np.ndarray:
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


def lv_voxels_per_frame(g: Geometry) -> np.ndarray:
    """LV cavity voxel count per frame, over all slices: the curve ES is the minimum of."""
    return (g.rho_lv[None] < g.r_endo[:, :, None, None]).sum(axis=(1, 2, 3))


def render_labels(params: PatientParams, config: PhantomConfig) -> np.ndarray:
    """Label maps of every frame, (X, Y, Z, T) uint8: cheap, for tests and checks."""
    g = patient_geometry(params, config)
    return label_maps(g, np.arange(config.n_frames)).transpose(3, 2, 1, 0)


def affine_of(params: PatientParams) -> np.ndarray:
    """Diagonal voxel-to-mm affine shared by the cine and both masks."""
    return np.diag([params.spacing_mm, params.spacing_mm, params.slice_mm, 1.0])


def frame_seconds(params: PatientParams, config: PhantomConfig) -> float:
    """Time between cine frames: one heartbeat over ``n_frames``."""
    return 60.0 / params.heart_rate_bpm / config.n_frames
