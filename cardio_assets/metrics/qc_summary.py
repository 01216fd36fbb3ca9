"""Quality control per cell: how many requested synthetic frames were kept, and against what.

A cell's pass rate alone does not say whether the generator or the check falls short. Each
synthetic frame is drawn on the masks of one real training frame, and the QC log records whether
that real frame passes the same check (`source_frame_qc_passed`): the share of a cell's items
whose source frame passes is the pass rate a generator that draws those masks exactly as the
real acquisition did would reach in one attempt. A cell whose source frames fail often (a
patient's apical slices with a small, low-contrast RV under thresholds calibrated on the whole
BMI band) is limited by its masks, not by the generator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QC_BY_SLICE_COLUMNS = ("source_slice_offset", "requested", "kept", "pass_rate", "first_attempt_pass_rate",
                       "source_frames_pass_rate", "pass_rate_where_source_passes")
QC_BY_CELL_COLUMNS = ("cell", "source_patients", "requested", "kept", "pass_rate", "first_attempt_pass_rate",
                      "source_frames_pass_rate", "pass_rate_where_source_passes", "pass_rate_where_source_fails",
                      "top_failure_mode")


def qc_by_cell(log: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of a synthetic QC log (`synthetic_qc_log`, all cells), lowest pass rate first."""
    rows = []
    for cell, items in log.groupby("cell", sort=True):
        passed = items["qc_passed"].astype(bool)
        source = items["source_frame_qc_passed"].astype(bool) if "source_frame_qc_passed" in items else None
        modes = items.loc[~passed, "failure_modes"].astype(str).str.split(";").explode().str.strip()
        modes = modes[modes != ""]
        rows.append({
            "cell": cell,
            "source_patients": items["source_hash"].nunique(),
            "requested": len(items),
            "kept": int(passed.sum()),
            "pass_rate": float(passed.mean()),
            "first_attempt_pass_rate": float((passed & (items["attempts"] == 1)).mean()),
            "source_frames_pass_rate": float(source.mean()) if source is not None else np.nan,
            "pass_rate_where_source_passes": _rate(passed[source]) if source is not None else np.nan,
            "pass_rate_where_source_fails": _rate(passed[~source]) if source is not None else np.nan,
            "top_failure_mode": modes.value_counts().index[0] if len(modes) else "",
        })
    table = pd.DataFrame(rows, columns=list(QC_BY_CELL_COLUMNS))
    return table.sort_values(["pass_rate", "cell"], kind="stable").reset_index(drop=True)


def _rate(passed: pd.Series) -> float:
    return float(passed.mean()) if len(passed) else np.nan


def qc_by_slice(log: pd.DataFrame) -> pd.DataFrame:
    """One row per slice offset of the masks' source frames (-1 basal neighbour, 0 central, +1 apical
    neighbour): on the demo, QC keeps nearly every synthetic frame of the central and basal slices and
    half of the apical ones, so the kept set holds fewer apical frames than the real one. Empty for a
    log written before 2026.12.2 (no `source_slice_offset`)."""
    if "source_slice_offset" not in log:
        return pd.DataFrame(columns=list(QC_BY_SLICE_COLUMNS))
    rows = []
    for offset, items in log.groupby("source_slice_offset", sort=True):
        passed, source = items["qc_passed"].astype(bool), items["source_frame_qc_passed"].astype(bool)
        rows.append({"source_slice_offset": int(offset), "requested": len(items), "kept": int(passed.sum()),
                     "pass_rate": float(passed.mean()), "first_attempt_pass_rate": float((passed & (items["attempts"] == 1)).mean()),
                     "source_frames_pass_rate": float(source.mean()), "pass_rate_where_source_passes": _rate(passed[source])})
    return pd.DataFrame(rows, columns=list(QC_BY_SLICE_COLUMNS))
