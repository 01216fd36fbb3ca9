import numpy as np
import pytest

from cardio_assets.cohort.labels import LV, MYO, RV
from cardio_assets.cohort.validation import estimate_es_frame
from cardio_assets.frames.preprocess import FrameSpec, central_slice, make_frames


def _heart(shape=(40, 40, 5, 10), es=4, centre=(20, 20)):
    """A disk LV that shrinks to frame `es`, a ring myocardium, an RV blob; cine and ED/ES masks."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - centre[0], y - centre[1])
    cine = np.full(shape, 100, np.int16)
    masks = {}
    for t in range(shape[3]):
        radius = 8 - 3 * np.cos(np.pi * min(t, 2 * es - t if t <= 2 * es else 0) / (2 * es)) ** 0 * (1 - abs(t - es) / es if t <= 2 * es else 0)
        epi = np.sqrt(radius**2 + 60)
        plane = np.where(r < radius, 250, np.where(r < epi, 60, 100)).astype(np.int16)
        plane[(x > centre[0] + epi) & (x < centre[0] + epi + 4) & (abs(y - centre[1]) < 5)] = 240
        label = np.where(r < radius, LV, np.where(r < epi, MYO, 0)).astype(np.uint8)
        label[(x > centre[0] + epi) & (x < centre[0] + epi + 4) & (abs(y - centre[1]) < 5)] = RV
        for z in range(1, shape[2] - 1):  # no heart in the first and last slice
            cine[:, :, z, t] = plane
            if t in (0, es):
                masks.setdefault(t, np.zeros(shape[:3], np.uint8))[:, :, z] = label
    return cine, masks[0], masks[es]


def test_es_frame_is_found_from_the_images():
    cine, ed_mask, es_mask = _heart(es=4)
    assert estimate_es_frame(cine, ed_mask, es_mask) == 4


def test_training_patient_gives_nine_images_in_the_paper_format():
    cine, ed, es = _heart()
    spec = FrameSpec(crop_px=32, size=24)
    out = make_frames(cine, ed, es, ed_frame=0, es_frame=4, training=True, spec=spec)
    assert out.images.shape == (9, 3, 24, 24) and out.images.dtype == np.float16
    assert out.controls.shape == (9, 3, 24, 24) and out.controls.dtype == np.uint8
    assert central_slice(ed) == 2 and sorted(set(out.slices)) == [1, 2, 3]
    assert sorted(zip(out.slice_offsets, out.frame_offsets)) == [(s, f) for s in (-1, 0, 1) for f in (-1, 0, 1)]
    images = out.images.astype(np.float32)
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(images[:, 0], images[:, 2])  # B = R = ED
    np.testing.assert_array_equal(out.controls[:, 0], out.controls[:, 2])
    assert set(np.unique(out.controls).tolist()) <= {0, 1, 2, 3}
    # ES has the smaller cavity: fewer LV pixels in the ES channel of the control image
    assert (out.controls[:, 1] == LV).sum() < (out.controls[:, 0] == LV).sum()


def test_evaluation_patient_gives_one_central_image_at_ed_es():
    cine, ed, es = _heart()
    out = make_frames(cine, ed, es, 0, 4, training=False, spec=FrameSpec(crop_px=32, size=32))
    assert out.images.shape == (1, 3, 32, 32)
    assert out.slices == [2] and out.frame_offsets == [0]


def test_neighbour_frames_wrap_around_the_cycle():
    cine, ed, es = _heart()
    cine[:, :, :, -1] = 0  # mark the last frame: ED-1 must be it
    cine[:, :, :, -1][0, 0] = 1
    out = make_frames(cine, ed, es, 0, 4, training=True, spec=FrameSpec(crop_px=40, size=40))
    ed_minus_one = [i for i, f in enumerate(out.frame_offsets) if f == -1]
    assert all(out.images[i, 0].astype(np.float32).max() <= 1.0 for i in ed_minus_one)
    assert all(float(out.images[i, 0].astype(np.float32).mean()) < 0.05 for i in ed_minus_one)


def test_crop_near_the_border_is_padded_not_shifted():
    cine, ed, es = _heart(shape=(40, 40, 5, 10), centre=(8, 20))
    out = make_frames(cine, ed, es, 0, 4, training=False, spec=FrameSpec(crop_px=36, size=36))
    # labels span x = 0..23, so the crop starts at x = 12 - 18 = -6: image columns 0..5 are padding
    assert (out.controls[0][:, :, :6] == 0).all()
    assert (out.images[0][:, :, :6] == 0).all()
    assert (out.controls[0][:, :, 6] > 0).any()  # the image's first column follows the padding


def test_a_mask_without_lv_is_an_error():
    cine, ed, es = _heart()
    with pytest.raises(ValueError, match="no LV"):
        make_frames(cine, np.zeros_like(ed), es, 0, 4, training=False, spec=FrameSpec(32, 32))
