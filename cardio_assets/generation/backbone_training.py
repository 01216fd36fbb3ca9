"""Training a small latent-diffusion backbone here: VAE, then (text encoder +) UNet.

`train_small_backbone(...)` builds a backbone of the Stable Diffusion classes at the config's
sizes (`cardio_assets.generation.backbone.make_*`), trains it on the training frames and saves
it as a full `StableDiffusionPipeline` folder that `load_backbone` reads like SD 2.1-base.

Text encoder choice: the small `CLIPTextModel` is trained *jointly* with the UNet (the
`train_text_encoder` field). A transformer frozen at random init maps the prompts to nearly
collinear embeddings (the shared words and the final layer norm dominate), leaving the UNet to
tease apart "male"/"female" from small differences; trained jointly, the attribute tokens get
their own directions. It costs a few percent of a UNet step at these sizes. The empty prompt
(classifier-free guidance's null condition) is trained through prompt dropout.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cardio_assets.compute import (
    autocast_context,
    configure_backend,
    resolve_device,
    resolve_dtype,
    seed_everything,
    set_memory_format,
)
from cardio_assets.generation.backbone import (
    RECORD_NAME,
    diffusion_loss,
    diffusion_target,
    encode_token_ids,
    make_noise_scheduler,
    make_text_encoder,
    make_unet,
    make_vae,
    save_backbone,
    tokenize,
    unique_prompts,
)
from cardio_assets.generation.balance import cell_balanced_weights, draw_rows
from cardio_assets.generation.config import DiffusionConfig
from cardio_assets.generation.control import check_images, to_model_space
from cardio_assets.generation.ema import weight_average
from cardio_assets.generation.progress import Progress, subsample_curve
from cardio_assets.generation.rows import probe_positions, take_rows
from cardio_assets.generation.tokenizer import build_prompt_tokenizer
from cardio_assets.lake.atomic import atomic_write_text


def train_small_backbone(
    images,
    prompts: list[str],
    config: DiffusionConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    cells: Sequence[str] | None = None,
) -> dict:
    """Train VAE then (text encoder +) UNet on `images`/`prompts`; save a pipeline folder.

    images: float32 (N, 3, H, W) in [0, 1], an array, a memmap or a lazy row source
    (`cardio_assets.generation.rows`), read a batch at a time.

    `cells` (one per image): the UNet draws images balanced over cells (`cell_balance_cap`);
    None draws uniformly.

    Returns the training record, also written to `out_dir/training_record.json` last (its
    presence marks a complete folder).
    """
    config.require_backbone_source(None)
    if isinstance(images, (list, tuple)):
        images = np.asarray(images, dtype=np.float32)
    check_images(take_rows(images, probe_positions(len(images))))
    prompts = list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    amp_dtype = resolve_dtype(config.dtype, device)
    configure_backend(config.tf32, config.cpu_threads)
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

    tokenizer, vae, unet, text_encoder, noise_scheduler = _build_small_backbone(prompts, config, device)
    n_params = {
        "vae": sum(p.numel() for p in vae.parameters()),
        "unet": sum(p.numel() for p in unet.parameters()),
        "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
    }
    log(f"backbone: training here on {len(images)} images at {config.resolution} px, device {device}, params {n_params}")

    stage_seconds = {}
    t0 = time.perf_counter()
    vae_losses = _train_vae(vae, images, config, device, amp_dtype, gen, log)
    stage_seconds["vae"] = time.perf_counter() - t0

    # the latent moments of a cohort too large for RAM live in a temporary memory-mapped file
    with tempfile.TemporaryDirectory(prefix="cardio-latent-moments-") as spill:
        t0 = time.perf_counter()
        mean, std = encode_latent_moments(vae, images, config.resolution, config.encode_batch_size, device, torch.float32,
                                          max_in_memory_bytes=config.cache_in_memory_max_bytes, spill_dir=Path(spill))
        scaling = latent_scaling(mean, std)
        vae.register_to_config(scaling_factor=scaling)
        uniq, prompt_index = unique_prompts(prompts)
        stage_seconds["encode"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        weights = None if cells is None else torch.from_numpy(cell_balanced_weights(cells, config.cell_balance_cap))
        unet_losses = _train_unet(
            unet, text_encoder, tokenizer, noise_scheduler, mean, std, scaling, prompt_index, uniq,
            config, device, amp_dtype, gen, log, weights,
        )
        stage_seconds["unet"] = time.perf_counter() - t0
        del mean, std

    _save_trained_backbone(out_dir, vae, text_encoder, tokenizer, unet, noise_scheduler)
    record = _training_record(
        config, out_dir, cells, n_images=len(images), n_prompts=len(uniq) - 1, n_params=n_params, scaling=scaling,
        losses={"vae_reconstruction_mse": vae_losses, "unet": unet_losses}, device=device,
        seconds=time.perf_counter() - t_start, stage_seconds=stage_seconds,
    )
    atomic_write_text(out_dir / RECORD_NAME, json.dumps(record, indent=1))
    log(f"backbone: saved to {out_dir} in {record['seconds']:.1f}s")
    return record


def _build_small_backbone(prompts: list[str], config: DiffusionConfig, device: torch.device):
    """(tokenizer, VAE, UNet, text encoder, noise scheduler) at random init, in that order of
    construction (each draws its initial weights from the global torch RNG)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_prompt_tokenizer(prompts, Path(tmp) / "tokenizer", config.text_max_length)
    vae = make_vae(config).to(device)
    unet = make_unet(config).to(device)
    text_encoder = make_text_encoder(config, tokenizer).to(device)
    set_memory_format(config.channels_last, vae, unet)
    noise_scheduler = make_noise_scheduler(config)
    return tokenizer, vae, unet, text_encoder, noise_scheduler


def vae_reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, channel_weights: Sequence[float]) -> torch.Tensor:
    """Mean squared error with a weight per image channel, scaled so that equal weights give the
    plain MSE."""
    weights = torch.as_tensor(channel_weights, dtype=recon.dtype, device=recon.device).view(1, -1, 1, 1)
    return (weights * (recon - x) ** 2).mean() * (len(channel_weights) / float(sum(channel_weights)))


def _train_vae(vae, images, config: DiffusionConfig, device, dtype, gen, log) -> list[float]:
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    warmup = max(1, config.vae_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    progress = Progress("vae", config.vae_steps, every_seconds=config.log_every_seconds, log=log)
    losses: list[float] = []
    vae.train()
    for step in range(config.vae_steps):
        idx = draw_rows(len(images), config.vae_batch_size, gen)  # the VAE learns every image alike
        x = to_model_space(take_rows(images, idx.numpy()), config.resolution).to(device)
        with autocast_context(device, dtype):
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(
                posterior.mean.shape, generator=gen
            ).to(device, posterior.mean.dtype)
            recon = vae.decode(z).sample
        rec = vae_reconstruction_loss(recon.float(), x, config.vae_channel_weights)
        kl = posterior.kl().float().mean() / posterior.mean[0].numel()
        loss = rec + config.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), config.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(float(rec.detach()))
        progress.update(step + 1, losses[-1])
    vae.eval()
    return losses


def _train_unet(
    unet, text_encoder, tokenizer, noise_scheduler, mean, std, sf: float, prompt_index, uniq_prompts,
    config: DiffusionConfig, device, dtype, gen, log, weights: torch.Tensor | None = None,
) -> list[float]:
    ids_all = tokenize(tokenizer, uniq_prompts)  # row 0 is the empty prompt
    params = list(unet.parameters())
    if config.train_text_encoder:
        params += list(text_encoder.parameters())
        text_encoder.train()
    else:
        text_encoder.requires_grad_(False)
        text_encoder.eval()
    opt = torch.optim.AdamW(params, lr=config.unet_lr, weight_decay=config.weight_decay)
    sched = _unet_lr_schedule(opt, config)
    progress = Progress("unet", config.unet_steps, every_seconds=config.log_every_seconds, log=log)
    average = weight_average(params, config)
    losses: list[float] = []
    unet.train()
    T = noise_scheduler.config.num_train_timesteps
    for step in range(config.unet_steps):
        idx = draw_rows(len(mean), config.unet_batch_size, gen, weights)
        eps = torch.randn(mean[idx].shape, generator=gen)
        latents = (mean[idx] + std[idx] * eps) * sf
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < config.prompt_drop
        pidx = torch.where(drop, torch.zeros_like(idx), prompt_index[idx])
        latents, noise, t = latents.to(device), noise.to(device), t.to(device)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        target = diffusion_target(noise_scheduler, latents, noise, t)
        with autocast_context(device, dtype):
            with torch.set_grad_enabled(config.train_text_encoder):
                hidden = encode_token_ids(text_encoder, ids_all[pidx].to(device))
            pred = unet(noisy, t, hidden).sample
        loss = diffusion_loss(noise_scheduler, pred, target, t, config.snr_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        sched.step()
        if average is not None:
            average.step(params)
        losses.append(float(loss.detach()))
        progress.update(step + 1, losses[-1])
    if average is not None:
        average.copy_to(params)  # the average is what is saved and sampled
    unet.eval()
    text_encoder.eval()
    return losses


def _unet_lr_schedule(opt, config: DiffusionConfig):
    """Linear warm-up over the first 5% of the steps, then constant or diffusers' cosine decay."""
    warmup = max(1, config.unet_steps // 20)
    if config.lr_schedule == "cosine":
        from diffusers.optimization import get_scheduler

        return get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=config.unet_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))


@torch.no_grad()
def encode_latent_moments(
    vae, images, resolution: int, batch_size: int, device: torch.device, dtype: torch.dtype,
    max_in_memory_bytes: int | None = None, spill_dir: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of every image (unscaled), float32 on the CPU; images read a batch
    at a time into two tensors made once: in RAM, or, where both together would exceed
    `max_in_memory_bytes`, over memory-mapped files in `spill_dir` (file pages the kernel may drop,
    not the process's memory)."""
    n, moments = len(images), None
    for i in range(0, n, batch_size):
        positions = np.arange(i, min(i + batch_size, n))
        x = to_model_space(take_rows(images, positions), resolution).to(device=device, dtype=dtype)
        dist = vae.encode(x).latent_dist
        if moments is None:
            moments = _moment_tensors((n, *dist.mean.shape[1:]), max_in_memory_bytes, spill_dir)
        moments[0][positions[0] : positions[-1] + 1] = dist.mean.float().cpu()
        moments[1][positions[0] : positions[-1] + 1] = dist.std.float().cpu()
    return moments


def _moment_tensors(shape: tuple[int, ...], max_in_memory_bytes: int | None, spill_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    if max_in_memory_bytes is None or 2 * 4 * int(np.prod(shape)) <= max_in_memory_bytes:
        return torch.empty(shape, dtype=torch.float32), torch.empty(shape, dtype=torch.float32)
    if spill_dir is None:
        raise ValueError(f"latent moments of shape {shape} exceed {max_in_memory_bytes} bytes and no spill_dir is given")
    return tuple(torch.from_numpy(np.lib.format.open_memmap(Path(spill_dir) / f"latent_{name}.npy", mode="w+", dtype=np.float32, shape=shape))
                 for name in ("mean", "std"))


def latent_scaling(mean: torch.Tensor, std: torch.Tensor) -> float:
    """VAE scaling factor so that scaled latents have unit standard deviation (SD's 0.18215)."""
    mean, std = mean[:4096], std[:4096]
    sample = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    return 1.0 / float(sample.std().clamp_min(1e-6))


def _save_trained_backbone(out_dir: Path, vae, text_encoder, tokenizer, unet, noise_scheduler) -> None:
    """Replace the pipeline folders in `out_dir`; the record goes first (no record = not finished)."""
    for m in (vae, unet, text_encoder):
        m.to("cpu")
    set_memory_format(False, vae, unet)  # stored in the ordinary layout
    if (out_dir / RECORD_NAME).exists():
        (out_dir / RECORD_NAME).unlink()
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)
    save_backbone(out_dir, vae, text_encoder, tokenizer, unet, noise_scheduler)


def _training_record(
    config: DiffusionConfig, out_dir: Path, cells, *, n_images: int, n_prompts: int, n_params: dict,
    scaling: float, losses: dict[str, list[float]], device, seconds: float, stage_seconds: dict[str, float],
) -> dict:
    return {
        "kind": "backbone",
        "trained_here": True,
        "backbone_folder": str(out_dir),
        "n_images": int(n_images),
        "n_prompts": n_prompts,
        "steps": {"vae": config.vae_steps, "unet": config.unet_steps},
        "text_encoder": "trained jointly with the UNet" if config.train_text_encoder else "frozen at random init",
        "unet_sampling": "uniform" if cells is None else f"balanced over cells, cap {config.cell_balance_cap:g}",
        "loss_curve": {name: subsample_curve(curve) for name, curve in losses.items()},
        "final_loss": {name: float(np.mean(curve[-20:])) if curve else None for name, curve in losses.items()},
        "vae_scaling_factor": scaling,
        "parameters": n_params,
        "seed": config.seed,
        "config": config.to_dict(),
        "device": str(device),
        "seconds": round(seconds, 3),
        "stage_seconds": {stage: round(s, 3) for stage, s in stage_seconds.items()},
    }
