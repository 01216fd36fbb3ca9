"""Asset values in the data lake: one folder per asset, one sub-folder per partition.

Every asset value is stored as a folder in formats other tools read:
- a pandas DataFrame as `table.parquet`;
- a `FrameSet` (images of one cell) as `index.parquet`, `images.npy`, `controls.npy`;
- a JSON-able dict as `value.json`.
A value is written into a temporary sibling folder and swapped into place (`lake.atomic`),
so a killed run leaves the previous good output where it was. Loading a FrameSet
memory-maps its arrays: a downstream asset reading all 36 cells holds an index in memory,
not the images. Dagster's IO manager (`defs/io_manager.py`) stores and loads through here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cardio_assets.lake.atomic import atomic_dir


@dataclass
class FrameSet:
    """The frames of one cell: an index row per image, and two aligned image arrays."""

    index: pd.DataFrame
    images: np.ndarray  # float16 (N, 3, H, W) in [0, 1]
    controls: np.ndarray  # uint8 (N, 3, H, W) canonical labels

    def __len__(self) -> int:
        return len(self.index)


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


def content_hash(value) -> str:
    """A hash of an asset value's content (not of its files): equal values, equal hashes, in any run."""
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(value, pd.DataFrame):
        _hash_table(digest, value)
    elif isinstance(value, FrameSet):
        _hash_table(digest, value.index)
        for array in (value.images, value.controls):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
    elif isinstance(value, dict):
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    else:
        raise TypeError(f"no content hash for a {type(value).__name__}")
    return digest.hexdigest()


def _hash_table(digest, table: pd.DataFrame) -> None:
    digest.update(json.dumps([[str(c), str(t)] for c, t in table.dtypes.items()]).encode())
    # object columns may hold lists or dicts, which pandas cannot hash: their text stands in
    hashable = table.apply(lambda col: col.map(_hashable) if col.dtype == object else col)
    digest.update(pd.util.hash_pandas_object(hashable, index=False).to_numpy().tobytes())


def _hashable(item):
    # a list column comes back from parquet as numpy arrays: both hash as the same text
    if isinstance(item, np.ndarray):
        item = item.tolist()
    return json.dumps(item, sort_keys=True, default=str) if isinstance(item, (list, dict, tuple)) else item
