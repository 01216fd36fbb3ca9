"""Throughput of the HF classifier's training loop against the bare ResNet-18 step, and what
channels-last memory and bf16 autocast buy.

    python benchmarks/classifier.py [--images 1024] [--size 64] [--batch 64]

Prints one JSON line (all figures from this one run, so compare them as ratios):
- bare_train_images_per_s: forward, backward and Adam step on one fixed batch, channels-last
  (the model as `build_classifier` makes it) and contiguous (NCHW), in fp32, and channels-last
  under bf16 autocast;
- loop_train_images_per_s: `train_classifier` over random frames for one epoch (batch reads,
  augmentation, validation on 256 images included) at the config's dtype (`compute_dtype`);
  loop_overhead = bare (same dtype) / loop;
- predict_images_per_s: `predict` (inference), both memory formats (fp32) and bf16;
- bf16_speedup: bf16 / fp32, channels-last (`native_bf16`: whether this device has bf16 units).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.classify.config import ClassifierConfig  # noqa: E402
from cardio_assets.classify.model import build_classifier  # noqa: E402
from cardio_assets.classify.train import predict, train_classifier  # noqa: E402
from cardio_assets.compute import dtype_name, native_bf16, resolve_device  # noqa: E402


def bare_train_rate(size: int, batch: int, channels_last: bool, steps: int = 8, dtype=torch.float32) -> float:
    model = build_classifier(size, compute_dtype=dtype)
    if not channels_last:
        model.to(memory_format=torch.contiguous_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, 2, (batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def predict_rate(images: np.ndarray, size: int, channels_last: bool, dtype=torch.float32) -> float:
    model = build_classifier(size, compute_dtype=dtype)
    if not channels_last:
        model.to(memory_format=torch.contiguous_format)
    predict(model, images[:128])
    t0 = time.perf_counter()
    predict(model, images)
    return len(images) / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.random((args.images, 3, args.size, args.size), dtype=np.float32)
    labels = (rng.random(args.images) < 0.25).astype(np.int64)
    val_images, val_labels = images[:256], labels[:256]
    config = ClassifierConfig.demo().with_(image_size=args.size, batch_size=args.batch, epochs=1)

    out: dict = {"images": args.images, "size": args.size, "batch": args.batch, "threads": torch.get_num_threads()}
    dtype = config.compute_dtype()
    out["compute_dtype"] = dtype_name(dtype)
    out["native_bf16"] = native_bf16(resolve_device("auto"))
    variants = {"channels_last": (True, torch.float32), "contiguous": (False, torch.float32), "channels_last_bf16": (True, torch.bfloat16)}
    out["bare_train_images_per_s"] = {name: round(bare_train_rate(args.size, args.batch, last, dtype=dt), 1)
                                      for name, (last, dt) in variants.items()}
    t0 = time.perf_counter()
    train_classifier((images, labels), (val_images, val_labels), config, seed=0, log=lambda _: None)
    loop_seconds = time.perf_counter() - t0
    val_seconds = 256 / predict_rate(val_images, args.size, True, dtype)
    out["loop_train_images_per_s"] = round(args.images / (loop_seconds - val_seconds), 1)
    bare = out["bare_train_images_per_s"]["channels_last_bf16" if dtype == torch.bfloat16 else "channels_last"]
    out["loop_overhead"] = round(bare / out["loop_train_images_per_s"], 3)
    out["predict_images_per_s"] = {name: round(predict_rate(images, args.size, last, dt), 1)
                                   for name, (last, dt) in variants.items()}
    out["channels_last_speedup"] = {
        "train": round(out["bare_train_images_per_s"]["channels_last"] / out["bare_train_images_per_s"]["contiguous"], 3),
        "predict": round(out["predict_images_per_s"]["channels_last"] / out["predict_images_per_s"]["contiguous"], 3),
    }
    out["bf16_speedup"] = {
        kind: round(out[f"{kind}_images_per_s"]["channels_last_bf16"] / out[f"{kind}_images_per_s"]["channels_last"], 3)
        for kind in ("bare_train", "predict")
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
