"""Attribute-predictor recipes on a demo lake, against the phantom's ceiling.

    python benchmarks/attribute_predictors.py --lake data_lake [--variants current all_onecycle_3 ...]

Trains each variant on the lake's real training frames (as the `attribute_predictors` asset
does) and prints one JSON line per variant: validation balanced accuracy per attribute, its
share of the phantom's ceiling (`phantom/ceiling.py`, from the lake's ground truth as the frames show it: the
chest wall as far as their crop holds it, sizes in pixels; the ceiling of every parameter beside it), and the
seconds it took; balanced accuracy on validation and test frames together (neither trains the
predictors; twice the frames, less noise between recipes) and the texture sensitivity: how far a
blur of half a pixel moves each class's mean probability on those frames. Variants: which training
frames (the central slice and frame of each patient, or all nine), epochs, the learning-rate
schedule, and texture augmentation (`classify.train.texture_jitter`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.classify.attributes import ATTRIBUTES, train_attribute_predictor  # noqa: E402
from cardio_assets.cohort.cells import CELL_KEYS  # noqa: E402
from cardio_assets.defs.images import gather, read_all  # noqa: E402
from cardio_assets.defs.resources import PipelineSettings  # noqa: E402
from cardio_assets.lake.values import read_value  # noqa: E402
from cardio_assets.phantom.ceiling import accuracy_against_ceiling, phantom_attribute_ceilings  # noqa: E402
from cardio_assets.profiles import get_profile  # noqa: E402

# name: (central frames only, epochs, schedule, lr, texture augmentation's largest blur sigma, 0: none)
VARIANTS = {
    "previous": (True, 3, "constant", 1e-3, 0.0),  # the demo's recipe before the one below
    "demo_plain": (False, 3, "onecycle", 2e-3, 0.0),  # the demo's recipe before texture augmentation
    "demo": (False, 3, "onecycle", 2e-3, 0.6),  # the demo profile's recipe
    "central_onecycle_8": (True, 8, "onecycle", 2e-3, 0.0),
    "all_constant_3": (False, 3, "constant", 1e-3, 0.0),
    "all_onecycle_5": (False, 5, "onecycle", 2e-3, 0.0),
    "all_onecycle_6": (False, 6, "onecycle", 2e-3, 0.0),
    "texture_1_0": (False, 3, "onecycle", 2e-3, 1.0),
    "texture_0_3": (False, 3, "onecycle", 2e-3, 0.3),
    "texture_0_6_epochs_6": (False, 6, "onecycle", 2e-3, 0.6),
    "texture_0_6_epochs_2": (False, 2, "onecycle", 2e-3, 0.6),  # a demo 25 s shorter (issue 11)
}
BLUR_SIGMA = 0.5  # pixels: about how much smoother the demo's synthetic frames are than real ones


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    frames = {k: read_value(args.lake / "frames" / k) for k in CELL_KEYS}
    # the ceiling as the asset computes it: without the vendor or site the run holds out
    settings = PipelineSettings(profile=args.profile, source="phantom")
    source = read_value(args.lake / "cohort_source")
    ceiling, ceiling_all = phantom_attribute_ceilings(source, settings.ood_policy(), profile.frames.crop_px)
    val, _ = gather(frames, splits=("val",))
    unseen, _ = gather(frames, splits=("val", "test"))
    unseen_images = read_all(unseen)
    for name in args.variants:
        central, epochs, schedule, lr, texture = VARIANTS[name]
        train, _ = gather(frames, splits=("train",), central_only=central)
        start = time.perf_counter()
        predictor = train_attribute_predictor(
            train.frames(), train.index, val.frames(), val.index, image_size=profile.classifier.image_size,
            epochs=epochs, seed=args.seed, lr=lr, schedule=schedule, log=lambda _: None,
            compute_dtype=profile.classifier.compute_dtype(),  # as the asset trains them (bf16 where the CPU has AMX)
            texture_blur=texture,
        )
        seconds = time.perf_counter() - start
        table = accuracy_against_ceiling(predictor.validation, ceiling, ceiling_all)
        print(json.dumps({
            "benchmark": "attribute_predictors", "variant": name, "train_images": len(train), "val_images": len(val),
            "epochs": epochs, "schedule": schedule, "lr": lr, "texture_blur": texture, "seconds": round(seconds, 1),
            "balanced_accuracy": {a: round(v, 3) for a, v in predictor.validation.items()},
            "share_of_ceiling": {r["attribute"]: round(r["share_of_ceiling"], 3) for r in table.to_dict("records")
                                 if "share_of_ceiling" in r and r["share_of_ceiling"] == r["share_of_ceiling"]},
            "ceiling_in_frames": {a: round(v, 3) for a, v in ceiling.items()},
            "ceiling_all_parameters": {a: round(v, 3) for a, v in ceiling_all.items()},
            "trusted_for_qc": sorted(predictor.trusted),
            # more frames than validation alone (the predictors train on neither split): less noise between recipes
            "balanced_accuracy_val_and_test": balanced_accuracies(predictor, unseen_images, unseen.index),
            f"texture_sensitivity_blur_{BLUR_SIGMA}": texture_sensitivity(predictor, unseen_images, unseen.index),
        }), flush=True)


def balanced_accuracies(predictor, images: np.ndarray, index) -> dict[str, float]:
    predicted = predictor.predict(images)
    return {a: round(float(balanced_accuracy_score(index[a], [p[a] for p in predicted])), 3) for a in ATTRIBUTES}


def texture_sensitivity(predictor, images: np.ndarray, index) -> dict[str, float]:
    """Mean own-class probability of real frames blurred by BLUR_SIGMA minus as they are, per class:
    near 0 for a predictor that reads anatomy; the synthetic frames' smoothness shifts it otherwise."""
    blurred = gaussian_filter(images, (0, 0, BLUR_SIGMA, BLUR_SIGMA)).astype(np.float32)
    as_is, smooth = predictor.probabilities(images), predictor.probabilities(blurred)
    out = {}
    for a in ATTRIBUTES:
        for label in sorted(index[a].unique()):
            rows = np.flatnonzero((index[a] == label).to_numpy())
            out[f"{a}={label}"] = round(float(np.mean([smooth[i][a][label] - as_is[i][a][label] for i in rows])), 3)
    return out


if __name__ == "__main__":
    main()
