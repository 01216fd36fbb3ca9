"""The one canonical label convention every source is converted to at the door.

Canonical labels (the UK Biobank / ukbb_cardiac and M&Ms-1 convention):
0 background, 1 LV cavity (blood pool), 2 LV myocardium, 3 RV cavity.
ACDC uses 1 RV, 2 MYO, 3 LV and is remapped on reading.
"""

from __future__ import annotations

import numpy as np

BACKGROUND, LV, MYO, RV = 0, 1, 2, 3
CANONICAL_LABELS: frozenset[int] = frozenset({BACKGROUND, LV, MYO, RV})
LABEL_NAMES = {BACKGROUND: "background", LV: "LV cavity", MYO: "myocardium", RV: "RV cavity"}

# source label -> canonical label
IDENTITY_MAP: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3}
ACDC_MAP: dict[int, int] = {0: BACKGROUND, 1: RV, 2: MYO, 3: LV}


class LabelError(ValueError):
    """A mask holds labels outside its source's convention."""


def to_canonical(mask: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Map a source label map to canonical uint8 labels; raises LabelError on unknown labels."""
    values = np.unique(mask)
    unknown = [v for v in values.tolist() if v not in mapping]
    if unknown:
        raise LabelError(f"labels {unknown} outside the expected set {sorted(mapping)}")
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[mask.astype(np.int64, copy=False)]
