"""End-to-end run of the generation layer on toy data: backbone, ControlNet, sampling, QC, grids.

    python benchmarks/generator_on_toy_data.py --preset demo --out /tmp/gen_demo \
        --train-images 6000 --sample-images 1500

Toy label maps and images (`cardio_assets.generation.toy`), not the phantom cohort nor the
Dagster graph (for those: `make demo`). Measures the generator's speed and look on its own.

Prints one JSON line of timings at the end and writes `timings.json`, `grid_bmi.png` ("one
mask, BMI varied"), `grid_seeds.png` ("one prompt, several seeds") and `grid_real_vs_synth.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.cohort.cells import prompt  # noqa: E402
from cardio_assets.generation.backbone_training import train_small_backbone  # noqa: E402
from cardio_assets.generation.config import DiffusionConfig  # noqa: E402
from cardio_assets.generation.controlnet import train_controlnet  # noqa: E402
from cardio_assets.generation.grid import sample_grid  # noqa: E402
from cardio_assets.generation.qc import QCItem, generate_with_qc, make_check, mask_adherence  # noqa: E402
from cardio_assets.generation.sampling import Sampler, sample_seed  # noqa: E402
from cardio_assets.generation.toy import toy_dataset  # noqa: E402


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="demo", choices=["smoke", "demo"])
    ap.add_argument("--out", default="/tmp/gen_demo")
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--sample-images", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-backbone", action="store_true", help="reuse OUT/backbone")
    ap.add_argument("--skip-controlnet", action="store_true", help="reuse OUT/controlnet")
    args = ap.parse_args(argv)

    config = DiffusionConfig.preset(args.preset, cpu_threads=args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = config.resolution
    images, labels, prompts, keys = toy_dataset(args.train_images, res, seed=config.seed)
    timings: dict = {"preset": args.preset, "train_images": args.train_images, "threads": args.threads}

    if not args.skip_backbone:
        rec = train_small_backbone(images, prompts, config, out / "backbone", log=_log)
        timings["backbone_seconds"] = rec["seconds"]
        timings["backbone_stage_seconds"] = rec["stage_seconds"]
        timings["backbone_final_loss"] = rec["final_loss"]
    if not args.skip_controlnet:
        rec = train_controlnet(out / "backbone", images, labels, prompts, config, out / "controlnet", log=_log, resume="never")
        timings["controlnet_seconds"] = rec["seconds"]
        timings["controlnet_steps_per_second"] = rec["steps_per_second"]
        timings["controlnet_final_loss"] = rec["final_loss"]
    if "backbone_seconds" in timings and "controlnet_seconds" in timings:
        timings["training_seconds"] = round(timings["backbone_seconds"] + timings["controlnet_seconds"], 1)

    t0 = time.perf_counter()
    sampler = Sampler(out / "backbone", out / "controlnet" / "controlnet", config)
    timings["sampler_load_seconds"] = round(time.perf_counter() - t0, 2)
    n = args.sample_images
    rng = np.random.default_rng(123)
    pick = rng.integers(0, len(images), n)
    seeds = [sample_seed(keys[i], k, 0, config.seed) for k, i in enumerate(pick)]
    t0 = time.perf_counter()
    synth = sampler.generate(labels[pick], [prompts[i] for i in pick], seeds, log=_log)
    dt = time.perf_counter() - t0
    timings["sampling_seconds"] = round(dt, 1)
    timings["sampling_images_per_second"] = round(n / dt, 3)

    qc = [mask_adherence(s, labels[i]) for s, i in zip(synth, pick)]
    timings["qc_pass_rate"] = round(float(np.mean([q["passed"] for q in qc])), 3)
    timings["qc_mean_dice"] = round(float(np.mean([q["score"] for q in qc])), 3)
    real_qc = [mask_adherence(images[i], labels[i]) for i in pick[:200]]
    timings["qc_pass_rate_real"] = round(float(np.mean([q["passed"] for q in real_qc])), 3)

    # figures
    mask = labels[pick[0]]
    bmi_prompts = [prompt("male", 65, b, "healthy") for b in (22, 27, 33)] + [prompt("male", 65, b, "hf") for b in (22, 27, 33)]
    bmi_imgs = sampler.generate(np.stack([mask] * 6), bmi_prompts, [7] * 6, log=None)
    sample_grid(bmi_imgs, [p.replace(", ", "\n", 1) for p in bmi_prompts], out / "grid_bmi.png", ncols=3,
                suptitle="one mask, one seed, prompt varied")
    p0 = prompts[pick[0]]
    seed_imgs = sampler.generate(np.stack([mask] * 6), [p0] * 6, list(range(6)), log=None)
    sample_grid(seed_imgs, [f"seed {s}" for s in range(6)], out / "grid_seeds.png", ncols=3, suptitle=p0)
    both = np.concatenate([images[pick[:6]], synth[:6]])
    titles = [f"real\n{prompts[i]}" for i in pick[:6]] + [f"synthetic (same mask)\nQC {'pass' if q['passed'] else 'fail'} dice {q['score']:.2f}" for q in qc[:6]]
    sample_grid(both, titles, out / "grid_real_vs_synth.png", ncols=6, masks=np.concatenate([labels[pick[:6]]] * 2))

    # the QC loop on a few items
    items = [QCItem(keys[i], k, prompts[i], labels[i]) for k, i in enumerate(pick[:64])]
    acc, rej = generate_with_qc(sampler.generate, make_check(), items, log=_log, base_seed=config.seed)
    timings["qc_loop"] = {"items": len(items), "accepted": len(acc), "rejected": len(rej),
                          "attempts_hist": np.bincount([r["attempts"] for r in acc + rej]).tolist()}
    (out / "timings.json").write_text(json.dumps(timings, indent=1))
    print(json.dumps(timings), flush=True)
    return timings


if __name__ == "__main__":
    main()
