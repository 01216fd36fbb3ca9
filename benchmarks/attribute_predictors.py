"""Attribute-predictor recipes on a demo lake, against the phantom's ceiling.

    python benchmarks/attribute_predictors.py --lake data_lake [--variants current all_onecycle_3 ...]

Trains each variant on the lake's real training frames (as the `attribute_predictors` asset
does) and prints one JSON line per variant: validation balanced accuracy per attribute, its
share of the phantom's ceiling (`phantom/ceiling.py`, from the lake's ground truth), and the
seconds it took. Variants: which training frames (the central slice and frame of each patient,
or all nine), epochs, and the learning-rate schedule.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.classify.attributes import train_attribute_predictor  # noqa: E402
from cardio_assets.cohort.cells import CELL_KEYS  # noqa: E402
from cardio_assets.defs.images import gather  # noqa: E402
from cardio_assets.lake.values import read_value  # noqa: E402
from cardio_assets.phantom.ceiling import accuracy_against_ceiling, phantom_attribute_ceiling  # noqa: E402
from cardio_assets.profiles import get_profile  # noqa: E402

# name: (central frames only, epochs, schedule, lr)
VARIANTS = {
    "previous": (True, 3, "constant", 1e-3),  # the demo's recipe before the one below
    "demo": (False, 3, "onecycle", 2e-3),  # the demo profile's recipe
    "central_onecycle_8": (True, 8, "onecycle", 2e-3),
    "all_constant_3": (False, 3, "constant", 1e-3),
    "all_onecycle_5": (False, 5, "onecycle", 2e-3),
    "all_onecycle_6": (False, 6, "onecycle", 2e-3),
}


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
    ceiling = phantom_attribute_ceiling(read_value(args.lake / "cohort_source"))
    val, _ = gather(frames, splits=("val",))
    for name in args.variants:
        central, epochs, schedule, lr = VARIANTS[name]
        train, _ = gather(frames, splits=("train",), central_only=central)
        start = time.perf_counter()
        predictor = train_attribute_predictor(
            train.frames(), train.index, val.frames(), val.index, image_size=profile.classifier.image_size,
            epochs=epochs, seed=args.seed, lr=lr, schedule=schedule, log=lambda _: None,
            compute_dtype=profile.classifier.compute_dtype(),  # as the asset trains them (bf16 where the CPU has AMX)
        )
        seconds = time.perf_counter() - start
        table = accuracy_against_ceiling(predictor.validation, ceiling)
        print(json.dumps({
            "benchmark": "attribute_predictors", "variant": name, "train_images": len(train), "val_images": len(val),
            "epochs": epochs, "schedule": schedule, "lr": lr, "seconds": round(seconds, 1),
            "balanced_accuracy": {a: round(v, 3) for a, v in predictor.validation.items()},
            "share_of_ceiling": {r["attribute"]: round(r["share_of_ceiling"], 3) for r in table.to_dict("records")
                                 if "share_of_ceiling" in r and r["share_of_ceiling"] == r["share_of_ceiling"]},
            "trusted_for_qc": sorted(predictor.trusted),
        }), flush=True)


if __name__ == "__main__":
    main()
