"""The same phantom patients scanned on every scanner: what the vendors do to one heart, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardio_assets.frames.preprocess import FrameSpec, make_frames
from cardio_assets.generation.grid import sample_grid
from cardio_assets.phantom.anatomy import on_scanner, sample_anatomy
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.population import PatientAttributes, sample_study_attributes
from cardio_assets.phantom.render import render_patient
from cardio_assets.phantom.scanners import SCANNERS, VENDORS


def scanner_frames(attrs: PatientAttributes, config: PhantomConfig, spec: FrameSpec) -> np.ndarray:
    """(vendors, 3, size, size) central-slice ED/ES frames of one patient on each scanner, in `VENDORS` order."""
    params = sample_anatomy(attrs, config)
    out = []
    for vendor in VENDORS:
        cine, ed_mask, es_mask, _, truth = render_patient(on_scanner(params, vendor, config), config)
        frames = make_frames(cine, ed_mask, es_mask, 0, int(truth["es_frame"]), training=False, spec=spec)
        out.append(frames.images[0].astype(np.float32))
    return np.stack(out)


def write_scanner_grid(config: PhantomConfig, spec: FrameSpec, path: str | Path) -> Path:
    """A healthy and an HF study patient (the first of each), one row each, one column per scanner."""
    people = sample_study_attributes(max(config.n_patients, 1), config.hf_prevalence, config.seed)
    chosen = [next(a for a in people if not a.hf), next((a for a in people if a.hf), people[-1])]
    images = np.concatenate([scanner_frames(a, config, spec) for a in chosen])
    titles = [f"{a.diagnosis} {a.sex} {a.age:.0f} y BMI {a.bmi:.0f}\nvendor {v}: {SCANNERS[v].description.split(',')[0]}"
              for a in chosen for v in VENDORS]
    return sample_grid(images, titles, path, ncols=len(VENDORS), mode="ed_es",
                       suptitle="One patient on every phantom scanner (ED | ES, central slice)")
