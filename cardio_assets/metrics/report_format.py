"""How the reports write numbers and tables: number formats, Markdown tables, CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cardio_assets.lake.atomic import atomic_write_text

EVALUATION_SET_TITLES = {
    "test": "Test set (the cohort's prevalence)",
    "heldout": "Balanced held-out set (equal patients per cell)",
    "ood_test": "Out of distribution: the held-out vendor or site, at its own prevalence",
    "ood_heldout": "Out of distribution: the held-out vendor's or site's balanced held-out set",
}
# each out-of-distribution set and the in-distribution set it is compared with
OOD_PAIRS = (("test", "ood_test"), ("heldout", "ood_heldout"))


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_ci(mean: float, std: float, lo: float, hi: float, digits: int = 3) -> str:
    """`mean ± std [lo, hi]`."""
    text = format_mean_std(mean, std, digits)
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def format_diff(mean: float, lo: float, hi: float, p: float, digits: int = 3) -> str:
    """A signed difference with its CI and p: `+0.012 [-0.004, +0.030] p=0.140`."""
    if not np.isfinite(mean):
        return "n/a"
    text = f"{mean:+.{digits}f}"
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    if np.isfinite(p):
        text += f" p={p:.3f}"
    return text


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (no tabulate dependency)."""
    frame = frame.reset_index() if index else frame
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_csv(frame: pd.DataFrame, path: Path, index: bool = False) -> Path:
    """`frame` as CSV at `path`, written atomically."""
    return atomic_write_text(path, frame.to_csv(index=index))
