"""What the frames' crop shows of the phantom's chest wall, and the ceiling computed on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardio_assets.frames.preprocess import FrameSpec, make_frames
from cardio_assets.phantom.anatomy import sample_anatomy
from cardio_assets.phantom.ceiling import attribute_ceiling
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.geometry import patient_geometry
from cardio_assets.phantom.in_frame import CHEST_WALL, in_frame_truth, params_from_truth, visible_chest_wall
from cardio_assets.phantom.population import sample_heldout_attributes
from cardio_assets.phantom.render import chest_wall_edges
from cardio_assets.phantom.truth import patient_truth

DEMO_GRID = PhantomConfig(n_patients=10, heldout_per_cell=4, difficulty=0.9, seed=3)  # the demo's 80 px, 6 slices


def _patients(config: PhantomConfig) -> list:
    return [sample_anatomy(a, config) for a in sample_heldout_attributes(config.heldout_per_cell, config.seed)]


def _muscle_in_frame(params, config: PhantomConfig, crop_px: int, training: bool) -> float:
    """The muscle layer painted as an image and put through the frames' own crop: mm per column of the crop
    (columns inside the image), measured on pixels, independently of `visible_chest_wall`'s arithmetic."""
    g = patient_geometry(params, config)
    wall_inner, muscle_top, _ = chest_wall_edges(params, g, g.u)
    muscle = ((g.v > muscle_top) & (g.v < wall_inner)).astype(np.float32)  # (Y, X)
    muscle[0, 0], muscle[-1, -1] = 0.0, 1.0  # both values present: the frames' min-max scaling keeps it binary
    _, ed, es = patient_truth(params, config)
    cine = np.repeat(muscle.T[:, :, None, None], ed.shape[2], axis=2).repeat(config.n_frames, axis=3)
    frame = make_frames(cine, ed, es, 0, 1, training=training, spec=FrameSpec(crop_px=crop_px, size=crop_px))
    shown = frame.images[0, 0].astype(np.float32) > 0.5  # (row = v, col = u); the same crop for every slice
    painted = shown.sum(axis=0)
    columns = painted[painted.size // 8 : -painted.size // 8]  # away from the corners marked above
    return float(columns.mean()) * params.spacing_mm


def test_the_chest_wall_in_frame_matches_the_crop_of_the_painted_layer_and_never_exceeds_the_parameter():
    for params in _patients(DEMO_GRID)[:12]:
        shown = visible_chest_wall(params, DEMO_GRID, crop_px=64)
        for name in CHEST_WALL:
            assert 0.0 <= shown[name] <= getattr(params, name) + 1e-4, (params.eid, name, shown)
        # the same layer measured on the cropped pixels: within a pixel (the crop's columns differ at the ends),
        # for the crop of evaluation frames (central slice) and of training frames (with its neighbours)
        for training in (False, True):
            measured = visible_chest_wall(params, DEMO_GRID, crop_px=64, training=training)["chest_muscle_mm"]
            assert measured == pytest.approx(_muscle_in_frame(params, DEMO_GRID, 64, training), abs=1.2 * params.spacing_mm)
    # a crop as large as the image shows at least as much of every layer as the demo's 64 px
    params = _patients(DEMO_GRID)[0]
    small, large = visible_chest_wall(params, DEMO_GRID, 48), visible_chest_wall(params, DEMO_GRID, 80)
    assert all(large[name] >= small[name] for name in CHEST_WALL)


def test_a_truth_row_gives_back_the_parameters_it_was_written_from():
    params = _patients(DEMO_GRID)[5]
    row = pd.DataFrame([patient_truth(params, DEMO_GRID)[0]]).to_dict("records")[0]
    assert params_from_truth(row) == params


def test_the_ceiling_in_frames_loses_the_bmi_signal_the_crop_leaves_out():
    config = PhantomConfig(n_patients=10, heldout_per_cell=12, difficulty=0.9, seed=5)  # 432 patients, every cell
    truth = pd.DataFrame([patient_truth(p, config)[0] for p in _patients(config)])
    in_frames = in_frame_truth(truth, config, crop_px=64)
    fat_in_frame_mm = in_frames["subcut_fat_px"] * truth["spacing_mm"]
    assert (fat_in_frame_mm <= truth["subcut_fat_mm"] + 1e-4).all()
    assert fat_in_frame_mm.median() < 0.25 * truth["subcut_fat_mm"].median()  # the fat lies above the crop
    # sizes in the frame's pixels and voxels; no spacing or slice thickness, which a frame does not carry
    assert np.allclose(in_frames["lv_radius_px"], truth["lv_radius_mm"] / truth["spacing_mm"])
    assert np.allclose(in_frames["lv_edv_voxels"], truth["lv_edv_ml"] * 1000.0 / (truth["spacing_mm"] ** 2 * truth["slice_mm"]))
    assert not {"spacing_mm", "slice_mm", "lv_radius_mm"} & set(in_frames.columns)
    every_parameter, what_frames_show = attribute_ceiling(truth), attribute_ceiling(in_frames)
    assert what_frames_show["bmi_band"] < every_parameter["bmi_band"] - 0.05
    # the heart itself is all in the frame: the diagnosis's ceiling does not move beyond the folds' noise
    assert what_frames_show["diagnosis"] == pytest.approx(every_parameter["diagnosis"], abs=0.03)
