"""Turning reader entries into cohort rows: open every volume once, check it, find ES.

`validate_entry` is the single gate every patient of every source passes. It returns
either a cohort row or a `QuarantineRow` naming the patient, the file and the problem;
it never raises for a bad patient, so one bad file cannot stop a run.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from cardio_assets.cohort.cells import AGE_RANGE, BMI_RANGE, age_band, bmi_band, cell_key_or_none
from cardio_assets.cohort.labels import LV, MYO, RV, LabelError
from cardio_assets.cohort.readers.base import PatientEntry, QuarantineRow, is_utf8, printable
from cardio_assets.cohort.volumes import AffineError, VolumeError, describe_affine, labelled_frames, load_cine, load_mask

FLOAT32_MAX = float(np.finfo(np.float32).max)

COHORT_COLUMNS = [
    "patient_id", "source", "subset", "vendor", "site", "sex", "age", "bmi", "diagnosis", "cell", "no_cell_reason",
    "age_band", "bmi_band", "image_path", "ed_mask_path", "ed_mask_frame", "es_mask_path",
    "es_mask_frame", "label_map", "ed_frame", "es_frame", "es_from", "es_agreement", "n_x", "n_y",
    "n_slices", "n_frames", "spacing_x", "spacing_y", "spacing_z", "lv_slices", "extra",
]
QUARANTINE_COLUMNS = ["patient_id", "source", "file", "reason", "detail"]


def validate_entry(entry: PatientEntry) -> dict | QuarantineRow:
    """A cohort row for a good patient, else the first problem found as a QuarantineRow."""

    def bad(file: str, reason: str, detail: str) -> QuarantineRow:
        return QuarantineRow(entry.patient_id, entry.source, file, reason, f"patient {entry.patient_id}: {detail}")

    # paths are stored in the cohort table (Parquet), which holds UTF-8 text only
    for path in (entry.image_path, entry.ed_mask.path, entry.es_mask.path, entry.metadata_ref):
        if not is_utf8(path):
            return bad(path, "undecodable_path",
                       f"the path {printable(path)} holds bytes that are not UTF-8 (shown as \\xNN; a folder or file named "
                       f"in Latin-1 or a Windows code page, as a zip made on Windows unpacks on Linux), so the cohort "
                       f"table cannot hold it: rename it in UTF-8 (e.g. convmv -f latin1 -t utf8 -r --notest <folder>)")
    for name, value, (lo, hi) in (("age", entry.age, AGE_RANGE), ("BMI", entry.bmi, BMI_RANGE)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
            where = entry.metadata_ref or "metadata"
            return bad(where, f"implausible_{name.lower()}", f"{name} {value!r} ({where}) outside the plausible range {lo}-{hi}")

    try:
        cine, affine, zooms = load_cine(entry.image_path)
    except AffineError as exc:
        return bad(entry.image_path, "nonfinite_affine", str(exc))
    except VolumeError as exc:
        return bad(entry.image_path, "unreadable_image", str(exc))
    if np.issubdtype(cine.dtype, np.floating) and cine.size:
        n_bad = int((~np.isfinite(cine)).sum())
        if n_bad:
            return bad(entry.image_path, "nonfinite_voxels", f"{n_bad} NaN/inf voxels in {entry.image_path}")
        peak = float(np.abs(cine).max())
        if peak > FLOAT32_MAX:  # the frames are float32: such a voxel would turn into inf there
            return bad(entry.image_path, "nonfinite_voxels",
                       f"voxel values up to {peak:.3g} in {entry.image_path}, beyond float32's range (frames are float32)")
    if cine.size and cine.min() == cine.max():  # an empty export: ES could only be guessed, wrongly
        return bad(entry.image_path, "blank_image", f"every voxel of the cine {entry.image_path} is {cine.flat[0]}")
    n_frames = cine.shape[3]
    if n_frames < 2:  # ES must be another frame than ED, or the ES channel repeats ED
        return bad(entry.image_path, "single_frame_cine", f"the cine {entry.image_path} has {n_frames} time frame; ED and ES need two")
    # one frame repeated (a conversion that copied it): nothing moves; frame 1 first, so a cine that
    # moves is not compared whole
    if (cine[..., 1] == cine[..., 0]).all() and (cine == cine[..., :1]).all():
        return bad(entry.image_path, "static_cine",
                   f"all {n_frames} time frames of the cine {entry.image_path} are the same image (one frame repeated): "
                   f"ES cannot be told from ED")
    # before the masks: an M&Ms mask is the frame the metadata names, so a frame past the
    # cine's end would otherwise read as an unreadable mask
    for phase, frame in (("ED", entry.ed_frame), ("ES", entry.es_frame)):
        if frame is not None and not 0 <= frame < n_frames:
            where = entry.metadata_ref or "metadata"
            return bad(entry.image_path, "frame_out_of_range",
                       f"{phase} frame {frame} ({where}) outside 0..{n_frames - 1}, the frames of the cine {entry.image_path}")
    # ACDC's Info.cfg counts the cine's frames (NbFrame): a cine with another count was cut short
    # by its conversion (or is another acquisition's), and was read as if whole, its ES looked for
    # among the frames that happen to be there
    nb_frames = entry.extra.get("nb_frames")
    if nb_frames is not None and nb_frames != n_frames:
        where = entry.metadata_ref or "metadata"
        return bad(entry.image_path, "frame_count_mismatch",
                   f"the cine {entry.image_path} has {n_frames} time frames, but {where} gives NbFrame {nb_frames}: "
                   f"a cine cut short by its conversion, or another acquisition's?")

    masks = {}
    for phase, ref in (("ED", entry.ed_mask), ("ES", entry.es_mask)):
        try:
            mask, mask_affine = load_mask(ref, entry.label_map)
        except AffineError as exc:
            return bad(ref.path, "nonfinite_affine", f"{phase} mask {exc}")
        except VolumeError as exc:
            return bad(ref.path, f"unreadable_{phase.lower()}_mask", str(exc))
        except LabelError as exc:
            return bad(ref.path, "labels_outside_canonical_set", f"{phase} mask {ref.path}: {exc}")
        if mask.shape != cine.shape[:3]:
            return bad(ref.path, "shape_mismatch", f"{phase} mask shape {mask.shape} differs from the cine's {cine.shape[:3]}")
        if not np.allclose(mask_affine, affine, atol=1e-3):
            # both in words: which of the two files is the odd one out is for the reader to see
            return bad(ref.path, "orientation_mismatch",
                       f"{phase} mask affine differs from the cine's (different orientation or spacing): the mask "
                       f"{ref.path} has {describe_affine(ref.path, mask_affine)}; the cine {entry.image_path} has "
                       f"{describe_affine(entry.image_path, affine)}")
        if not (mask == LV).any():
            return bad(ref.path, f"empty_{phase.lower()}_mask",
                       f"{phase} mask has no LV cavity voxels{_unlabelled_frame_note(entry, ref, phase, mask)}")
        problem = label_convention_problem(mask)
        if problem:
            return bad(ref.path, "labels_in_another_convention",
                       f"{phase} mask {ref.path}: {problem}; read with the label map {entry.label_map} "
                       f"(source label -> canonical 1 LV, 2 MYO, 3 RV)")
        masks[phase] = mask

    # ED is the largest LV cavity and ES the smallest: the other way round, ED and ES are swapped
    # (in the metadata, or the two mask files), and every ED channel would show ES
    n_ed, n_es = int((masks["ED"] == LV).sum()), int((masks["ES"] == LV).sum())
    if n_es > n_ed:
        swapped = entry.metadata_ref if entry.es_frame is not None and entry.metadata_ref else entry.es_mask.path
        return bad(swapped, "es_cavity_larger_than_ed",
                   f"the ES mask {entry.es_mask.path} has a larger LV cavity ({n_es} voxels) than the ED mask "
                   f"{entry.ed_mask.path} ({n_ed}); ED and ES look swapped (ED frame {entry.ed_frame}, "
                   f"ES frame {entry.es_frame if entry.es_frame is not None else 'from the images'}"
                   f"{', ' + entry.metadata_ref if entry.es_frame is not None and entry.metadata_ref else ''})")

    found = _es_frame(entry, cine, masks, bad)
    if isinstance(found, QuarantineRow):
        return found
    es_frame, es_from, agreement = found

    lv_slices = np.flatnonzero((masks["ED"] == LV).any(axis=(0, 1)))
    cell = cell_key_or_none(entry.sex, entry.age, entry.bmi, entry.diagnosis)
    return {
        "patient_id": entry.patient_id,
        "source": entry.source,
        "subset": entry.subset,
        "sex": entry.sex,
        "age": _float_or_nan(entry.age),
        "bmi": _float_or_nan(entry.bmi),
        "diagnosis": entry.diagnosis,
        "cell": cell,
        "no_cell_reason": None if cell else "; ".join(no_cell_reasons(entry)),
        "vendor": entry.vendor,
        "site": entry.site,
        "age_band": age_band(entry.age) if _finite(entry.age) else None,
        "bmi_band": bmi_band(entry.bmi) if _finite(entry.bmi) else None,
        "image_path": entry.image_path,
        "ed_mask_path": entry.ed_mask.path,
        "ed_mask_frame": entry.ed_mask.frame,
        "es_mask_path": entry.es_mask.path,
        "es_mask_frame": entry.es_mask.frame,
        "label_map": json.dumps({str(k): v for k, v in entry.label_map.items()}),
        "ed_frame": int(entry.ed_frame),
        "es_frame": int(es_frame),
        "es_from": es_from,
        "es_agreement": agreement,
        "n_x": int(cine.shape[0]),
        "n_y": int(cine.shape[1]),
        "n_slices": int(cine.shape[2]),
        "n_frames": int(n_frames),
        "spacing_x": zooms[0],
        "spacing_y": zooms[1],
        "spacing_z": zooms[2],
        "lv_slices": int(len(lv_slices)),
        "extra": json.dumps(entry.extra, default=str, sort_keys=True),
    }


def _unlabelled_frame_note(entry: PatientEntry, ref, phase: str, mask: np.ndarray) -> str:
    """Why a frame of a 4D label file (M&Ms, labelled at ED and ES only) has no LV: when it holds
    no label at all, the metadata's index points at a frame nobody labelled (1-based indices, or
    another release's), so the note names the frame, where its index came from and the frames
    that hold labels. "" for a 3D mask, or a frame with labels but no LV."""
    if ref.frame is None or mask.any():
        return ""
    try:
        frames = labelled_frames(ref.path)
    except VolumeError:  # it was just read: a file changed under the run says nothing here
        return ""
    if not frames:
        return ""
    where = f" (the {phase} index on {entry.metadata_ref})" if entry.metadata_ref else ""
    return (f": frame {ref.frame} of {ref.path}{where} holds no labels; the frames that do are "
            f"{', '.join(map(str, frames))} (frames are 0-based: are the table's ED and ES 1-based?)")


# The LV cavity is ringed by myocardium: in real short-axis segmentations nearly all of its
# in-plane border is myocardium (less only where basal slices open into the outflow tract),
# while the RV touches the myocardium only along the septum. Labels of another convention
# (ACDC's 1 RV 2 MYO 3 LV read as 1 LV 2 MYO 3 RV, or LV and MYO swapped) read the same
# set of values and would pass every other check, giving the RV (or the ring) as the LV.
MIN_LV_BORDER_MYO = 0.5


def _border_myo_share(mask: np.ndarray, label: int) -> float | None:
    """Share of the in-plane border voxels around `label` (4-neighbours outside it) that are
    myocardium; None when the label is absent."""
    region = mask == label
    if not region.any():
        return None
    border = np.zeros_like(region)
    border[1:] |= region[:-1]
    border[:-1] |= region[1:]
    border[:, 1:] |= region[:, :-1]
    border[:, :-1] |= region[:, 1:]
    border &= ~region
    n = int(border.sum())
    return float((mask[border] == MYO).sum()) / n if n else 0.0


def label_convention_problem(mask: np.ndarray) -> str | None:
    """Why a canonical label map does not look like 1 LV cavity, 2 MYO, 3 RV, else None."""
    lv, rv = _border_myo_share(mask, LV), _border_myo_share(mask, RV)
    if lv is None:
        return None
    if rv is not None and rv > lv:
        return (f"the myocardium rings label {RV} (RV; {rv:.0%} of its border) more than label {LV} "
                f"(LV cavity; {lv:.0%}): the LV and RV labels look swapped, as in a segmentation in "
                f"another label convention (e.g. ACDC's 1 RV, 2 MYO, 3 LV)")
    if lv < MIN_LV_BORDER_MYO:
        return (f"myocardium is only {lv:.0%} of the border of label {LV} (LV cavity; expected most of it): "
                f"the labels look like another convention (e.g. LV cavity and myocardium swapped)")
    return None


def no_cell_reasons(entry: PatientEntry) -> list[str]:
    """Why a patient has no cell: the attributes it lacks ("no age", ...). A patient is
    kept without a cell (it can still serve where no cell is needed) and counted."""
    reasons = []
    other_visit = set(entry.extra.get("other_visit_only", ()))
    for name, value in (("sex", entry.sex), ("age", entry.age), ("BMI", entry.bmi), ("diagnosis", entry.diagnosis)):
        if value is None:
            only_elsewhere = name.lower() in other_visit  # UK Biobank, instance fallback off
            why = entry.extra.get("bmi_undefined") if name == "BMI" else None  # e.g. "height 0"
            reasons.append(f"{name} only at another visit" if only_elsewhere else
                           f"no {name} ({why})" if why else f"no {name}")
    return reasons


def _es_frame(entry: PatientEntry, cine: np.ndarray, masks: dict, bad) -> tuple[int, str, float] | QuarantineRow:
    """(ES frame, where it came from, its Dice with the ES mask), or why there is none.

    Whatever the ES frame's source, an ES mask that agrees with no frame is quarantined:
    it belongs to another image (or none), so its frames would teach the wrong anatomy.
    """
    es_path = entry.es_mask.path
    try:
        dice, n_blood = es_agreement(cine, masks["ED"], masks["ES"], entry.ed_frame)
    except ValueError as exc:
        return bad(es_path, "es_not_found", f"cannot compare the ES mask with the frames: {exc}")
    best = int(np.argmax(dice))
    if dice[best] < MIN_ES_AGREEMENT:
        return bad(es_path, "es_mask_matches_no_frame",
                   f"the ES mask {es_path} agrees with no frame of {entry.image_path} "
                   f"(best Dice {dice[best]:.2f} at frame {best}, below {MIN_ES_AGREEMENT})")
    if entry.es_frame is None:
        es_frame, es_from = best_agreeing_frame(dice, n_blood), "images"
        if dice[entry.ed_frame] >= dice.max() - ES_TIE_DICE:  # e.g. the ED mask saved as ES
            return bad(es_path, "es_equals_ed",
                       f"the ES mask {es_path} agrees with the ED frame {entry.ed_frame} as well as with any frame "
                       f"(Dice {dice[entry.ed_frame]:.2f}, best {dice.max():.2f}), so ES cannot be told from ED")
    else:
        es_frame, es_from = int(entry.es_frame), "metadata"  # in range: checked with the cine
        # a table's es_frame next to a separate ES mask file (UK Biobank layout) can name
        # another frame than the one the mask was drawn on (1-based, or another export): the
        # G channel would then show another phase than its control mask
        if not _es_mask_is_of_es_frame(entry) and dice[es_frame] < dice.max() - ES_TIE_DICE:
            where = entry.metadata_ref or "metadata"
            return bad(where, "es_frame_disagrees_with_mask",
                       f"ES frame {es_frame} ({where}) agrees with the ES mask {es_path} less (Dice "
                       f"{dice[es_frame]:.2f}) than frame {best} does (Dice {dice[best]:.2f}); the ES frame "
                       f"is not the one the mask was drawn on (frames are 0-based)")
    if es_frame == entry.ed_frame:
        return bad(entry.image_path, "es_equals_ed", f"ES frame {es_frame} is the ED frame; the ES channel would repeat ED")
    return es_frame, es_from, float(dice[es_frame])


def _es_mask_is_of_es_frame(entry: PatientEntry) -> bool:
    """The reader took the ES mask from the ES frame itself, so the two cannot disagree: a
    frame of a 4D label file (M&Ms) or the ``_frameXX_gt`` file of frame ES (ACDC)."""
    if entry.es_mask.frame is not None:
        return entry.es_mask.frame == entry.es_frame
    return f"_frame{entry.es_frame + 1:02d}_gt." in Path(entry.es_mask.path).name


# ES is the frame whose blood pool agrees best with the ES mask's LV cavity (Dice).
# Below MIN_ES_AGREEMENT the ES mask matches no frame of the cine (another patient's mask,
# a misplaced or mislabelled file): on the phantom the best frame scores over 0.74 (demo)
# and 0.84 (smoke); the test cartoon's ES mask moved by its cavity's radius scores 0.41.
MIN_ES_AGREEMENT = 0.5
# Frames within this Dice of the best one agree equally well: the frames around ES differ
# by a few voxels at the cavity's rim, where noise decides which side of the threshold a
# voxel falls (on the demo phantom the true ES scores up to 0.03 below the best frame;
# the ED frame at least 0.2 below). Among them ES is the one with the least blood, as ES
# is the smallest cavity: exact on the smoke phantom, 177 of 180 demo patients (the
# count of bright voxels alone, used before, scored the same without reading the ES mask).
ES_TIE_DICE = 0.05


def es_agreement(cine: np.ndarray, ed_mask: np.ndarray, es_mask: np.ndarray, ed_frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the Dice between its blood voxels and the ES mask's LV cavity, and the
    number of blood voxels.

    Blood voxels: inside the ED LV cavity (the largest the cavity gets), brighter than
    halfway between blood and myocardium as seen at ED (bright-blood cine MRI). The region
    is not grown: as the wall contracts, bright epicardial fat moves over the voxels just
    outside the ED cavity. ES cavity voxels outside the ED cavity still count in the
    Dice's denominator, so a misplaced ES mask scores low.
    """
    cavity, myo, es_cavity = ed_mask == LV, ed_mask == MYO, es_mask == LV
    if not cavity.any() or not myo.any() or not es_cavity.any():
        raise ValueError("the ED mask needs LV cavity and myocardium voxels and the ES mask LV cavity voxels")
    ed = cine[..., ed_frame].astype(np.float32)
    threshold = 0.5 * (ed[cavity].mean() + ed[myo].mean())
    blood = np.moveaxis(cine, 3, 0)[:, cavity] > threshold  # (T, voxels of the ED cavity)
    n_blood = blood.sum(axis=1)
    dice = 2.0 * (blood & es_cavity[cavity]).sum(axis=1) / (n_blood + es_cavity.sum())
    return dice, n_blood


def best_agreeing_frame(dice: np.ndarray, n_blood: np.ndarray) -> int:
    """Of the frames within `ES_TIE_DICE` of the best Dice, the one with the least blood."""
    near_best = np.flatnonzero(dice >= dice.max() - ES_TIE_DICE)
    return int(near_best[np.argmin(n_blood[near_best])])


def estimate_es_frame(cine: np.ndarray, ed_mask: np.ndarray, es_mask: np.ndarray, ed_frame: int = 0) -> int:
    """The frame that agrees best with the ES segmentation (see `es_agreement`)."""
    return best_agreeing_frame(*es_agreement(cine, ed_mask, es_mask, ed_frame))


def validate_entries(entries: list[PatientEntry], workers: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate all entries (in parallel processes when workers > 1); (cohort, quarantine)."""
    if workers > 1 and len(entries) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(validate_entry, entries, chunksize=8))
    else:
        results = [validate_entry(e) for e in entries]
    rows = [r for r in results if isinstance(r, dict)]
    bad = [r.as_dict() for r in results if isinstance(r, QuarantineRow)]
    return cohort_frame(rows), quarantine_frame(bad)


def drop_duplicate_ids(cohort: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first row of an id seen twice across sources; the others go to quarantine."""
    dup = cohort["patient_id"].duplicated(keep="first")
    rows = [
        {"patient_id": r.patient_id, "source": r.source, "file": r.image_path, "reason": "duplicate_id",
         "detail": f"patient {r.patient_id}: id already used by another patient in this cohort"}
        for r in cohort[dup].itertuples()
    ]
    return cohort[~dup].reset_index(drop=True), quarantine_frame(rows)


def cohort_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COHORT_COLUMNS)
    for col in ("ed_mask_frame", "es_mask_frame"):
        frame[col] = frame[col].astype("Int64")
    for col in ("age", "bmi", "es_agreement", "spacing_x", "spacing_y", "spacing_z"):
        frame[col] = frame[col].astype("float64")
    for col in ("vendor", "site"):
        frame[col] = frame[col].astype("string")
    return frame.sort_values("patient_id", kind="stable").reset_index(drop=True)


def quarantine_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=QUARANTINE_COLUMNS).astype("string")


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _float_or_nan(value) -> float:
    return float(value) if _finite(value) else float("nan")
