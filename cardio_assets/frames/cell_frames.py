"""Making the frames of one cell: every patient of the cell, in the paper's format."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
import pandas as pd

from cardio_assets.cohort.cells import prompt
from cardio_assets.cohort.volumes import VolumeError
from cardio_assets.frames.preprocess import FrameSpec, PatientFrames, frames_for_row
from cardio_assets.lake.values import FrameSet

INDEX_COLUMNS = [
    "patient_id", "source", "split", "cell", "sex", "age", "bmi", "age_band", "bmi_band", "diagnosis",
    "prompt", "slice", "slice_offset", "frame_offset", "ed_frame", "es_frame", "synthetic",
]


class FrameError(RuntimeError):
    """Making one patient's frames failed; the message names the patient and the file."""


def _patient_frames(row: dict, spec: FrameSpec) -> PatientFrames:
    try:
        return frames_for_row(row, training=row["split"] == "train", spec=spec)
    except (VolumeError, ValueError) as exc:
        raise FrameError(f"patient {row['patient_id']} ({row['image_path']}): {exc}") from exc


def build_cell_frames(patients: pd.DataFrame, spec: FrameSpec, workers: int = 1) -> FrameSet:
    """Frames of all `patients` (cohort rows joined with their split), in patient order."""
    rows = patients.sort_values("patient_id").to_dict("records")
    make = partial(_patient_frames, spec=spec)
    if workers > 1 and len(rows) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(make, rows, chunksize=4))
    else:
        results = [make(r) for r in rows]

    index_rows = []
    for row, result in zip(rows, results):
        text = prompt(row["sex"], row["age"], row["bmi"], row["diagnosis"])
        for z, s_off, f_off in zip(result.slices, result.slice_offsets, result.frame_offsets):
            index_rows.append({
                **{k: row[k] for k in ("patient_id", "source", "split", "cell", "sex", "age", "bmi", "age_band", "bmi_band", "diagnosis", "ed_frame", "es_frame")},
                "prompt": text, "slice": z, "slice_offset": s_off, "frame_offset": f_off, "synthetic": False,
            })
    shape = (0, 3, spec.size, spec.size)
    images = np.concatenate([r.images for r in results]) if results else np.zeros(shape, np.float16)
    controls = np.concatenate([r.controls for r in results]) if results else np.zeros(shape, np.uint8)
    return FrameSet(index=pd.DataFrame(index_rows, columns=INDEX_COLUMNS), images=images, controls=controls)
