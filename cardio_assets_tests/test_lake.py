import numpy as np
import pandas as pd
import pytest

from cardio_assets.lake.atomic import atomic_dir, recover, remove_leftovers
from cardio_assets.lake.values import FrameSet, content_hash, read_value, write_value


def test_values_round_trip_in_open_formats(tmp_path):
    table = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    write_value(tmp_path / "t", table)
    pd.testing.assert_frame_equal(read_value(tmp_path / "t"), table)
    assert (tmp_path / "t" / "table.parquet").is_file()

    frames = FrameSet(pd.DataFrame({"patient_id": ["p1"]}), np.full((1, 3, 4, 4), 0.5, np.float16), np.ones((1, 3, 4, 4), np.uint8))
    write_value(tmp_path / "f", frames)
    loaded = read_value(tmp_path / "f")
    assert isinstance(loaded.images, np.memmap)  # memory-mapped, not loaded
    np.testing.assert_array_equal(loaded.images, frames.images)
    np.testing.assert_array_equal(loaded.controls, frames.controls)

    write_value(tmp_path / "d", {"k": [1, 2]})
    assert read_value(tmp_path / "d") == {"k": [1, 2]}


def test_a_failed_write_leaves_the_previous_value_in_place(tmp_path):
    write_value(tmp_path / "t", pd.DataFrame({"a": [1]}))
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "t") as tmp:
            (tmp / "table.parquet").write_text("half-written")
            raise RuntimeError("killed mid-write")
    assert read_value(tmp_path / "t")["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no temporary folder left behind


def test_unknown_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="DataFrame, FrameSet or dict"):
        write_value(tmp_path / "x", [1, 2, 3])


def test_content_hash_follows_content_not_files(tmp_path):
    frames = FrameSet(pd.DataFrame({"patient_id": ["p1", "p2"], "tags": [["a"], ["b"]]}),
                      np.full((2, 3, 4, 4), 0.5, np.float16), np.ones((2, 3, 4, 4), np.uint8))
    write_value(tmp_path / "f", frames)
    # a stored copy (memory-mapped) hashes like the value it came from
    assert content_hash(read_value(tmp_path / "f")) == content_hash(frames)
    changed = FrameSet(frames.index, frames.images.copy(), frames.controls)
    changed.images[1, 2, 3, 3] = 0.25
    assert content_hash(changed) != content_hash(frames)
    relabelled = FrameSet(frames.index.assign(patient_id=["p1", "p3"]), frames.images, frames.controls)
    assert content_hash(relabelled) != content_hash(frames)

    table = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    assert content_hash(table) == content_hash(table.copy())
    assert content_hash(table) != content_hash(table.astype({"a": float}))  # dtype is content too
    assert content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})
    with pytest.raises(TypeError, match="no content hash"):
        content_hash([1, 2])


def test_recover_puts_back_a_folder_set_aside_by_an_interrupted_swap(tmp_path):
    target = tmp_path / "checkpoint"
    aside = tmp_path / ".checkpoint.old-1234abcd"  # killed between atomic_dir's two renames
    aside.mkdir()
    (aside / "COMPLETE").write_text("7")
    half = tmp_path / ".checkpoint.tmp-99999999"  # and a half-written new one
    half.mkdir()
    assert recover(target) == target
    assert (target / "COMPLETE").read_text() == "7"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert recover(tmp_path / "never_written") is None


def test_remove_leftovers_clears_temporaries_at_any_depth_and_keeps_the_rest(tmp_path):
    (tmp_path / "a" / ".x.tmp-1").mkdir(parents=True)
    (tmp_path / "a" / ".y.csv.tmp-2.csv").write_text("half")
    (tmp_path / "a" / "y.csv").write_text("whole")
    remove_leftovers(tmp_path)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["y.csv"]
