"""Benchmark: phantom NIfTI -> frames, against merely decompressing the files.

    python benchmarks/preprocess.py --out DIR --patients N [--workers W]

Writes N phantom patients to DIR unless present, then times, in one run:
- `decompress_seconds`: gunzip every .nii.gz of the cohort on one core (the floor);
- `validate_seconds`: the cohort step (open, check voxels and labels, find ES);
- `seconds`: turning every patient into frames (the `frames` asset's work), with W workers;
and prints one JSON line. Ratios are taken within the run, so machine noise cancels.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.cohort.readers import scan_ukbb  # noqa: E402
from cardio_assets.cohort.splits import split_patients  # noqa: E402
from cardio_assets.cohort.validation import validate_entries  # noqa: E402
from cardio_assets.frames.cell_frames import build_cell_frames  # noqa: E402
from cardio_assets.frames.preprocess import FrameSpec  # noqa: E402
from cardio_assets.phantom.config import PhantomConfig  # noqa: E402
from cardio_assets.phantom.generate import generate_phantom_cohort  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    config = PhantomConfig(n_patients=args.patients, heldout_per_cell=0, seed=0)
    t0 = time.perf_counter()
    generate_phantom_cohort(args.out, config, workers=args.workers)
    generate_seconds = time.perf_counter() - t0

    study = Path(args.out) / "study"
    files = sorted(study.glob("*/*.nii.gz"))
    t0 = time.perf_counter()
    n_bytes = 0
    for f in files:
        with gzip.open(f, "rb") as fh:
            n_bytes += len(fh.read())
    decompress_seconds = time.perf_counter() - t0

    scan = scan_ukbb(study, study / "metadata.csv", source="phantom")
    t0 = time.perf_counter()
    cohort, quarantine = validate_entries(scan.entries, workers=args.workers)
    validate_seconds = time.perf_counter() - t0

    patients = cohort.merge(split_patients(cohort, seed=0)[["patient_id", "split"]], on="patient_id")
    t0 = time.perf_counter()
    frames = build_cell_frames(patients, FrameSpec(crop_px=args.crop, size=args.size), workers=args.workers)
    seconds = time.perf_counter() - t0

    print(json.dumps({
        "benchmark": "preprocess",
        "patients": len(cohort),
        "quarantined": len(quarantine),
        "images": len(frames),
        "workers": args.workers,
        "seconds": round(seconds, 3),
        "decompress_seconds": round(decompress_seconds, 3),
        "validate_seconds": round(validate_seconds, 3),
        "generate_seconds": round(generate_seconds, 3),
        "frames_over_decompress": round(seconds / decompress_seconds, 3),
        "cohort_and_frames_over_decompress": round((seconds + validate_seconds) / decompress_seconds, 3),
        "decompressed_mb": round(n_bytes / 1e6, 1),
    }))


if __name__ == "__main__":
    main()
