"""What a preprocessed frame shows of the phantom's chest wall.

The phantom draws a chest wall above the heart: lung gap, muscle (thicker in men) and
subcutaneous fat (thicker with BMI). The frames are a `crop_px` square centred on the
heart's labels (`frames.preprocess.crop_box`), inside an image of `matrix` pixels: on the
demo (64 of 80 px) the crop shows a median 5 mm of the muscle and none of the fat, whose
outer edge lies 50-90 mm above the heart's centre. A ceiling computed from the full
parameters (`phantom.ceiling`) would credit any image-based predictor with a fat layer that
is not in its frames: on the demo the BMI band's ceiling falls from 0.84 to 0.71 without it.

`in_frame_truth` replaces the chest-wall parameters of each patient with the millimetres of
each layer that fall inside the crop of its validation/test frames, averaged over the crop's columns (the wall
curves back laterally), by rebuilding the patient's geometry and labels as the phantom drew
them. It also puts sizes in the frame's own units: a frame is a crop of pixels, never
resampled to millimetres, so a heart's radius shows as pixels and the patient's pixel spacing
(3% spread within a scanner) is not in it. On the demo cohort (training scanners) the sex
ceiling goes 0.863 (every parameter) -> 0.815 (the crop's chest wall) -> 0.777 (in pixels), the
BMI band's 0.839 -> 0.701 -> 0.700, the diagnosis's 0.740 -> 0.723 -> 0.752 (the folds' noise).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd

from cardio_assets.frames.preprocess import slices_and_crop
from cardio_assets.phantom.anatomy import PatientParams
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.geometry import patient_geometry
from cardio_assets.phantom.render import chest_wall_edges
from cardio_assets.phantom.truth import truth_of

CHEST_WALL = ("chest_gap_mm", "chest_muscle_mm", "subcut_fat_mm")


def params_from_truth(row: dict) -> PatientParams:
    """The :class:`PatientParams` a truth.csv row was written from (`PatientParams.as_row`)."""
    values = {f.name: row[f.name] for f in fields(PatientParams)}
    icd10 = values["icd10"]
    values.update(eid=str(int(values["eid"])), subset=str(values["subset"]), site=str(values["site"]),
                  vendor=str(values["vendor"]), hf=bool(int(values["hf"])),
                  icd10="" if icd10 is None or (isinstance(icd10, float) and np.isnan(icd10)) else str(icd10))
    return PatientParams(**values)


def visible_chest_wall(params: PatientParams, config: PhantomConfig, crop_px: int, training: bool = False) -> dict[str, float]:
    """{chest-wall parameter: mm of that layer inside the patient's frame crop}. The crop is centred on
    the labels of the slices a patient's frames come from (`frames.preprocess.slices_and_crop`): the central
    one for validation and test patients, where the predictors are measured; with its neighbours for
    training patients (`training`), whose crop sits a pixel or two higher or lower."""
    g = patient_geometry(params, config)
    _, ed, es = truth_of(params, g)
    _, (x0, y0) = slices_and_crop(ed, es, training, crop_px)
    n = config.matrix
    # the crop in the image's (u, v) millimetres; rows and columns outside the image are padding
    rows = np.arange(max(y0, 0), min(y0 + crop_px, n))
    cols = np.arange(max(x0, 0), min(x0 + crop_px, n))
    if rows.size == 0 or cols.size == 0:
        return {name: 0.0 for name in CHEST_WALL}
    half = 0.5 * params.spacing_mm
    v_top = float(g.v[rows[0], 0]) - half
    v_bottom = float(g.v[rows[-1], 0]) + half
    u = g.u[0, cols]
    wall_inner, muscle_top, skin = chest_wall_edges(params, g, u)
    # each layer spans [outer, inner] in v (anterior is smaller v): the part of it within the crop's rows
    layers = {"chest_gap_mm": (wall_inner, np.full_like(u, g.heart_top_v)),
              "chest_muscle_mm": (muscle_top, wall_inner), "subcut_fat_mm": (skin, muscle_top)}
    return {name: float(np.mean(np.clip(np.minimum(inner, v_bottom) - np.maximum(outer, v_top), 0.0, None)))
            for name, (outer, inner) in layers.items()}


def in_frame_truth(truth: pd.DataFrame, config: PhantomConfig, crop_px: int) -> pd.DataFrame:
    """`truth` as its frames show it: each patient's chest-wall layers as far as its crop holds them;
    lengths in pixels (`*_mm` -> `*_px`) and volumes in voxels (`*_ml` -> `*_voxels`), since a frame is a
    crop of pixels, never resampled to millimetres; no pixel spacing or slice thickness, which a frame
    does not carry (the scanner's contrast and noise, which tell its vendor, stay)."""
    shown = pd.DataFrame([visible_chest_wall(params_from_truth(row), config, crop_px)
                          for row in truth.to_dict("records")], index=truth.index)
    out = truth.assign(**{name: shown[name] for name in CHEST_WALL})
    spacing, voxel_ml = out["spacing_mm"], out["spacing_mm"] ** 2 * out["slice_mm"] / 1000.0
    out = out.drop(columns=["spacing_mm", "slice_mm"])
    lengths = {c: c[: -len("_mm")] + "_px" for c in out.columns if c.endswith("_mm")}
    volumes = {c: c[: -len("_ml")] + "_voxels" for c in out.columns if c.endswith("_ml")}
    out = out.assign(**{c: out[c] / spacing for c in lengths}, **{c: out[c] / voxel_ml for c in volumes})
    return out.rename(columns={**lengths, **volumes})
