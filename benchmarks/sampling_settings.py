"""Sampling settings (guidance, ControlNet scale, steps): realism, mask adherence, diagnosis signal.

    python benchmarks/sampling_settings.py --lake data_lake --variant guidance_scale=2 \
        --variant controlnet_scale=1.5,guidance_scale=3 --variant guidance_interval=[0.25,1] [--per-cell 16]

Each `--variant` is a comma-separated list of `DiffusionConfig` overrides of the profile's
sampling fields; the profile's own settings always run first ("profile").

Loads the lake's trained backbone, ControlNet and attribute predictors, draws `--per-cell`
training masks and prompts of every cell (the synthetic sets are balanced over cells too),
generates one image each with every variant and the same seeds (first attempt only) and
prints one JSON line with, per variant:

- qc_pass: the `synthetic_frames` asset's check (mask thresholds calibrated on real training
  frames, attribute floors of the trusted predictors);
- dice_ed_median / dice_es_median: blood-pool Dice against the masks (QC's segmentation);
- fid_ratio: real-vs-synthetic FID over the real-real lower bound per Table 1 comparison,
  same extractor as the realism report (the attribute predictors' penultimate layer); over the
  probe as drawn, balanced over the cells, where the report weighs them as the cohort does
  (`band_realism.py` measures the healthy cells that dominate the report's BMI groups);
- diagnosis: the real-trained diagnosis head's mean p(HF) on the images prompted HF and
  healthy, and its balanced accuracy against the prompts (real test frames for reference:
  too high a separation is a caricature, not fidelity);
- failure_modes: images failing each QC mode (an image may fail several);
- images_per_s.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.generator_quality import parse_overrides  # noqa: E402
from cardio_assets.classify.attributes import AttributePredictor  # noqa: E402
from cardio_assets.classify.model import PenultimateFeatures  # noqa: E402
from cardio_assets.classify.strategies import ImageSet  # noqa: E402
from cardio_assets.cohort.cells import CELL_KEYS  # noqa: E402
from cardio_assets.generation import Sampler, calibrate_thresholds, make_check, mask_adherence  # noqa: E402
from cardio_assets.generation.qc import QCItem, QCThresholds, failure_mode  # noqa: E402
from cardio_assets.lake.values import read_value  # noqa: E402
from cardio_assets.metrics.realism import REAL_REAL, REAL_SYNTHETIC, module_extractor, realism_table  # noqa: E402
from cardio_assets.profiles import get_profile  # noqa: E402

LOOSE = QCThresholds(min_contrast=-1.0, min_dice=0.0)


def frames_of(lake: Path, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    images, controls, index = [], [], []
    for key in CELL_KEYS:
        fs = read_value(lake / "frames" / key)
        rows = np.flatnonzero((fs.index["split"] == split).to_numpy())
        images.append(np.asarray(fs.images[rows], dtype=np.float32))
        controls.append(np.asarray(fs.controls[rows], dtype=np.uint8))
        index.append(fs.index.iloc[rows])
    return np.concatenate(images), np.concatenate(controls), pd.concat(index, ignore_index=True)


def diagnosis_signal(predictor: AttributePredictor, images: np.ndarray, diagnosis: pd.Series) -> dict:
    p_hf = np.array([p["diagnosis"]["hf"] for p in predictor.probabilities(images)])
    hf = (diagnosis == "hf").to_numpy()
    return {"p_hf_if_hf": round(float(p_hf[hf].mean()), 3), "p_hf_if_healthy": round(float(p_hf[~hf].mean()), 3),
            "balanced_accuracy": round(float(balanced_accuracy_score(hf, p_hf > 0.5)), 3)}


def dice_medians(images: np.ndarray, controls: np.ndarray) -> tuple[float, float]:
    phases = [mask_adherence(i, c, LOOSE)["phases"] for i, c in zip(images, controls)]
    return tuple(round(float(np.median([p[ph]["dice"] for p in phases if p.get(ph, {}).get("scorable")])), 3)
                 for ph in ("ED", "ES"))


def failure_counts(failures: list[list[str]]) -> dict[str, int]:
    """Images failing each mode (a mode without its measured values), most frequent first."""
    counts = pd.Series([m for fails in failures for m in {failure_mode(f) for f in fails}]).value_counts()
    return {str(mode): int(n) for mode, n in counts.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--variant", action="append", default=[], help="e.g. guidance_scale=2,controlnet_scale=1.5")
    parser.add_argument("--per-cell", type=int, default=16)
    parser.add_argument("--controlnet", type=Path, default=None, help="default: <lake>/models/controlnet/controlnet")
    parser.add_argument("--backbone", type=Path, default=None, help="default: <lake>/models/diffusion_backbone")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, controls, index = frames_of(args.lake, "train")
    calib = rng.permutation(len(images))[:500]
    thresholds, _ = calibrate_thresholds(images[calib], controls[calib])
    probe = np.concatenate([rng.choice(np.flatnonzero(index["cell"].to_numpy() == k), args.per_cell)
                            for k in CELL_KEYS if (index["cell"] == k).any()])
    probe_index = index.iloc[probe].reset_index(drop=True)
    models = args.lake / "models"
    predictor = AttributePredictor.load(models / "attribute_predictors", images.shape[-1])
    check = make_check(thresholds, probabilities=predictor.probabilities, floors=predictor.qc_floors())
    extractor = module_extractor(PenultimateFeatures(predictor.model), "attribute predictors' penultimate layer")
    test_images, _, test_index = frames_of(args.lake, "test")
    real = ImageSet(images, index)
    profile = get_profile(args.profile)
    out: dict = {"profile": args.profile, "n_images": len(probe), "qc_thresholds": asdict(thresholds),
                 "real_test_diagnosis": diagnosis_signal(predictor, test_images, test_index["diagnosis"])}
    variants = {"profile": {}} | {v: parse_overrides(re.split(r",(?![^\[]*\])", v)) for v in args.variant}
    for name, overrides in variants.items():
        config = profile.diffusion.replace(**overrides)
        sampler = Sampler(args.backbone or models / "diffusion_backbone", args.controlnet or models / "controlnet" / "controlnet", config)
        t0 = time.perf_counter()
        generated = sampler.generate(controls[probe], probe_index["prompt"].tolist(), list(range(len(probe))), log=None)
        seconds = time.perf_counter() - t0
        items = [QCItem(cell=r.cell, index=i, prompt=r.prompt, labels=controls[probe[i]],
                        expected={"sex": r.sex, "age_band": r.age_band, "bmi_band": r.bmi_band})
                 for i, r in enumerate(probe_index.itertuples())]
        failures = check(generated, items)
        passed = np.mean([not fails for fails in failures])
        table = realism_table(real, ImageSet(generated, probe_index), extractor, n=profile.fid_images,
                              repeats=profile.fid_repeats, seed=args.seed, log=lambda *_: None)
        rr = table[table["kind"] == REAL_REAL].set_index(["attribute", "comparison"])["fid_mean"]
        rs = table[table["kind"] == REAL_SYNTHETIC].set_index(["attribute", "comparison"])["fid_mean"]
        ed, es = dice_medians(generated, controls[probe])
        out[name] = {
            "images_per_s": round(len(probe) / seconds, 2), "qc_pass": round(float(passed), 3),
            "dice_ed_median": ed, "dice_es_median": es, "failure_modes": failure_counts(failures),
            "fid_ratio": {f"{a}: {c}": round(float(rs[(a, c)] / rr[(a, c)]), 2) for a, c in rs.index if (a, c) in rr.index},
            "diagnosis": diagnosis_signal(predictor, generated, probe_index["diagnosis"]),
        }
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
