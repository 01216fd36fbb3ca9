"""A data lake on object storage (lake/object_store.py, lake/mirror.py), against a local S3 server
(cardio_assets_tests/s3_server.py). The end-to-end run keeps its lake there too (conftest.py)."""

import json

import numpy as np
import pandas as pd
import pytest

from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.generation.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from cardio_assets.lake import mirror
from cardio_assets.lake.atomic import atomic_dir, atomic_write_text
from cardio_assets.lake.object_store import ObjectStore
from cardio_assets.lake.values import FrameSet, read_value, write_value


@pytest.fixture
def machines(s3_options, tmp_path, request):
    """Two working copies of one lake in a fresh prefix of the bucket: two machines sharing it."""
    url = f"s3://cardio-lake/{request.node.name}"
    roots = [tmp_path / "machine_a", tmp_path / "machine_b"]
    for root in roots:
        mirror.attach(root, url, s3_options)
    yield url, roots
    for root in roots:
        mirror.detach(root)


def test_values_written_on_one_machine_are_read_on_another(machines, s3_options):
    url, (a, b) = machines
    table = pd.DataFrame({"patient_id": ["p1", "p2"], "x": [1.5, 2.5]})
    frames = FrameSet(pd.DataFrame({"patient_id": ["p1"]}), np.full((1, 3, 4, 4), 0.25, np.float16), np.ones((1, 3, 4, 4), np.uint8))
    write_value(a / "cohort", table)
    write_value(a / "frames" / "cell_1", frames)
    atomic_write_text(a / "reports" / "report.md", "# report\n")

    assert not (b / "cohort").exists()
    pd.testing.assert_frame_equal(read_value(mirror.fetched(b / "cohort")), table)
    np.testing.assert_array_equal(read_value(mirror.fetched(b / "frames" / "cell_1")).images, frames.images)
    assert mirror.fetched(b / "reports").joinpath("report.md").read_text() == "# report\n"  # a prefix, file by file

    # a newer value replaces the older copy; the store keeps one version of it
    write_value(a / "cohort", table.assign(x=[9.0, 9.5]))
    assert read_value(mirror.fetched(b / "cohort"))["x"].tolist() == [9.0, 9.5]
    store = ObjectStore(url, s3_options)
    assert len(store.fs.ls(f"{store.root}/cohort/.v")) == 1


def test_a_publish_killed_mid_upload_leaves_readers_the_previous_folder(machines, s3_options, monkeypatch):
    url, (a, b) = machines
    write_value(a / "splits", pd.DataFrame({"v": [1]}))
    store = mirror._ATTACHED[a.resolve()]
    real_put = store.fs.put_file

    def killed_after_upload(local, remote, **kwargs):
        real_put(local, remote, **kwargs)
        raise ConnectionError("pod killed after uploading a file")

    monkeypatch.setattr(store.fs, "put_file", killed_after_upload)
    with pytest.raises(ConnectionError):
        write_value(a / "splits", pd.DataFrame({"v": [2]}))
    monkeypatch.undo()

    assert read_value(mirror.fetched(b / "splits"))["v"].tolist() == [1]
    write_value(a / "splits", pd.DataFrame({"v": [3]}))  # the next publish removes the orphaned upload
    assert read_value(mirror.fetched(b / "splits"))["v"].tolist() == [3]
    assert len(ObjectStore(url, s3_options).fs.ls(f"{store.root}/splits/.v")) == 1


def test_two_machines_publishing_one_folder_at_once_leave_a_readable_current_version(machines, s3_options, monkeypatch):
    """Two partitions may build the same index at once: whichever publish switches `.current` last
    wins, and neither's clean-up deletes the version the other made current."""
    url, (a, b) = machines
    store_a = mirror._ATTACHED[a.resolve()]
    drop = store_a._drop_older_versions

    def b_publishes_in_between(key, mine):
        write_value(b / "index", pd.DataFrame({"by": ["b"]}))  # b uploads and switches after a's switch
        drop(key, mine)

    monkeypatch.setattr(store_a, "_drop_older_versions", b_publishes_in_between)
    write_value(a / "index", pd.DataFrame({"by": ["a"]}))
    monkeypatch.undo()
    fresh = a.parent / "machine_c"
    mirror.attach(fresh, url, s3_options)
    try:
        assert read_value(mirror.fetched(fresh / "index"))["by"].tolist() == ["b"]
    finally:
        mirror.detach(fresh)


def test_a_checkpoint_written_on_one_machine_resumes_on_another(machines):
    import torch

    _, (a, b) = machines
    model = torch.nn.Linear(3, 2)
    save_checkpoint(a / "models" / "controlnet", model, {"step": 40, "losses": [0.5, 0.4]})
    atomic_write_text(a / "models" / "controlnet" / "record.json", json.dumps({"steps": 40}))

    found = find_checkpoint(mirror.fetched(b / "models" / "controlnet"))
    assert found is not None
    other = torch.nn.Linear(3, 2)
    state = load_checkpoint(found, other)
    assert state["step"] == 40
    torch.testing.assert_close(other.weight, model.weight)
    assert json.loads((b / "models" / "controlnet" / "record.json").read_text()) == {"steps": 40}


def test_a_folder_fetched_is_not_downloaded_again_until_it_changes(machines, monkeypatch):
    _, (a, b) = machines
    write_value(a / "cells", pd.DataFrame({"v": [1]}))
    mirror.fetched(b / "cells")
    store = mirror._ATTACHED[b.resolve()]
    downloads = []
    real_get = store.fs.get_file
    monkeypatch.setattr(store.fs, "get_file", lambda *args, **kw: downloads.append(args[0]) or real_get(*args, **kw))
    mirror.fetched(b / "cells")
    assert downloads == []
    write_value(a / "cells", pd.DataFrame({"v": [2]}))
    mirror.fetched(b / "cells")
    assert len(downloads) == 1 and read_value(b / "cells")["v"].tolist() == [2]


def test_writes_inside_a_temporary_folder_are_published_with_it_not_alone(machines, s3_options):
    url, (a, _) = machines
    with atomic_dir(a / "models" / "backbone") as tmp:
        atomic_write_text(tmp / "record.json", "{}")  # as the backbone trainer writes its record
    store = ObjectStore(url, s3_options)
    keys = [k[len(store.root) + 1:] for k in store.fs.find(store.root)]
    assert [k for k in keys if ".tmp-" in k] == []
    assert any(k.startswith("models/backbone/.v/") and k.endswith("/record.json") for k in keys)


def test_settings_work_on_a_local_copy_of_a_lake_given_as_a_url(tmp_path, s3_options):
    settings = PipelineSettings(data_lake="s3://cardio-lake/settings", lake_cache=str(tmp_path / "copy"),
                                lake_storage_options=json.dumps(s3_options))
    try:
        assert settings.data_lake == "s3://cardio-lake/settings"  # not made into a local folder
        assert settings.models_dir() == tmp_path / "copy" / "models"
        atomic_write_text(settings.reports_dir() / "x.md", "x")
        assert ObjectStore(settings.data_lake, s3_options).fs.cat_file("cardio-lake/settings/reports/x.md") == b"x"
    finally:
        mirror.detach(tmp_path / "copy")
    local = PipelineSettings(data_lake=str(tmp_path / "lake"))
    assert local.lake_dir() == tmp_path / "lake" and mirror.attachments() == []
