"""One phantom patient's ground truth, measured on the very geometry its images are drawn from.

ES is found as a reader would find it (the frame of smallest LV cavity), volumes are voxel
counts on the written masks, and the truth row carries every :class:`PatientParams`
field too, so a result can be traced back to the geometry that caused it.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from cardio_assets.cohort.labels import RV
from cardio_assets.phantom.anatomy import PatientParams
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.geometry import Geometry, label_maps, lv_voxels_per_frame, patient_geometry
from cardio_assets.phantom.population import PatientAttributes

TRUTH_MEASURED = ("eid", "es_frame", "ef", "lv_edv_ml", "lv_esv_ml", "rv_edv_ml", "rv_esv_ml",
                  "myo_thickness_mm", "fat_mm", "hf", "sex", "age", "bmi", "cell")


def truth_columns() -> list[str]:
    """truth.csv columns: the measured ground truth first, then every other parameter."""
    rest = [f.name for f in fields(PatientParams) if f.name not in TRUTH_MEASURED]
    return list(TRUTH_MEASURED) + rest


def patient_truth(params: PatientParams, config: PhantomConfig) -> tuple[dict, np.ndarray, np.ndarray]:
    """Ground truth and the ED/ES label maps (X, Y, Z), without rendering the image.

    ES is the first frame of smallest LV cavity voxel count, as a reader would find it;
    by construction it is ``es_frame_design`` (checked by the tests). Volumes are voxel
    counts times voxel volume on these exact masks, and ``ef`` is computed from them.
    """
    return truth_of(params, patient_geometry(params, config))


def truth_of(params: PatientParams, g: Geometry) -> tuple[dict, np.ndarray, np.ndarray]:
    """:func:`patient_truth` on a geometry already built (the renderer's)."""
    counts = lv_voxels_per_frame(g)
    es = int(np.argmin(counts))
    lab = label_maps(g, np.array([0, es]))
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
