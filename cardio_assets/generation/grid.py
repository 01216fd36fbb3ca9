"""PNG grids of frames: "one mask, BMI varied", "one prompt, several seeds", real vs synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _panel(image: np.ndarray, mode: str) -> tuple[np.ndarray, str | None]:
    """(3, H, W) [ED, ES, ED] in [0, 1] -> a displayable array and its colormap."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if mode == "rgb":
        return image.transpose(1, 2, 0), None
    if mode == "ed":
        return image[0], "gray"
    if mode == "es":
        return image[1], "gray"
    if mode == "ed_es":
        gap = np.ones((image.shape[1], max(1, image.shape[2] // 16)), np.float32)
        return np.concatenate([image[0], gap, image[1]], axis=1), "gray"
    raise ValueError(f"unknown mode {mode!r}; expected rgb, ed, es or ed_es")


def sample_grid(
    images: np.ndarray,
    titles: list[str] | None,
    path: str | Path,
    ncols: int | None = None,
    mode: str = "ed_es",
    masks: np.ndarray | None = None,
    suptitle: str | None = None,
    panel_inches: float = 2.2,
) -> Path:
    """Write a PNG grid of `images` (N, 3, H, W) in [0, 1] with one title per panel.

    mode: "ed_es" (ED | ES side by side, grey; default), "ed", "es", or "rgb" (the raw
    [ED, ES, ED] composite). masks (N, 3, H, W) labels, optional: drawn as contours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    n = len(images)
    if n == 0:
        raise ValueError("no images to plot")
    titles = list(titles) if titles is not None else [""] * n
    if len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    width = 2.0 if mode == "ed_es" else 1.0
    title_lines = max((t.count("\n") + 1 if t else 0) for t in titles)
    row_inches = panel_inches + 0.16 * title_lines
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_inches * width * ncols, row_inches * nrows + (0.4 if suptitle else 0.1)),
        squeeze=False,
    )
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        panel, cmap = _panel(images[k], mode)
        ax.imshow(panel, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        if masks is not None and mode != "rgb":
            m = np.asarray(masks[k])
            w = images.shape[-1]
            phases = [(m[0], 0)] if mode == "ed" else [(m[1], 0)] if mode == "es" else [(m[0], 0), (m[1], w + max(1, w // 16))]
            for lab, dx in phases:
                ys, xs = np.mgrid[0 : lab.shape[0], 0 : lab.shape[1]]
                ax.contour(xs + dx, ys, lab, levels=[0.5, 1.5, 2.5], colors=["r", "y", "c"], linewidths=0.6)
        ax.set_title(titles[k], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
