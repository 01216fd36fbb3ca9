"""Throughput of ControlNet training and sampling, against the bare model work.

    python benchmarks/diffusion.py --profile demo [--train-steps 30] [--sample-images 128]

Prints one JSON line:
- train_steps_per_s: `train_controlnet` loop (data sampling, noise, caching excluded);
  bare_train_steps_per_s: ControlNet + UNet forward and backward + AdamW step on random
  tensors of the same shapes; train_overhead = bare / pipeline (1.0 = no overhead).
- sample_images_per_s: `Sampler.generate` (diffusers pipeline, CFG, VAE decode, postprocess);
  bare_sample_images_per_s: the same number of ControlNet + UNet forwards on the CFG-doubled
  batch plus one VAE decode per batch; sample_overhead = bare / pipeline.
- on CUDA: peak memory (GiB) of each phase.
Data: toy images/masks at the profile's resolution; the backbone is built at random init from
the profile's config (not trained: throughput does not depend on the weights), or loaded from
--backbone-folder (e.g. SD 2.1-base for the paper profile).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.compute import autocast_context, dtype_name, resolve_device, resolve_dtype  # noqa: E402
from cardio_assets.generation import DiffusionConfig, Sampler, train_controlnet  # noqa: E402
from cardio_assets.generation.backbone import (  # noqa: E402
    make_noise_scheduler,
    make_text_encoder,
    make_unet,
    make_vae,
    save_backbone,
)
from cardio_assets.generation.config import SD21_BASE_UNET  # noqa: E402
from cardio_assets.generation.control import control_channels  # noqa: E402
from cardio_assets.generation.tokenizer import build_prompt_tokenizer  # noqa: E402
from cardio_assets.generation.toy import toy_dataset  # noqa: E402


def build_random_backbone(config: DiffusionConfig, prompts, folder: Path) -> Path:
    tok = build_prompt_tokenizer(prompts, folder / "_tok", config.text_max_length)
    vae = make_vae(config)
    if config.name == "paper":
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel(**SD21_BASE_UNET)
    else:
        unet = make_unet(config)
    text = make_text_encoder(config, tok)
    save_backbone(folder, vae, text, tok, unet, make_noise_scheduler(config))
    return folder


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device):
    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == "cuda" else None


def bare_training(backbone_dir, config, steps, device, dtype) -> float:
    from diffusers import ControlNetModel

    from cardio_assets.generation.backbone import load_backbone

    bb = load_backbone(backbone_dir, device=device, dtype=dtype)
    net = ControlNetModel.from_unet(bb.unet, conditioning_embedding_out_channels=config.controlnet_cond_channels,
                                    conditioning_channels=control_channels(config.control_encoding)).to(device)
    if config.gradient_checkpointing:
        net.enable_gradient_checkpointing()
        bb.unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr)
    B, L, C = config.batch_size, config.resolution // bb.vae_scale_factor, bb.unet.config.in_channels
    seq = bb.tokenizer.model_max_length
    z = torch.randn(B, C, L, L, device=device)
    h = torch.randn(B, seq, bb.unet.config.cross_attention_dim, device=device, dtype=dtype)
    cond = torch.rand(B, control_channels(config.control_encoding), config.resolution, config.resolution, device=device, dtype=dtype)
    t = torch.randint(0, 1000, (B,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        for _ in range(config.grad_accumulation):
            with autocast_context(device, dtype):
                d, m = net(z.to(dtype), t, encoder_hidden_states=h, controlnet_cond=cond, return_dict=False)
                pred = bb.unet(z.to(dtype), t, encoder_hidden_states=h, down_block_additional_residuals=d,
                               mid_block_additional_residual=m).sample
            F.mse_loss(pred.float(), z).backward()
        opt.step()

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def bare_sampling(sampler: Sampler, config, n_images, device, dtype) -> float:
    pipe = sampler.pipe
    B = config.sample_batch_size
    L = config.resolution // pipe.vae_scale_factor
    C = pipe.unet.config.in_channels
    seq = pipe.tokenizer.model_max_length
    z = torch.randn(2 * B, C, L, L, device=device, dtype=dtype)
    h = torch.randn(2 * B, seq, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    cond = torch.rand(2 * B, control_channels(config.control_encoding), config.resolution, config.resolution, device=device, dtype=dtype)
    t = torch.full((2 * B,), 500, device=device)

    def batch():
        for _ in range(config.sampler_steps):
            d, m = pipe.controlnet(z, t, encoder_hidden_states=h, controlnet_cond=cond, return_dict=False)
            pipe.unet(z, t, encoder_hidden_states=h, down_block_additional_residuals=d, mid_block_additional_residual=m)
        pipe.vae.decode(z[:B] / pipe.vae.config.scaling_factor)

    n_batches = max(1, -(-n_images // B))
    batch()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        batch()
    _sync(device)
    return n_batches * B / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke", choices=["smoke", "demo", "paper"])
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--sample-images", type=int, default=None)
    ap.add_argument("--train-images", type=int, default=256)
    ap.add_argument("--backbone-folder", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 (bf16 autocast also on the CPU)")
    args = ap.parse_args(argv)

    config = DiffusionConfig.preset(args.profile, cpu_threads=args.threads, log_every_seconds=1e9, checkpoint_every=10**9,
                                    dtype=args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    train_steps = args.train_steps or {"smoke": 10, "demo": 20, "paper": 20}[args.profile]
    n_sample = args.sample_images or 2 * config.sample_batch_size
    images, labels, prompts, _ = toy_dataset(args.train_images, config.resolution, seed=0)
    result = {"profile": args.profile, "device": str(device), "dtype": dtype_name(dtype),
              "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()[0]}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone_dir = Path(args.backbone_folder) if args.backbone_folder else build_random_backbone(config, prompts, tmp / "backbone")
        result["backbone"] = str(args.backbone_folder or "random init from the profile's config")
        _peak_reset(device)
        rec = train_controlnet(backbone_dir, images, labels, prompts, config.replace(controlnet_steps=train_steps),
                               tmp / "cn", log=lambda m: None, resume="never")
        result["train_steps_per_s"] = rec["steps_per_second"]
        result["train_images_per_s"] = round(rec["steps_per_second"] * config.effective_batch_size, 3)
        result["train_cache_seconds"] = rec["cache_seconds"]
        result["train_peak_gib"] = _peak(device)
        _peak_reset(device)
        result["bare_train_steps_per_s"] = round(bare_training(backbone_dir, config, train_steps, device, dtype), 4)
        result["bare_train_peak_gib"] = _peak(device)
        result["train_overhead"] = round(result["bare_train_steps_per_s"] / result["train_steps_per_s"], 3)

        sampler = Sampler(backbone_dir, tmp / "cn" / "controlnet", config, device=device)
        sampler.generate(labels[: config.sample_batch_size], prompts[: config.sample_batch_size],
                         list(range(config.sample_batch_size)), log=None)  # warm-up
        idx = np.arange(n_sample) % len(labels)
        _peak_reset(device)
        _sync(device)
        t0 = time.perf_counter()
        sampler.generate(labels[idx], [prompts[i] for i in idx], list(range(n_sample)), log=None)
        _sync(device)
        result["sample_images_per_s"] = round(n_sample / (time.perf_counter() - t0), 3)
        result["sample_peak_gib"] = _peak(device)
        result["bare_sample_images_per_s"] = round(bare_sampling(sampler, config, n_sample, device, dtype), 3)
        result["sample_overhead"] = round(result["bare_sample_images_per_s"] / result["sample_images_per_s"], 3)
    result.update(train_steps=train_steps, sample_images=n_sample, sampler_steps=config.sampler_steps,
                  guidance_scale=config.guidance_scale, batch_size=config.batch_size,
                  sample_batch_size=config.sample_batch_size, resolution=config.resolution,
                  loadavg_end=os.getloadavg()[0])
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
