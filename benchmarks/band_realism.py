"""Realism of each BMI band's healthy frames, per sampling setting: where the realism report's FID comes from.

    python benchmarks/band_realism.py --lake data_lake --variant guidance_scale=3 --variant guidance_scale=1 \
        [--backbone DIR --controlnet DIR] [--per-cell 40]

The realism report compares a real subgroup with synthetic frames drawn with the *real* subgroup's
mix of the other attributes, and the cohort's normal-BMI patients are nearly all healthy; the
Table 1 FID of `sampling_settings.py` instead uses its probe as drawn, balanced over the 36 cells
(half of it HF). This benchmark isolates the frames the report weighs most: per BMI band, the
healthy cells, `--per-cell` training masks and prompts each (seeds 0, 1, ...), generated with
the profile's sampling and with every `--variant` (the same images otherwise). It prints one
JSON line: per band, the real-real FID (two halves of the band's real healthy training frames),
and per variant the FID of real against synthetic (n = 200, 3 draws, the report's extractor:
the attribute predictors' penultimate layer) and the attribute predictor's mean probabilities of
the BMI bands on the synthetic frames (real frames of the band for reference): a band drawn as
a caricature of itself shows as a mean p(band) above the real frames'.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.generator_quality import parse_overrides  # noqa: E402
from benchmarks.sampling_settings import frames_of  # noqa: E402
from cardio_assets.classify.attributes import AttributePredictor  # noqa: E402
from cardio_assets.classify.model import PenultimateFeatures  # noqa: E402
from cardio_assets.cohort.cells import BMI_BANDS, CELL_KEYS, Cell  # noqa: E402
from cardio_assets.generation import Sampler  # noqa: E402
from cardio_assets.metrics.realism import fid_kid, module_extractor  # noqa: E402
from cardio_assets.profiles import get_profile  # noqa: E402


def band_probabilities(predictor: AttributePredictor, images: np.ndarray) -> dict[str, float]:
    table = pd.DataFrame([p["bmi_band"] for p in predictor.probabilities(images)])
    return {band: round(float(table[band].mean()), 3) for band in BMI_BANDS}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--variant", action="append", default=[], help="e.g. guidance_scale=2,guidance_interval=[0,1]")
    parser.add_argument("--per-cell", type=int, default=40)
    parser.add_argument("--controlnet", type=Path, default=None, help="default: <lake>/models/controlnet/controlnet")
    parser.add_argument("--backbone", type=Path, default=None, help="default: <lake>/models/diffusion_backbone")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    models = args.lake / "models"
    images, controls, index = frames_of(args.lake, "train")
    predictor = AttributePredictor.load(models / "attribute_predictors", images.shape[-1])
    extractor = module_extractor(PenultimateFeatures(predictor.model), "attribute predictors' penultimate layer")
    config = get_profile(args.profile).diffusion
    variants = {"profile": {}} | {v: parse_overrides(re.split(r",(?![^\[]*\])", v)) for v in args.variant}
    samplers = {name: Sampler(args.backbone or models / "diffusion_backbone",
                              args.controlnet or models / "controlnet" / "controlnet", config.replace(**overrides))
                for name, overrides in variants.items()}

    def fid(a: np.ndarray, b: np.ndarray) -> float:
        return round(fid_kid(a, b, extractor, n=200, repeats=3, seed=args.seed)["fid_mean"], 2)

    out: dict = {"profile": args.profile, "per_cell": args.per_cell,
                 "sampling": {name: s.config.sampling_summary() for name, s in samplers.items()}}
    for band in BMI_BANDS:
        rng = np.random.default_rng(args.seed)
        cells = [k for k in CELL_KEYS if Cell.parse(k).bmi_band == band and Cell.parse(k).diagnosis == "healthy"]
        real = images[((index["bmi_band"] == band) & (index["diagnosis"] == "healthy")).to_numpy()]
        probe = np.concatenate([rng.choice(np.flatnonzero(index["cell"].to_numpy() == k), args.per_cell) for k in cells])
        result = {"n_synthetic": len(probe), "real_real_fid": fid(real[::2], real[1::2]),
                  "real_p_band": band_probabilities(predictor, real)}
        for name, sampler in samplers.items():
            generated = sampler.generate(controls[probe], index["prompt"].to_numpy()[probe].tolist(),
                                         list(range(len(probe))), log=None)
            result[name] = {"fid": fid(real, generated), "p_band": band_probabilities(predictor, generated)}
        out[band] = result
        print(json.dumps({band: result}), file=sys.stderr, flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
