"""Small helpers shared by asset bodies: gathering per-cell FrameSets, figures for the UI."""

import base64
from pathlib import Path

import numpy as np

from cardio_assets.classify.strategies import ImageSet
from cardio_assets.classify.train import Frames
from cardio_assets.lake.values import FrameSet


def gather(frames: dict[str, FrameSet], splits: tuple[str, ...] | None = None, central_only: bool = False) -> tuple[ImageSet, ImageSet]:
    """All cells' frames as lazy (memory-mapped) sets: (images, control label maps), aligned row by row."""
    images, controls = [], []
    for fs in frames.values():
        keep = np.ones(len(fs.index), dtype=bool)
        if splits is not None:
            keep &= fs.index["split"].isin(splits).to_numpy()
        if central_only and "slice_offset" in fs.index:
            keep &= ((fs.index["slice_offset"] == 0) & (fs.index["frame_offset"] == 0)).to_numpy()
        rows = np.flatnonzero(keep)
        if len(rows):
            index = fs.index.iloc[rows].reset_index(drop=True)
            images.append(ImageSet(Frames([(fs.images, rows)]), index))
            controls.append(ImageSet(Frames([(fs.controls, rows)]), index))
    return ImageSet.concat(images), ImageSet.concat(controls)


def read_all(image_set: ImageSet, dtype=np.float32) -> np.ndarray:
    """Read a gathered set into memory (small sets: figures, single rows; training reads lazily)."""
    return image_set.frames().take(np.arange(len(image_set))).astype(dtype, copy=False)


def png_markdown(path: Path, caption: str) -> str:
    """Markdown that shows a PNG inline in the Dagster UI (as a data URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"**{caption}**\n\n![{caption}](data:image/png;base64,{data})"
