"""The phantom cohort's configuration: every knob that decides its files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Bump when a code change alters the generated files: it is part of the config hash, so
# a cohort written by older code is regenerated instead of reused.
PHANTOM_VERSION = 3  # 2: scanners and sites (phantom.scanners); 3: trabeculae, organ texture


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that decides the phantom cohort's files.

    ``difficulty`` in [0, 1] is the one knob on how hard HF is to see in the images: the
    fraction ``1 - difficulty**2`` of each HF patient's disease shift (EF drop, LV
    dilation, wall thinning/thickening, RV EF drop) is expressed; 0 = well separated,
    1 = HF and healthy images identically distributed given sex, age and BMI. See
    :func:`cardio_assets.phantom.anatomy.separation`.
    """

    n_patients: int = 1500
    heldout_per_cell: int = 6
    hf_prevalence: float = 0.08
    difficulty: float = 0.5
    matrix: int = 80
    n_slices: int = 6
    n_frames: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_patients < 0 or self.heldout_per_cell < 0:
            raise ValueError("n_patients and heldout_per_cell must be >= 0")
        if not 0.0 < self.hf_prevalence < 1.0:
            raise ValueError(f"hf_prevalence must be in (0, 1), got {self.hf_prevalence}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        # The heart is placed in mm, so a matrix under 80 crops the field of view (fine
        # for tests); 20 frames is the least that resolves ED-1/ES+1 neighbours and the
        # raised-cosine cycle.
        if self.matrix < 32 or self.n_slices < 1 or self.n_frames < 20:
            raise ValueError("need matrix >= 32, n_slices >= 1 and n_frames >= 20")

    def config_hash(self) -> str:
        """Stable hash of all fields (and PHANTOM_VERSION): equal hash, equal files."""
        payload = {"phantom_version": PHANTOM_VERSION, **asdict(self)}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
