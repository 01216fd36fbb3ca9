"""Peak RAM of the frames -> backbone -> ControlNet path at two cohort sizes: flat when training
reads memory-mapped frames a batch at a time (as the assets do), growing when every frame is
read into memory first (as they did before).

    python benchmarks/generator_memory.py [--sizes 2000 8000] [--size 64] [--cache-in-memory-max-bytes N]

Each measurement runs in a fresh process: toy frames (`generation/toy.py`) are written to a
memory-mapped .npy like the lake's, then a small backbone (VAE + UNet, a few steps) and a
ControlNet (a few steps) train on them. The figure is the process's peak anonymous resident
memory (RssAnon, sampled every 20 ms): what must fit in RAM. Pages of the memory-mapped file
that a read touches count in the total RSS (also reported, ru_maxrss) but are the kernel's page
cache, dropped under pressure. The models are tiny, so the difference between the two sizes is
the data's share.
Prints one JSON line: peak MiB per (mode, images), the frames' own size, and per mode the
growth from the smaller to the larger cohort as a share of the extra frames' bytes (about 0 =
bounded by a batch window, about 1 or more = proportional to the cohort).

The latent caches (the backbone's moments, the ControlNet's posteriors; at 64 px with this
benchmark's VAE 2 x 4 x 32 x 32 float32 per image, 2/3 of a float32 frame) are in RAM up to
`--cache-in-memory-max-bytes` (default: the profile's `cache_in_memory_max_bytes`, 4 GiB) and in
memory-mapped files beyond: with 0, what grows is only what the batch window needs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_frames(folder: Path, n: int, size: int) -> None:
    from cardio_assets.generation.toy import toy_dataset

    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(n, 3, size, size))
    controls = np.lib.format.open_memmap(folder / "controls.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    prompts, cells = [], []
    template_images, template_labels, template_prompts, template_cells = toy_dataset(256, size, seed=0)
    for start in range(0, n, 256):  # tiled from 256 toy patients: the data's content does not matter here
        stop = min(start + 256, n)
        images[start:stop] = template_images[: stop - start]
        controls[start:stop] = template_labels[: stop - start]
        prompts += template_prompts[: stop - start]
        cells += template_cells[: stop - start]
    images.flush()
    controls.flush()
    (folder / "prompts.json").write_text(json.dumps({"prompts": prompts, "cells": cells}))


class PeakAnonymousMemory:
    """The largest RssAnon (/proc/self/status) seen while running, sampled in a thread."""

    def __init__(self, every_seconds: float = 0.02):
        self.every, self.peak_kib, self._stop = every_seconds, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.now_kib())
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self.now_kib())


def train(folder: Path, mode: str, size: int, cache_max: int | None) -> dict:
    """In this process: train on the frames in `folder`; return peak memory figures in MiB."""
    import torch

    from cardio_assets.classify.train import Frames
    from cardio_assets.generation import DiffusionConfig, train_controlnet, train_small_backbone

    torch.set_num_threads(1)
    meta = json.loads((folder / "prompts.json").read_text())
    images = Frames([(np.load(folder / "images.npy", mmap_mode="r"), None)])
    controls = Frames([(np.load(folder / "controls.npy", mmap_mode="r"), None)])
    if mode == "in_memory":
        images, controls = images.take(np.arange(len(images))), controls.take(np.arange(len(controls))).astype(np.uint8)
    config = DiffusionConfig.smoke(
        resolution=size, vae_block_channels=(8, 16), vae_steps=4, unet_steps=4, controlnet_steps=4, batch_size=8,
        checkpoint_every=0, log_every_seconds=1e9, device="cpu", cpu_threads=1,
    )
    if cache_max is not None:
        config = config.replace(cache_in_memory_max_bytes=cache_max)
    quiet = lambda _: None  # noqa: E731
    with PeakAnonymousMemory() as peak:
        train_small_backbone(images, meta["prompts"], config, folder / f"backbone_{mode}", log=quiet, cells=meta["cells"])
        train_controlnet(folder / f"backbone_{mode}", images, controls, meta["prompts"], config, folder / f"controlnet_{mode}",
                         log=quiet, cells=meta["cells"])
    return {"peak_anon_mib": peak.peak_kib / 1024, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 8000])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cache-in-memory-max-bytes", type=int, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # folder, mode
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(Path(args.child[0]), args.child[1], args.size, args.cache_in_memory_max_bytes)))
        return
    result = {"benchmark": "generator_memory", "image_size": args.size, "cache_in_memory_max_bytes": args.cache_in_memory_max_bytes,
              "peak_anon_mib": {}, "peak_rss_mib": {}, "frames_mib": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            make_frames(folder, n, args.size)
            result["frames_mib"][n] = round((folder / "images.npy").stat().st_size / 2**20, 1)
            for mode in ("lazy", "in_memory"):
                cache = [] if args.cache_in_memory_max_bytes is None else ["--cache-in-memory-max-bytes", str(args.cache_in_memory_max_bytes)]
                out = subprocess.run([sys.executable, __file__, "--size", str(args.size), *cache, "--child", str(folder), mode],
                                     capture_output=True, text=True, check=True)
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                result["peak_anon_mib"][f"{mode}_{n}"] = round(figures["peak_anon_mib"], 1)
                result["peak_rss_mib"][f"{mode}_{n}"] = round(figures["peak_rss_mib"], 1)
    small, large = args.sizes
    extra = result["frames_mib"][large] - result["frames_mib"][small]
    result["growth_per_extra_frame_byte"] = {
        mode: round((result["peak_anon_mib"][f"{mode}_{large}"] - result["peak_anon_mib"][f"{mode}_{small}"]) / extra, 3)
        for mode in ("lazy", "in_memory")
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
