"""A cheap identity of a set of lake rows, for caches keyed by their input data."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd

SAMPLE_EVERY = 64


def rows_fingerprint(frames, index: pd.DataFrame) -> str:
    """The index, and per part of the lazy `frames` (`classify.train.Frames`-like: `arrays`,
    `rows`): a memory-mapped file's name, size and modification time (the lake rewrites a file
    to change it), an in-memory array's every 64th row; and the rows taken from it."""
    h = hashlib.sha1(pd.util.hash_pandas_object(index.astype(str), index=False).to_numpy().tobytes())
    for array, rows in zip(frames.arrays, frames.rows):
        filename = getattr(array, "filename", None)
        if filename:
            st = os.stat(filename)
            h.update(f"{filename}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(np.ascontiguousarray(array[np.asarray(rows)[::SAMPLE_EVERY]]).tobytes())
        h.update(np.asarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()
