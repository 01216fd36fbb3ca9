"""The phantom's noise floor: how close can any reconstruction of a noisy frame come to it?

    python benchmarks/noise_floor.py --profile demo --patients 200 [--lake data_lake]

Renders study patients of the training scanners twice, with and without their scanner's
Rician noise (same anatomy, bias, contrast), makes the profile's frames of both exactly as the
`frames` asset does (crop, per-image min-max scaling, resize) and prints one JSON line:

- noise_floor_psnr_ed / _es: PSNR of the noisy frame against the same frame rendered without
  noise, per channel (median over patients, and per vendor): a model that reproduces the
  clean image perfectly scores this against the noisy frame, so a VAE's encode-decode PSNR
  against noisy frames is only meaningful up to about this level;
- with --lake: the lake's VAE, encode-decode of the noisy frame, PSNR against the noisy frame
  (what `demo_measures.py` reports) and against the clean one (how much of the loss is noise
  the VAE rightly does not reproduce).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.cohort.ood import OodPolicy  # noqa: E402
from cardio_assets.frames.preprocess import make_frames  # noqa: E402
from cardio_assets.phantom.anatomy import sample_anatomy  # noqa: E402
from cardio_assets.phantom.generate import cohort_attributes  # noqa: E402
from cardio_assets.phantom.render import render_patient  # noqa: E402
from cardio_assets.profiles import get_profile  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def central_frames(params, phantom, spec) -> np.ndarray:
    cine, ed_mask, es_mask, _, truth = render_patient(params, phantom)
    return make_frames(cine, ed_mask, es_mask, 0, int(truth["es_frame"]), False, spec).images.astype(np.float32)


def noisy_and_clean_frames(profile_name: str, patients: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(noisy, clean, vendor per frame): central ED/ES frames of study patients of the training scanners."""
    profile = get_profile(profile_name)
    phantom, spec = profile.phantom, profile.frames
    held_out = OodPolicy.parse(profile.phantom_ood_holdout)
    people = [a for a in cohort_attributes(phantom)["study"]
              if held_out is None or getattr(a, held_out.column) not in held_out.values][:patients]
    noisy, clean, vendors = [], [], []
    for attrs in people:
        params = sample_anatomy(attrs, phantom)
        noisy.append(central_frames(params, phantom, spec))
        clean.append(central_frames(dataclasses.replace(params, noise_sigma=0.0), phantom, spec))
        vendors += [attrs.vendor] * len(noisy[-1])
    return np.concatenate(noisy), np.concatenate(clean), np.asarray(vendors)


def noise_floor(profile_name: str = "demo", patients: int = 200) -> dict:
    """Median PSNR (ED, ES) of noisy frames against the same frames without noise, overall and per vendor."""
    return floor_of(*noisy_and_clean_frames(profile_name, patients))


def floor_of(noisy: np.ndarray, clean: np.ndarray, vendors: np.ndarray) -> dict:
    floor = np.array([[psnr(n[c], k[c]) for c in (0, 1)] for n, k in zip(noisy, clean)])
    return {
        "patients": len(noisy),
        "noise_floor_psnr_ed": round(float(np.median(floor[:, 0])), 2),
        "noise_floor_psnr_es": round(float(np.median(floor[:, 1])), 2),
        "per_vendor": {v: [round(float(np.median(floor[vendors == v, c])), 2) for c in (0, 1)] for v in sorted(set(vendors))},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--lake", type=Path, default=None, help="also measure this lake's VAE")
    args = parser.parse_args(argv)
    noisy, clean, vendors = noisy_and_clean_frames(args.profile, args.patients)
    out: dict = {"profile": args.profile, **floor_of(noisy, clean, vendors)}
    if args.lake is not None:
        import torch

        from cardio_assets.generation.backbone import load_backbone
        from cardio_assets.generation.control import to_model_space

        backbone = load_backbone(args.lake / "models" / "diffusion_backbone", device="cpu")
        with torch.no_grad():
            x = to_model_space(noisy, backbone.resolution)
            recon = ((backbone.vae.decode(backbone.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1) + 1) / 2).numpy()
        ref_noisy = ((x + 1) / 2).numpy()
        ref_clean = ((to_model_space(clean, backbone.resolution) + 1) / 2).numpy()
        out["vae_psnr_vs_noisy"] = [round(psnr(recon[:, c], ref_noisy[:, c]), 2) for c in (0, 1)]
        out["vae_psnr_vs_clean"] = [round(psnr(recon[:, c], ref_clean[:, c]), 2) for c in (0, 1)]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
