"""Fewer sampler steps: does quality control still pass? Read off a finished run's lake.

    python benchmarks/sampling_steps.py --lake data_lake --steps 20 14 10 [--images 192]

Loads the lake's trained backbone and ControlNet, generates one image per sampled training
mask (first attempt only) at each step count with the same seeds, and prints one JSON line:
per step count, images/s, QC pass rate (thresholds calibrated on real training frames, as
the `synthetic_frames` asset does) and the median blood-pool Dice of ED and ES; the real
frames' own figures for reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.generator_quality import dice_medians, training_frames  # noqa: E402
from cardio_assets.generation import Sampler, calibrate_thresholds  # noqa: E402
from cardio_assets.profiles import get_profile  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 14, 10])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    images, controls, prompts, _ = training_frames(args.lake)
    rng = np.random.default_rng(args.seed)
    calib = rng.permutation(len(images))[:500]
    thresholds, _ = calibrate_thresholds(images[calib], controls[calib])
    probe = rng.permutation(len(images))[: args.images]
    real_ed, real_es, real_passed = dice_medians(images[probe], controls[probe], thresholds)
    out: dict = {"profile": args.profile, "n_images": len(probe),
                 "real": {"qc_pass": round(real_passed, 3), "dice_ed_median": round(real_ed, 3), "dice_es_median": round(real_es, 3)}}
    base = get_profile(args.profile).diffusion
    models = args.lake / "models"
    for steps in args.steps:
        sampler = Sampler(models / "diffusion_backbone", models / "controlnet" / "controlnet", base.replace(sampler_steps=steps))
        t0 = time.perf_counter()
        generated = sampler.generate(controls[probe], [prompts[i] for i in probe], list(range(len(probe))), log=None)
        seconds = time.perf_counter() - t0
        ed, es, passed = dice_medians(generated, controls[probe], thresholds)
        out[f"steps_{steps}"] = {"images_per_s": round(len(probe) / seconds, 2), "qc_pass": round(passed, 3),
                                 "dice_ed_median": round(ed, 3), "dice_es_median": round(es, 3)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
