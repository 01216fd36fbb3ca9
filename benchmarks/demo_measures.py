"""The generator's fidelity, read off a finished run's lake (after `make demo`).

    python benchmarks/demo_measures.py --lake data_lake

Prints one JSON line with the measures the generator is judged by:
- qc_pass: kept / requested within 3 attempts, overall and the lowest cell;
- rare_cells_qc_pass: the same over the 9 cells with the fewest training patients;
- qc_pass_per_attempt: the share passing at attempt k of the images that reached attempt k. A
  falling share says the failures stick to their masks (a retry keeps the mask, new seed);
- qc_failure_modes: how often each failure mode ended an image's last failing attempt;
- qc_source_frames: where the QC log records it (2026.12.2 on), the share of requests whose real source
  frame (the one whose masks they drew) passes the same check, the synthetic pass rate where it does
  and where it does not, and the lowest cell's source-frame rate (`metrics/qc_summary.py`);
- synthetic_only_over_real: overall balanced accuracy of the synthetic-only classifier over the
  real-only one, on the real test split (mean over seeds);
- dice_ed_median / dice_es_median: blood-pool Dice of the *kept* synthetic ED and ES frames
  against their masks (QC's segmentation; rejected images are not stored), and the same for
  real training frames;
- vae_psnr_ed / vae_psnr_es: encode-decode PSNR of 256 real training frames (backbone trained here),
  and the phantom's noise floor beside them (`noise_floor.py`: a noisy frame against the same
  frame rendered without noise; a VAE that drops the noise cannot score above it on noisy frames);
- fid_ratio: real-vs-synthetic FID over the real-real lower bound, per Table 1 comparison;
- vae_fid_ratio: per Table 1 group, FID of real frames of one half of its patients against the VAE's
  reconstructions of the other half's frames, over the FID of the same two halves as they are: what
  decoding through the VAE alone costs, the part of fid_ratio no diffusion model can remove;
- near_copies: kept images within the memorization distance of a real training image;
- attribute_predictors: validation balanced accuracy per attribute and its share of the phantom's
  ceiling of what the frames show (`phantom/in_frame.py`), and of the ceiling of every parameter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.noise_floor import noise_floor  # noqa: E402
from cardio_assets.classify.attributes import AttributePredictor  # noqa: E402
from cardio_assets.classify.model import PenultimateFeatures  # noqa: E402
from cardio_assets.cohort.cells import CELL_KEYS  # noqa: E402
from cardio_assets.defs.images import gather  # noqa: E402
from cardio_assets.generation import QCThresholds, mask_adherence  # noqa: E402
from cardio_assets.generation.backbone import load_backbone  # noqa: E402
from cardio_assets.generation.control import to_model_space  # noqa: E402
from cardio_assets.lake.values import read_value  # noqa: E402
from cardio_assets.metrics.qc_summary import qc_by_cell  # noqa: E402
from cardio_assets.metrics.realism import (  # noqa: E402
    REAL_REAL,
    REAL_SYNTHETIC,
    TABLE1_ATTRIBUTES,
    FeatureBank,
    fid_kid,
    module_extractor,
)
from cardio_assets.metrics.shift import shift_values  # noqa: E402

LOOSE = QCThresholds(min_contrast=-1.0, min_dice=0.0)  # measure, do not judge


def dice_medians(images: np.ndarray, controls: np.ndarray) -> tuple[float, float]:
    results = [mask_adherence(i, c, LOOSE)["phases"] for i, c in zip(images, controls)]
    ed = [p["ED"]["dice"] for p in results if p.get("ED", {}).get("scorable")]
    es = [p["ES"]["dice"] for p in results if p.get("ES", {}).get("scorable")]
    return round(float(np.median(ed)), 3), round(float(np.median(es)), 3)


@torch.no_grad()
def reconstruct(backbone, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Encode-decode through the backbone's VAE (latent means), float [0, 1]."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_model_space(images[start:start + batch_size], backbone.resolution)
        out.append(((backbone.vae.decode(backbone.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1) + 1) / 2).numpy())
    return np.concatenate(out)


def vae_fid_ratios(lake: Path, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Per Table 1 group: FID(real half A, VAE reconstructions of half B) / FID(A, B), halves by patient,
    with the realism report's extractor (the attribute predictors' penultimate layer)."""
    frames = {k: read_value(lake / "frames" / k) for k in CELL_KEYS}
    real, _ = gather(frames, splits=("train",))
    index, images = real.index.reset_index(drop=True), real.frames()
    predictor = AttributePredictor.load(lake / "models" / "attribute_predictors", images.image_shape[-1])
    extractor = module_extractor(PenultimateFeatures(predictor.model), "attribute predictors' penultimate layer")
    backbone = load_backbone(lake / "models" / "diffusion_backbone", device="cpu")
    rng = np.random.default_rng(seed)
    out = {}
    for _, column, values, labels in TABLE1_ATTRIBUTES:
        for value, label in zip(values, labels):
            rows = np.flatnonzero(index[column].to_numpy() == value)
            patients = index["patient_id"].to_numpy()[rows]
            chosen = set(rng.permutation(pd.unique(patients))[: len(pd.unique(patients)) // 2])
            in_a = np.array([p in chosen for p in patients])
            m = min(n, in_a.sum(), (~in_a).sum())
            a = images.take(np.sort(rng.choice(rows[in_a], m, replace=False))).astype(np.float32)
            b = images.take(np.sort(rng.choice(rows[~in_a], m, replace=False))).astype(np.float32)
            bank = FeatureBank(a, extractor)
            floor = fid_kid(bank, b, extractor, n=m, repeats=1, kid_subsets=10)["fid_mean"]
            through_vae = fid_kid(bank, reconstruct(backbone, b), extractor, n=m, repeats=1, kid_subsets=10)["fid_mean"]
            out[label] = round(through_vae / floor, 2)
    return out


@torch.no_grad()
def vae_psnr(backbone_dir: Path, images: np.ndarray) -> tuple[float, float]:
    backbone = load_backbone(backbone_dir, device="cpu")
    recon = reconstruct(backbone, images)
    ref = ((to_model_space(images, backbone.resolution) + 1) / 2).numpy()
    return tuple(round(float(10 * np.log10(1 / np.mean((recon[:, c] - ref[:, c]) ** 2))), 2) for c in (0, 1))


def qc_pass_per_attempt(log: pd.DataFrame) -> list[float]:
    """Of the images that reached attempt k, the share that passed at it (k = 1, 2, ...)."""
    shares = []
    for k in range(1, int(log["attempts"].max()) + 1):
        reached = log["attempts"] >= k
        shares.append(round(float((reached & (log["attempts"] == k) & log["qc_passed"]).sum() / reached.sum()), 3))
    return shares


def qc_failure_modes(log: pd.DataFrame) -> dict[str, int]:
    modes = log.loc[~log["qc_passed"], "failure_modes"].astype(str).str.split(";").explode().str.strip()
    return {m: int(n) for m, n in modes[modes != ""].value_counts().items()}


def predictor_shares(predictors: dict) -> dict[str, dict[str, float]]:
    """{attribute: validation accuracy, share of the in-frame ceiling, share of every parameter's}."""
    out = {}
    for attribute, accuracy in predictors["validation"].items():
        row = {"balanced_accuracy": round(accuracy, 3)}
        for name, key in (("share_of_ceiling", "ceiling"), ("share_of_ceiling_all_parameters", "ceiling_all_parameters")):
            top = predictors.get(key, {}).get(attribute)
            if top:
                row[name] = round(accuracy / top, 3)
        out[attribute] = row
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, default=Path("data_lake"))
    parser.add_argument("--profile", default="demo", help="the profile the lake was made with (for the phantom's noise floor)")
    args = parser.parse_args(argv)
    lake = args.lake
    log = pd.concat([read_value(lake / "synthetic_qc_log" / k) for k in CELL_KEYS], ignore_index=True)
    cells = read_value(lake / "subgroup_cells")
    per_cell = log.groupby("cell")["qc_passed"].mean()
    rare = cells[cells["n_train"] > 0].nsmallest(9, "n_train")["cell"]
    out: dict = {
        "qc_pass": round(float(log["qc_passed"].mean()), 3),
        "qc_pass_lowest_cell": [per_cell.idxmin(), round(float(per_cell.min()), 3)],
        "rare_cells_qc_pass": round(float(log[log["cell"].isin(rare)]["qc_passed"].mean()), 3),
        "near_copies": int(log["near_copy"].sum()),
        "qc_pass_per_attempt": qc_pass_per_attempt(log),
        "qc_failure_modes": qc_failure_modes(log),
    }
    if "source_frame_qc_passed" in log:
        source = log["source_frame_qc_passed"].astype(bool)
        by_cell = qc_by_cell(log).set_index("cell")
        out["qc_source_frames"] = {
            "pass": round(float(source.mean()), 3),
            "synthetic_pass_where_source_passes": round(float(log.loc[source, "qc_passed"].mean()), 3),
            "synthetic_pass_where_source_fails": round(float(log.loc[~source, "qc_passed"].mean()), 3) if (~source).any() else None,
            "lowest_cell_source_pass": round(float(by_cell.loc[per_cell.idxmin(), "source_frames_pass_rate"]), 3),
        }
    out["attribute_predictors"] = predictor_shares(read_value(lake / "attribute_predictors"))
    fairness = read_value(lake / "fairness_report")
    overall = fairness[(fairness["metric"] == "balanced_accuracy") & (fairness["evaluation_set"] == "test")
                       & (fairness["group"] == "Overall")].groupby("strategy")["mean"].mean()
    if {"real", "synth_only"} <= set(overall.index):
        out["balanced_accuracy_test"] = {k: round(float(v), 3) for k, v in overall.items()}
        out["synthetic_only_over_real"] = round(float(overall["synth_only"] / overall["real"]), 3)
    if (fairness["evaluation_set"] == "ood_test").any():  # a vendor or site held out
        shift = shift_values(fairness, "test", "ood_test", list(overall.index)).set_index("strategy").round(3)
        out["in_vs_out_of_distribution"] = {s: {k: float(v) for k, v in row.items()} for s, row in shift.iterrows()}
    realism = read_value(lake / "realism_report")
    rr = realism[realism["kind"] == REAL_REAL].set_index(["attribute", "comparison"])["fid_mean"]
    rs = realism[realism["kind"] == REAL_SYNTHETIC].set_index(["attribute", "comparison"])["fid_mean"]
    out["fid_ratio"] = {f"{a}: {c}": round(float(rs[(a, c)] / rr[(a, c)]), 2) for a, c in rs.index if (a, c) in rr.index}
    kept_images, kept_controls, real_images, real_controls = [], [], [], []
    for key in CELL_KEYS:
        syn = read_value(lake / "synthetic_frames" / key)
        if len(syn):
            kept_images.append(np.asarray(syn.images, np.float32))
            kept_controls.append(np.asarray(syn.controls))
        real = read_value(lake / "frames" / key)
        rows = np.flatnonzero((real.index["split"] == "train").to_numpy())[:8]
        real_images.append(np.asarray(real.images[rows], np.float32))
        real_controls.append(np.asarray(real.controls[rows]))
    out["dice_ed_median"], out["dice_es_median"] = dice_medians(np.concatenate(kept_images), np.concatenate(kept_controls))
    real_images = np.concatenate(real_images)
    out["real_dice_ed_median"], out["real_dice_es_median"] = dice_medians(real_images, np.concatenate(real_controls))
    backbone = lake / "models" / "diffusion_backbone"
    if backbone.exists():
        out["vae_psnr_ed"], out["vae_psnr_es"] = vae_psnr(backbone, real_images[:256])
        floor = noise_floor(args.profile)
        out["noise_floor_psnr_ed"], out["noise_floor_psnr_es"] = floor["noise_floor_psnr_ed"], floor["noise_floor_psnr_es"]
        if (lake / "models" / "attribute_predictors").exists():
            out["vae_fid_ratio"] = vae_fid_ratios(lake)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
