"""The paper's frame format, made from one patient's cine and ED/ES label maps.

An image is a 2D RGB array of one short-axis slice: R = ED frame, G = ES frame,
B = ED frame again. The control image stacks the ED and ES label maps the same way.
Steps: crop a square of `crop_px` pixels centred on the bounding box of the heart's
labels, min-max the three channels together to [0, 1] (so ED and ES keep their
relative brightness), resize to `size`. Training patients give 9 images (3 central
slices x frame offsets -1, 0, +1 around ED and ES, the cycle wrapping around);
validation, test and held-out patients give 1 (central slice, ED/ES).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from cardio_assets.cohort.labels import LV
from cardio_assets.cohort.readers.base import MaskRef
from cardio_assets.cohort.volumes import load_cine, load_mask

TRAIN_SLICE_OFFSETS = (-1, 0, 1)
TRAIN_FRAME_OFFSETS = (-1, 0, 1)


@dataclass(frozen=True)
class FrameSpec:
    crop_px: int = 120  # the paper's crop, in pixels of the source image
    size: int = 224  # output size (224 classifier, 512 Stable Diffusion)


@dataclass(frozen=True)
class PatientFrames:
    images: np.ndarray  # float16 (k, 3, size, size) in [0, 1]
    controls: np.ndarray  # uint8 (k, 3, size, size) canonical labels
    slices: list[int]  # slice index of each image
    slice_offsets: list[int]
    frame_offsets: list[int]


def central_slice(ed_mask: np.ndarray) -> int:
    """The middle of the slices that hold LV cavity at ED."""
    lv = np.flatnonzero((ed_mask == LV).any(axis=(0, 1)))
    if len(lv) == 0:
        raise ValueError("ED mask has no LV cavity voxels")
    return int(lv[len(lv) // 2])


def crop_box(masks: list[np.ndarray], crop_px: int) -> tuple[int, int]:
    """Top-left corner (x0, y0) of a crop_px square centred on the labels' bounding box."""
    union = np.zeros(masks[0].shape[:2], dtype=bool)
    for m in masks:
        union |= m.any(axis=2) if m.ndim == 3 else m > 0
    xs, ys = np.nonzero(union)
    cx = (xs.min() + xs.max() + 1) // 2
    cy = (ys.min() + ys.max() + 1) // 2
    return int(cx - crop_px // 2), int(cy - crop_px // 2)


def _crop(plane: np.ndarray, x0: int, y0: int, crop_px: int, fill) -> np.ndarray:
    """Crop (x, y) plane, padding with `fill` where the square leaves the image."""
    out = np.full((crop_px, crop_px), fill, dtype=plane.dtype)
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + crop_px, plane.shape[0]), min(y0 + crop_px, plane.shape[1])
    if xe > xs and ye > ys:
        out[xs - x0 : xe - x0, ys - y0 : ye - y0] = plane[xs:xe, ys:ye]
    return out


def slices_and_crop(ed_mask: np.ndarray, es_mask: np.ndarray, training: bool, crop_px: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """The slices a patient's frames come from, as (offset from the central slice, slice index): the
    central one, with its neighbours for training patients; and the top-left corner of the crop,
    centred on those slices' labels at ED and ES."""
    centre = central_slice(ed_mask)
    offsets = TRAIN_SLICE_OFFSETS if training else (0,)
    picks = [(o, centre + o) for o in offsets if 0 <= centre + o < ed_mask.shape[2]]
    slices = [z for _, z in picks]
    return picks, crop_box([ed_mask[:, :, slices], es_mask[:, :, slices]], crop_px)


def make_frames(
    cine: np.ndarray,
    ed_mask: np.ndarray,
    es_mask: np.ndarray,
    ed_frame: int,
    es_frame: int,
    training: bool,
    spec: FrameSpec,
) -> PatientFrames:
    """All images of one patient in the paper's format (see module docstring)."""
    n_frames = cine.shape[3]
    frame_offsets = TRAIN_FRAME_OFFSETS if training else (0,)
    picks, (x0, y0) = slices_and_crop(ed_mask, es_mask, training, spec.crop_px)

    images, controls, slices, s_offs, f_offs = [], [], [], [], []
    for s_off, z in picks:
        label_ed = _crop(ed_mask[:, :, z], x0, y0, spec.crop_px, 0)
        label_es = _crop(es_mask[:, :, z], x0, y0, spec.crop_px, 0)
        control = np.stack([label_ed, label_es, label_ed])
        for f_off in frame_offsets:
            ed = cine[:, :, z, (ed_frame + f_off) % n_frames]
            es = cine[:, :, z, (es_frame + f_off) % n_frames]
            fill = min(ed.min(), es.min())
            rgb = np.stack([_crop(p, x0, y0, spec.crop_px, fill) for p in (ed, es, ed)]).astype(np.float32)
            lo, hi = float(rgb.min()), float(rgb.max())
            rgb = (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)
            images.append(rgb)
            controls.append(control)
            slices.append(z)
            s_offs.append(s_off)
            f_offs.append(f_off)
    # (x, y) planes -> (row = y, col = x) images, the usual radiological display
    images_out = np.stack([[resize_image(c.T, spec.size) for c in rgb] for rgb in images])
    controls_out = np.stack([[_resize_labels(c.T, spec.size) for c in ctrl] for ctrl in controls])
    return PatientFrames(
        images=np.clip(images_out, 0, 1).astype(np.float16),
        controls=controls_out.astype(np.uint8),
        slices=slices,
        slice_offsets=s_offs,
        frame_offsets=f_offs,
    )


def resize_image(plane: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (antialiased when shrinking) of a float plane, with Pillow.

    Pillow rather than torch: these are many tiny single-threaded calls, where torch's
    per-call and thread-pool overhead costs more than the arithmetic.
    """
    if plane.shape == (size, size):
        return plane
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize((size, size), Image.BILINEAR))


def _resize_labels(plane: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a label plane (pixel centres mapped, as 'nearest-exact')."""
    if plane.shape == (size, size):
        return plane
    rows = ((np.arange(size) + 0.5) * plane.shape[0] / size).astype(np.int64)
    cols = ((np.arange(size) + 0.5) * plane.shape[1] / size).astype(np.int64)
    return plane[np.ix_(rows, cols)]


def frames_for_row(row: dict, training: bool, spec: FrameSpec) -> PatientFrames:
    """Read one cohort row's files and make its frames (used by the `frames` asset)."""
    label_map = {int(k): v for k, v in json.loads(row["label_map"]).items()}
    cine, _, _ = load_cine(row["image_path"])
    ed_mask, _ = load_mask(MaskRef(row["ed_mask_path"], _opt_int(row["ed_mask_frame"])), label_map)
    es_mask, _ = load_mask(MaskRef(row["es_mask_path"], _opt_int(row["es_mask_frame"])), label_map)
    return make_frames(cine, ed_mask, es_mask, int(row["ed_frame"]), int(row["es_frame"]), training, spec)


def _opt_int(value) -> int | None:  # pandas gives <NA> for a missing Int64
    return None if value is None or pd.isna(value) else int(value)
