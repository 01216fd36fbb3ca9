"""Calibrate the phantom's `difficulty`: real-only classifier accuracy per difficulty.

    python benchmarks/calibrate_difficulty.py --out DIR [--difficulty 0.5 0.8 0.9] [--patients 1500]

For each difficulty: writes a phantom cohort (demo sizes) to DIR unless present, makes its
frames, trains the `real` strategy with the demo classifier recipe (one seed), and prints
one JSON line with validation and test balanced accuracy. The paper's real-only classifier
sits at 0.74 overall (UK Biobank); pick the difficulty that lands near it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.classify.config import ClassifierConfig  # noqa: E402
from cardio_assets.classify.strategies import ImageSet, run_strategy  # noqa: E402
from cardio_assets.cohort.readers import scan_ukbb  # noqa: E402
from cardio_assets.cohort.splits import split_patients  # noqa: E402
from cardio_assets.cohort.validation import validate_entries  # noqa: E402
from cardio_assets.frames.cell_frames import build_cell_frames  # noqa: E402
from cardio_assets.frames.preprocess import FrameSpec  # noqa: E402
from cardio_assets.metrics.group_metrics import balanced_accuracy  # noqa: E402
from cardio_assets.phantom.config import PhantomConfig  # noqa: E402
from cardio_assets.phantom.generate import generate_phantom_cohort  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--difficulty", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for difficulty in args.difficulty:
        t0 = time.perf_counter()
        config = PhantomConfig(n_patients=args.patients, heldout_per_cell=0, hf_prevalence=0.08, difficulty=difficulty)
        out = Path(args.out) / f"difficulty-{difficulty}"
        generate_phantom_cohort(out, config, workers=args.workers)
        scan = scan_ukbb(out / "study", out / "study" / "metadata.csv", source="phantom")
        cohort, _ = validate_entries(scan.entries, workers=args.workers)
        patients = cohort.merge(split_patients(cohort, seed=0)[["patient_id", "split"]], on="patient_id")
        frames = build_cell_frames(patients, FrameSpec(crop_px=64, size=64), workers=args.workers)
        predictions = run_strategy("real", ImageSet(frames.images, frames.index), None, ClassifierConfig.demo(), seed=0, log=lambda _: None)
        test = predictions[predictions["evaluation_set"] == "test"]
        print(json.dumps({
            "benchmark": "calibrate_difficulty", "difficulty": difficulty, "patients": len(cohort),
            "val_balanced_accuracy": round(float(predictions.attrs["run"]["val_balanced_accuracy"]), 3),
            "test_balanced_accuracy": round(float(balanced_accuracy(test["label"], test["prediction"])), 3),
            "seconds": round(time.perf_counter() - t0, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
