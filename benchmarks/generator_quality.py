"""How good is a generator recipe? Train it on a lake's training frames and measure.

    python benchmarks/generator_quality.py --lake data_lake --profile demo [--set controlnet_steps=500 ...]

The lake needs `frames` (run `cohort_job` and `frames_job` first). Trains the profile's backbone
and ControlNet (with the `--set` overrides of `DiffusionConfig` fields) on the training frames,
generates one image per sampled training mask (first attempt only, no regeneration), and prints
one JSON line:

- qc_pass_first_attempt: share of images passing mask-adherence QC with thresholds calibrated
  on real training frames, exactly as the `synthetic_frames` asset calibrates them;
- dice_ed_median / dice_es_median: blood-pool Dice of generated frames against their masks (the
  QC's segmentation), and the same for the real frames (the ceiling);
- rare_cells_qc_pass_first_attempt: the same on masks of the 9 cells with the fewest training
  images (compare `--set cell_balance_cap=1`, uniform draws, with the default balanced draws);
- vae_psnr_ed / vae_psnr_es: encode-decode PSNR of real training frames through the backbone's VAE;
- vae_recon_*: Dice and QC pass of those reconstructions against their masks: the ceiling of any
  generator decoding through this VAE (`--vae-only` stops there);
- *_qc_pass_by_slice: the QC pass rates above (real frames, VAE reconstructions, generated frames)
  per slice offset of the mask's frame (-1 basal neighbour, +0 central, +1 apical neighbour): QC
  fails the apical frames most, and these say whether the VAE or the diffusion model is the cause;
- seconds per stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.cohort.cells import CELL_KEYS  # noqa: E402
from cardio_assets.generation import Sampler, calibrate_thresholds, mask_adherence, train_controlnet, train_small_backbone  # noqa: E402
from cardio_assets.generation.backbone import load_backbone  # noqa: E402
from cardio_assets.generation.control import to_model_space  # noqa: E402
from cardio_assets.lake.values import read_value  # noqa: E402
from cardio_assets.profiles import get_profile  # noqa: E402


def training_frames(lake: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str], np.ndarray]:
    """(images, masks, prompts, cells, slice offsets) of the lake's training frames."""
    images, controls, prompts, cells, slices = [], [], [], [], []
    for key in CELL_KEYS:
        folder = lake / "frames" / key
        if not folder.exists():
            continue
        fs = read_value(folder)
        rows = np.flatnonzero((fs.index["split"] == "train").to_numpy())
        images.append(np.asarray(fs.images[rows], dtype=np.float32))
        controls.append(np.asarray(fs.controls[rows], dtype=np.uint8))
        prompts += fs.index["prompt"].iloc[rows].tolist()
        cells += [key] * len(rows)
        slices.append(fs.index["slice_offset"].to_numpy()[rows].astype(int))
    if not prompts:
        raise SystemExit(f"no training frames under {lake / 'frames'}: run cohort_job and frames_job first")
    return np.concatenate(images), np.concatenate(controls), prompts, cells, np.concatenate(slices)


def rare_cell_probe(cells: list[str], n: int, rng: np.random.Generator, n_cells: int = 9) -> np.ndarray:
    """n rows spread evenly over the `n_cells` non-empty cells with the fewest training images."""
    keys, counts = np.unique(cells, return_counts=True)
    rare = keys[np.argsort(counts, kind="stable")[:n_cells]]
    cells = np.asarray(cells)
    return np.concatenate([rng.choice(np.flatnonzero(cells == k), n // len(rare)) for k in rare])


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = json.loads(value) if value[:1] in "[{0123456789-.tf" and value not in ("") else value
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def vae_reconstruct(backbone_dir: Path, images: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction, reference), both in [0, 1] at the model's resolution."""
    backbone = load_backbone(backbone_dir, device="cpu")
    x = to_model_space(images, resolution)
    recon = backbone.vae.decode(backbone.vae.encode(x).latent_dist.mean).sample
    return ((recon.clamp(-1, 1) + 1) / 2).numpy(), ((x + 1) / 2).numpy()


def dice_medians(images: np.ndarray, controls: np.ndarray, thresholds) -> tuple[float, float, np.ndarray]:
    """(median ED Dice, median ES Dice, each image's QC outcome as 0/1)."""
    results = [mask_adherence(i, c, thresholds) for i, c in zip(images, controls)]
    ed = [r["phases"]["ED"]["dice"] for r in results if r["phases"].get("ED", {}).get("scorable")]
    es = [r["phases"]["ES"]["dice"] for r in results if r["phases"].get("ES", {}).get("scorable")]
    return float(np.median(ed)), float(np.median(es)), np.array([r["passed"] for r in results], dtype=float)


def pass_by_slice(passed: np.ndarray, slices: np.ndarray) -> dict[str, float]:
    """QC pass rate per slice offset of the mask's frame (the apical neighbour, +1, fails most)."""
    return {f"{offset:+d}": round(float(passed[slices == offset].mean()), 3) for offset in np.unique(slices)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--set", nargs="*", default=[], help="DiffusionConfig overrides, field=value")
    parser.add_argument("--images", type=int, default=128, help="images generated for the measures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", type=Path, default=None,
                        help="a trained backbone folder (e.g. <lake>/models/diffusion_backbone): train the ControlNet only")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the trained models here (backbone/, cn/) instead of a temporary folder")
    parser.add_argument("--vae-only", action="store_true",
                        help="stop after the backbone: VAE PSNR and the QC/Dice of VAE reconstructions of real frames "
                             "(the ceiling any generator through this VAE can reach); pair with --set unet_steps=1")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    profile = get_profile(args.profile)
    overrides = parse_overrides(args.set)
    config = profile.diffusion.replace(**overrides)
    images, controls, prompts, cells, slices = training_frames(args.lake)
    rng = np.random.default_rng(args.seed)
    calib = rng.permutation(len(images))[:500]
    thresholds, _ = calibrate_thresholds(images[calib], controls[calib])
    probe = rng.permutation(len(images))[: args.images]
    rare = rare_cell_probe(cells, args.images, rng)
    out: dict = {"profile": args.profile, "overrides": overrides, "n_train_images": len(images)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.out or Path(tmp)
        backbone = args.backbone or Path(tmp) / "backbone"
        if args.backbone is None:
            t0 = time.perf_counter()
            train_small_backbone(images, prompts, config, backbone, log=lambda _: None, cells=cells)
            out["backbone_seconds"] = round(time.perf_counter() - t0, 1)
        recon, reference = vae_reconstruct(backbone, images[probe], config.resolution)
        out["vae_psnr_ed"], out["vae_psnr_es"] = round(psnr(recon[:, 0], reference[:, 0]), 2), round(psnr(recon[:, 1], reference[:, 1]), 2)
        recon_ed, recon_es, recon_passed = dice_medians(recon.astype(np.float32), controls[probe], thresholds)
        real_ed, real_es, real_passed = dice_medians(images[probe], controls[probe], thresholds)
        out["vae_recon_qc_pass_by_slice"] = pass_by_slice(recon_passed, slices[probe])
        out["real_qc_pass_by_slice"] = pass_by_slice(real_passed, slices[probe])
        out.update(vae_recon_dice_ed_median=round(recon_ed, 3), vae_recon_dice_es_median=round(recon_es, 3),
                   vae_recon_qc_pass=round(float(recon_passed.mean()), 3))
        if args.vae_only:
            print(json.dumps(out))
            return out
        t0 = time.perf_counter()
        train_controlnet(backbone, images, controls, prompts, config, Path(tmp) / "cn", log=lambda _: None, cells=cells)
        out["controlnet_seconds"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        sampler = Sampler(backbone, Path(tmp) / "cn" / "controlnet", config)
        generated = sampler.generate(controls[probe], [prompts[i] for i in probe], list(range(len(probe))), log=None)
        out["sample_images_per_s"] = round(len(probe) / (time.perf_counter() - t0), 2)
        generated_rare = sampler.generate(controls[rare], [prompts[i] for i in rare], list(range(len(rare))), log=None)
    ed, es, passed = dice_medians(generated, controls[probe], thresholds)
    out["qc_pass_first_attempt_by_slice"] = pass_by_slice(passed, slices[probe])
    out["rare_cells_qc_pass_first_attempt"] = round(float(dice_medians(generated_rare, controls[rare], thresholds)[2].mean()), 3)
    out.update(qc_pass_first_attempt=round(float(passed.mean()), 3), dice_ed_median=round(ed, 3), dice_es_median=round(es, 3),
               real_qc_pass=round(float(real_passed.mean()), 3), real_dice_ed_median=round(real_ed, 3), real_dice_es_median=round(real_es, 3),
               thresholds={"min_contrast": round(thresholds.min_contrast, 3), "min_dice": round(thresholds.min_dice, 3)})
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
