"""Throughput of the HF classifier's training loop against the bare ResNet-18 step, and what
channels-last memory buys.

    python benchmarks/classifier.py [--images 1024] [--size 64] [--batch 64]

Prints one JSON line (all figures from this one run, so compare them as ratios):
- bare_train_images_per_s: forward, backward and Adam step on one fixed batch, channels-last
  (the model as `build_classifier` makes it) and contiguous (NCHW);
- loop_train_images_per_s: `train_classifier` over random frames for one epoch (batch reads,
  augmentation, validation on 256 images included); loop_overhead = bare / loop;
- predict_images_per_s: `predict` (inference), both memory formats.
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


def bare_train_rate(size: int, batch: int, channels_last: bool, steps: int = 8) -> float:
    model = build_classifier(size)
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


def predict_rate(images: np.ndarray, size: int, channels_last: bool) -> float:
    model = build_classifier(size)
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
    out["bare_train_images_per_s"] = {fmt: round(bare_train_rate(args.size, args.batch, fmt == "channels_last"), 1)
                                      for fmt in ("channels_last", "contiguous")}
    t0 = time.perf_counter()
    train_classifier((images, labels), (val_images, val_labels), config, seed=0, log=lambda _: None)
    loop_seconds = time.perf_counter() - t0
    val_seconds = 256 / predict_rate(val_images, args.size, True)
    out["loop_train_images_per_s"] = round(args.images / (loop_seconds - val_seconds), 1)
    out["loop_overhead"] = round(out["bare_train_images_per_s"]["channels_last"] / out["loop_train_images_per_s"], 3)
    out["predict_images_per_s"] = {fmt: round(predict_rate(images, args.size, fmt == "channels_last"), 1)
                                   for fmt in ("channels_last", "contiguous")}
    out["channels_last_speedup"] = {
        "train": round(out["bare_train_images_per_s"]["channels_last"] / out["bare_train_images_per_s"]["contiguous"], 3),
        "predict": round(out["predict_images_per_s"]["channels_last"] / out["predict_images_per_s"]["contiguous"], 3),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
