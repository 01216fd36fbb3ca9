"""The data lake: one folder per asset, one sub-folder per partition, written atomically.

Every asset value is stored as a folder in formats other tools read:
- a pandas DataFrame as `table.parquet`;
- a `FrameSet` (images of one cell) as `index.parquet`, `images.npy`, `controls.npy`;
- a JSON-able dict as `value.json`.
A value is written into a temporary sibling folder and swapped into place with a
rename, so a killed run leaves the previous good output where it was. Loading a
FrameSet memory-maps its arrays: a downstream asset reading all 36 cells holds an index
in memory, not the images.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext, UPathIOManager
from upath import UPath


@dataclass
class FrameSet:
    """The frames of one cell: an index row per image, and two aligned image arrays."""

    index: pd.DataFrame
    images: np.ndarray  # float16 (N, 3, H, W) in [0, 1]
    controls: np.ndarray  # uint8 (N, 3, H, W) canonical labels

    def __len__(self) -> int:
        return len(self.index)


@contextmanager
def atomic_dir(target: Path):
    """Yield a temporary folder; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_file(path: Path, write) -> Path:
    """`write(tmp)` a temporary sibling, then rename it over `path`; returns the path.

    The sibling is opened like any new file (mode from the umask), unlike `tempfile.mkstemp`'s
    0600, so the result has the permissions of every other output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write a text file through a temporary sibling and a rename; returns the path."""
    return atomic_write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_value(folder: Path, value) -> None:
    """Write an asset value into `folder` atomically (see module docstring for formats)."""
    with atomic_dir(folder) as tmp:
        if isinstance(value, pd.DataFrame):
            value.to_parquet(tmp / "table.parquet", index=False)
        elif isinstance(value, FrameSet):
            value.index.to_parquet(tmp / "index.parquet", index=False)
            np.save(tmp / "images.npy", np.ascontiguousarray(value.images))
            np.save(tmp / "controls.npy", np.ascontiguousarray(value.controls))
        elif isinstance(value, dict):
            (tmp / "value.json").write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
        else:
            raise TypeError(f"the data lake stores DataFrame, FrameSet or dict values, not {type(value).__name__}")


def read_value(folder: Path):
    folder = Path(folder)
    if (folder / "table.parquet").exists():
        return pd.read_parquet(folder / "table.parquet")
    if (folder / "index.parquet").exists():
        return FrameSet(
            index=pd.read_parquet(folder / "index.parquet"),
            images=np.load(folder / "images.npy", mmap_mode="r"),
            controls=np.load(folder / "controls.npy", mmap_mode="r"),
        )
    if (folder / "value.json").exists():
        return json.loads((folder / "value.json").read_text())
    raise FileNotFoundError(f"no stored asset value in {folder}")


class LakeStore(UPathIOManager):
    """Dagster's UPath IO manager with our folder-per-value formats.

    The atomic swap uses local renames; on object storage (an s3:// base) the same
    formats are written but without the rename guarantee.
    """

    extension = ""

    def dump_to_path(self, context: OutputContext, obj, path: UPath) -> None:
        write_value(Path(str(path)), obj)

    def load_from_path(self, context: InputContext, path: UPath):
        return read_value(Path(str(path)))


class LakeIOManager(ConfigurableIOManagerFactory):
    """Stores every asset under `base_dir/<asset>/<partition>/`."""

    base_dir: str

    def create_io_manager(self, context) -> LakeStore:
        return LakeStore(base_path=UPath(self.base_dir))
