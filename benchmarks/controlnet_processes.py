"""ControlNet training on the CPU: one process with every core's thread against one process per
core with one thread each (torch DDP over gloo, `generation/data_parallel.py`).

    python benchmarks/controlnet_processes.py [--profile demo] [--steps 60] [--processes 2]

The small demo models are bound by per-operation overhead, not arithmetic: an op on a 16x16
latent costs about as much on two threads as on one, so two single-thread processes that each
take half of the batch may train faster than one process with two threads. Both arms train the
same global batch (DDP's size-weighted shares, tested to follow the one-process run).

Prints one JSON line, all figures from this one run: loop steps/s of each arm (rank 0's
training loop, caches excluded), their ratio, and the wall seconds of each arm with process
start-up (spawn, imports) included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.diffusion import build_random_backbone  # noqa: E402
from cardio_assets.generation import DiffusionConfig  # noqa: E402
from cardio_assets.generation.data_parallel import train_controlnet_data_parallel  # noqa: E402
from cardio_assets.generation.toy import toy_dataset  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo", choices=["smoke", "demo"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--train-images", type=int, default=512)
    args = ap.parse_args(argv)

    cores = os.cpu_count() or 1
    config = DiffusionConfig.preset(args.profile, controlnet_steps=args.steps, log_every_seconds=1e9,
                                    checkpoint_every=10**9)
    images, labels, prompts, _ = toy_dataset(args.train_images, config.resolution, seed=0)
    out: dict = {"profile": args.profile, "steps": args.steps, "batch_size": config.batch_size, "cores": cores,
                 "loadavg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone_dir = build_random_backbone(config, prompts, tmp / "backbone")
        arms = {"one_process": (1, config.replace(cpu_threads=cores)),
                f"{args.processes}_processes": (args.processes, config.replace(cpu_threads=max(1, cores // args.processes)))}
        for name, (world, arm_config) in arms.items():
            t0 = time.perf_counter()
            record = train_controlnet_data_parallel(world, backbone_dir, images, labels, prompts, arm_config,
                                                    tmp / name, log=lambda _: None, resume="never")
            out[name] = {"processes": world, "threads_each": arm_config.cpu_threads,
                         "loop_steps_per_s": record["steps_per_second"], "wall_seconds": round(time.perf_counter() - t0, 1)}
    one, many = out["one_process"], out[f"{args.processes}_processes"]
    out["loop_speedup"] = round(many["loop_steps_per_s"] / one["loop_steps_per_s"], 3)
    out["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
