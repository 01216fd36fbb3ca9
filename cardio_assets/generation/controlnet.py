"""ControlNet training on a frozen latent-diffusion backbone (the main paper's step 5).

Only the ControlNet branch trains (`ControlNetModel.from_unet`); VAE, UNet and text encoder are
frozen (`requires_grad_(False)`). VAE posteriors (mean, std) and prompt embeddings are computed
once and cached (`cardio_assets.generation.controlnet_data`); each step samples a latent from
the cached posterior, as `latent_dist.sample()` would. Prompts are replaced by the empty prompt
with probability `config.prompt_drop` so that classifier-free guidance works at sampling time.

Resumable: every `checkpoint_every` steps (and at the end) `out_dir/checkpoint/` is written
atomically with weights, optimizer, lr scheduler and all RNG states; a new call finds it and
continues, reproducing the uninterrupted run exactly. All per-step randomness (batch indices,
posterior samples, noise, timesteps, prompt dropout) comes from one torch.Generator whose state
is checkpointed.

Data-parallel: inside a torch.distributed process group every process trains its share of each
global batch under DDP and rank 0 writes (`cardio_assets.generation.data_parallel`); the
checkpoint is the same at any world size.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cardio_assets.compute import (
    autocast_context,
    configure_backend,
    dtype_name,
    resolve_device,
    resolve_dtype,
    seed_everything,
    set_memory_format,
)
from cardio_assets.generation.backbone import RECORD_NAME, diffusion_loss, diffusion_target, load_backbone
from cardio_assets.generation.checkpoint import NAME as CHECKPOINT_NAME
from cardio_assets.generation.checkpoint import (
    clean_temporaries,
    find_checkpoint,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from cardio_assets.generation.config import DiffusionConfig
from cardio_assets.generation.control import check_controls, check_images, control_channels
from cardio_assets.generation.controlnet_data import backbone_identity, fingerprint_images, prepare_data
from cardio_assets.generation.data_parallel import ProcessGroup
from cardio_assets.generation.ema import weight_average
from cardio_assets.generation.progress import Progress, subsample_curve
from cardio_assets.generation.rows import probe_positions, take_rows
from cardio_assets.lake.atomic import atomic_dir, atomic_write_text

FINAL_NAME = "controlnet"


class CheckpointMismatch(RuntimeError):
    """The checkpoint in out_dir was made with a different training configuration."""


def heart_weights(cond: torch.Tensor, latent_size: tuple[int, int], heart_weight: float) -> torch.Tensor:
    """(N, 1, h, w) loss weights: `heart_weight` on latent pixels that hold any labelled pixel of
    the conditioning image (either encoding is 0 off the heart), dilated by one latent pixel so the
    walls' outer edge counts; 1 elsewhere."""
    heart = (cond.amax(dim=1, keepdim=True) > 0).float()
    heart = F.max_pool2d(F.adaptive_max_pool2d(heart, latent_size), 3, stride=1, padding=1)
    return 1.0 + (heart_weight - 1.0) * heart


def controlnet_loss(backbone, controlnet, latents, noise, timesteps, hidden, cond, dtype=torch.float32,
                    snr_gamma: float | None = None, heart_weight: float = 1.0):
    """The diffusion loss of one batch through ControlNet + frozen UNet (scaled latents in)."""
    device = latents.device
    noisy = backbone.noise_scheduler.add_noise(latents, noise, timesteps)
    target = diffusion_target(backbone.noise_scheduler, latents, noise, timesteps)
    with autocast_context(device, dtype):
        down, mid = controlnet(
            noisy.to(dtype), timesteps, encoder_hidden_states=hidden, controlnet_cond=cond.to(dtype), return_dict=False
        )
        pred = backbone.unet(
            noisy.to(dtype),
            timesteps,
            encoder_hidden_states=hidden,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
    weights = None if heart_weight == 1.0 else heart_weights(cond, tuple(latents.shape[-2:]), heart_weight)
    return diffusion_loss(backbone.noise_scheduler, pred, target, timesteps, snr_gamma, weights)


def train_controlnet(
    backbone_dir: str | Path,
    images,
    controls,
    prompts: list[str],
    config: DiffusionConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    resume: str = "auto",
    cells: Sequence[str] | None = None,
) -> dict:
    """Train (or resume training) a ControlNet on a frozen backbone; return the training record.

    images (float32 in [0, 1]) and controls (uint8 labels), (N, 3, H, W): arrays, memmaps or lazy
    row sources (`cardio_assets.generation.rows`), read a batch at a time.

    Writes `out_dir/controlnet/` (`ControlNetModel.save_pretrained`), `out_dir/checkpoint/` and
    `out_dir/training_record.json`. Calling again with a larger `config.controlnet_steps`
    continues from the checkpoint.

    resume: "auto" resumes a compatible checkpoint (same training config, data and backbone
    weights) and sets an incompatible one aside as `checkpoint.stale-<time>` before starting
    fresh; "require" raises CheckpointMismatch instead; "never" always starts fresh (setting
    any checkpoint aside).

    cells: one per image; batches are then drawn balanced over cells (`config.cell_balance_cap`),
    as the paper weights rare cells; None draws uniformly.
    """
    if resume not in ("auto", "require", "never"):
        raise ValueError(f"resume must be auto, require or never, not {resume!r}")
    t_call = time.perf_counter()
    images, controls, prompts = _checked_inputs(images, controls, prompts)
    out_dir = Path(out_dir)
    group = ProcessGroup.current()
    if group.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_temporaries(out_dir, (CHECKPOINT_NAME, FINAL_NAME))

    # -- set-up: frozen backbone, cached data, ControlNet + optimizer, then the checkpoint if any
    device = group.device(resolve_device(config.device))
    dtype = resolve_dtype(config.dtype, device)
    configure_backend(config.tf32, config.cpu_threads)
    seed_everything(config.seed)
    with group.main_first():  # rank 0 writes a latent cache the others then read
        backbone, identity, data, cache_seconds = _load_backbone_and_data(
            backbone_dir, images, controls, prompts, cells, config, out_dir, device, dtype, log
        )
    controlnet, params, optimizer, lr_scheduler = _build_controlnet(backbone, config, device)
    average = weight_average(params, config)
    gen = torch.Generator().manual_seed(config.seed)  # all per-step randomness; checkpointed
    with group.main_first():  # rank 0 sets an incompatible checkpoint aside before the others look
        start, losses, seconds_before, resumed_from = _resume(
            out_dir, resume, identity, controlnet, optimizer, lr_scheduler, average, gen, log
        )
    total = int(config.controlnet_steps)
    if start > total:
        log(f"controlnet: checkpoint is at step {start}, beyond the {total} steps asked; keeping it")
    if group.is_main and start < total and (out_dir / RECORD_NAME).exists():
        (out_dir / RECORD_NAME).unlink()  # no record = not finished (until the end of this call)
    trained = group.wrap(controlnet, device)
    share = group.share(config.batch_size)
    share_weight = (share.stop - share.start) * group.world_size / config.batch_size

    # -- the training loop
    accum = config.grad_accumulation
    progress = Progress("controlnet", total, start=start, every_seconds=config.log_every_seconds, log=log)
    t_loop = time.perf_counter()
    last_saved = start
    for step in range(start + 1, total + 1):
        optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)  # read once per step, not per micro-step
        for micro in range(accum):
            batch = [x[share] for x in data.draw_batch(config, gen, device)]  # every process draws the global batch
            with group.no_sync(trained, last_micro_step=micro == accum - 1):
                loss = controlnet_loss(backbone, trained, *batch, dtype, config.snr_gamma, config.heart_loss_weight) * (share_weight / accum)
                loss.backward()
            step_loss += loss.detach().float()
        step_loss = group.global_loss(step_loss / group.world_size)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        if average is not None:
            average.step(params)
        losses.append(step_loss)
        if group.is_main and config.checkpoint_every and step % config.checkpoint_every == 0:
            seconds = seconds_before + (time.perf_counter() - t_loop)
            save_checkpoint(out_dir, controlnet, _checkpoint_state(step, optimizer, lr_scheduler, average, gen, losses, seconds, identity))
            last_saved = step
        progress.update(step, step_loss)
    steps_done = max(0, total - start)
    loop_seconds = time.perf_counter() - t_loop
    if not group.is_main:
        group.barrier()  # rank 0 saves; its record is the run's
        return json.loads((out_dir / RECORD_NAME).read_text())

    # -- saving: the last checkpoint, the final weights, then the record (its presence = finished)
    if steps_done and last_saved != total:
        seconds = seconds_before + (time.perf_counter() - t_loop)
        save_checkpoint(out_dir, controlnet, _checkpoint_state(total, optimizer, lr_scheduler, average, gen, losses, seconds, identity))
    final = out_dir / FINAL_NAME
    if average is not None:
        average.copy_to(params)  # the checkpoint keeps the raw weights to resume from; sampling gets the average
    set_memory_format(False, controlnet)  # stored in the ordinary layout
    with atomic_dir(final) as tmp:
        controlnet.save_pretrained(tmp, safe_serialization=True)
    record = _training_record(
        config, backbone_dir, backbone, final, data, cells, device, dtype,
        steps=max(total, start), steps_done=steps_done, resumed_from=resumed_from, losses=losses,
        n_parameters=sum(p.numel() for p in params), seconds=time.perf_counter() - t_call,
        seconds_before=seconds_before, cache_seconds=cache_seconds, loop_seconds=loop_seconds,
        world_size=group.world_size,
    )
    atomic_write_text(out_dir / RECORD_NAME, json.dumps(record, indent=1))
    group.barrier()
    log(
        f"controlnet: {record['steps']} steps done ({steps_done} in this call, "
        f"{record['steps_per_second'] or 0:.2f} steps/s), saved to {final}"
    )
    return record


def _checked_inputs(images, controls, prompts):
    """(images, controls, prompts) after checking shapes, and values on evenly spaced rows."""
    if isinstance(images, (list, tuple)):
        images = np.asarray(images, dtype=np.float32)
    if isinstance(controls, (list, tuple)):
        controls = np.asarray(controls)
    prompts = list(prompts)
    check_images(take_rows(images, probe_positions(len(images))))
    check_controls(take_rows(controls, probe_positions(len(controls)), np.uint8))
    if len(controls) != len(images):
        raise ValueError(f"{len(controls)} controls for {len(images)} images/prompts")
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    if len(images) == 0:
        raise ValueError("no training images")
    return images, controls, prompts


def _load_backbone_and_data(backbone_dir, images, controls, prompts, cells, config, out_dir, device, dtype, log):
    """(frozen backbone, checkpoint identity, cached training data, seconds spent caching)."""
    backbone = load_backbone(backbone_dir, device=device, dtype=dtype)
    set_memory_format(config.channels_last, backbone.vae, backbone.unet)
    if backbone.resolution != config.resolution:
        log(f"controlnet: backbone native resolution {backbone.resolution} px, training at {config.resolution} px")
    identity = _checkpoint_identity(config, fingerprint_images(images, controls, prompts), backbone_identity(backbone_dir))
    t0 = time.perf_counter()
    data = prepare_data(
        backbone, images, controls, prompts, cells, config, out_dir, device, dtype,
        identity["data_fingerprint"], identity["backbone"], log,
    )
    return backbone, identity, data, time.perf_counter() - t0


def _build_controlnet(backbone, config: DiffusionConfig, device: torch.device):
    """(ControlNet, its trainable parameters, AdamW, lr scheduler); fp32 weights, autocast to
    the backbone dtype on GPU. The ControlNet's new layers draw their init from the global RNG."""
    from diffusers import ControlNetModel
    from diffusers.optimization import get_scheduler

    controlnet = ControlNetModel.from_unet(
        backbone.unet, conditioning_embedding_out_channels=tuple(config.controlnet_cond_channels),
        conditioning_channels=control_channels(config.control_encoding),
    ).to(device=device)  # fp32 parameters (from_unet builds in the default dtype)
    set_memory_format(config.channels_last, controlnet)
    controlnet.train()
    if config.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        backbone.unet.enable_gradient_checkpointing()
    params = [p for p in controlnet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = "constant_with_warmup" if config.lr_schedule == "constant" else config.lr_schedule
    lr_scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=config.lr_warmup_steps, num_training_steps=config.controlnet_steps)
    return controlnet, params, optimizer, lr_scheduler


def _checkpoint_identity(config: DiffusionConfig, data_fingerprint: str, backbone_id: str) -> dict:
    """What a checkpoint must match to be resumed: training config, training data, backbone weights."""
    return {
        "fingerprint": json.dumps(config.training_fingerprint()),
        "data_fingerprint": data_fingerprint,
        "backbone": backbone_id,
    }


def _checkpoint_state(step: int, optimizer, lr_scheduler, average, gen, losses: list[float], seconds: float, identity: dict) -> dict:
    return {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        **({"weight_average": average.state_dict()} if average is not None else {}),
        "rng": rng_states(gen),
        "losses": torch.tensor(losses, dtype=torch.float64),
        "seconds": seconds,
        **identity,
    }


def _resume(out_dir: Path, resume: str, identity: dict, controlnet, optimizer, lr_scheduler, average, gen, log):
    """(step, losses, seconds, resumed-from step) where training starts: a compatible checkpoint
    is loaded into the ControlNet, optimizer, lr scheduler, weight average and RNGs; an incompatible one is set
    aside (or refused), and training starts fresh at (0, [], 0.0, None)."""
    fresh = (0, [], 0.0, None)
    ckpt = find_checkpoint(out_dir)
    if ckpt is None:
        return fresh
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    saved, now = json.loads(state["fingerprint"]), json.loads(identity["fingerprint"])
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if state.get("data_fingerprint") != identity["data_fingerprint"]:
        diff.append("training data")
    if state.get("backbone") != identity["backbone"]:
        diff.append("backbone weights")
    if diff or resume == "never":
        why = f"made with a different {', '.join(diff)}" if diff else "resume='never'"
        if resume == "require":
            raise CheckpointMismatch(f"{ckpt} was {why}; delete it to start over")
        stale = out_dir / f"checkpoint.stale-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        ckpt.rename(stale)
        log(f"controlnet: checkpoint {why}: set aside as {stale.name}, starting fresh")
        return fresh
    state = load_checkpoint(ckpt, controlnet)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if average is not None:
        average.load_state_dict(state["weight_average"])
        average.to(device=next(controlnet.parameters()).device)  # loaded on the CPU
    set_rng_states(state["rng"], gen)
    start = int(state["step"])
    log(f"controlnet: resuming from {ckpt} at step {start}")
    return start, [float(x) for x in state["losses"]], float(state["seconds"]), start


def _training_record(
    config: DiffusionConfig, backbone_dir, backbone, final: Path, data, cells, device, dtype, *,
    steps: int, steps_done: int, resumed_from: int | None, losses: list[float], n_parameters: int,
    seconds: float, seconds_before: float, cache_seconds: float, loop_seconds: float, world_size: int = 1,
) -> dict:
    return {
        "kind": "controlnet",
        "steps": steps,
        "steps_this_call": steps_done,
        "resumed_from_step": resumed_from,
        "loss_curve": subsample_curve(losses),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "seed": config.seed,
        "backbone_folder": str(Path(backbone_dir)),
        "backbone_trained_here": backbone.trained_here,
        "backbone_source": "trained here" if backbone.trained_here else "loaded from local folder",
        "controlnet_folder": str(final),
        "n_images": len(data.controls),
        "n_prompts": data.n_prompts,
        "sampling": "uniform" if cells is None else f"balanced over cells, cap {config.cell_balance_cap:g}",
        "parameters": n_parameters,
        "config": config.to_dict(),
        "device": str(device),
        "data_parallel_processes": world_size,
        "dtype": dtype_name(dtype),
        "seconds": round(seconds, 3),
        "seconds_total": round(seconds_before + loop_seconds + cache_seconds, 3),
        "cache_seconds": round(cache_seconds, 3),
        "train_seconds": round(loop_seconds, 3),
        "steps_per_second": round(steps_done / loop_seconds, 4) if steps_done and loop_seconds > 0 else None,
    }
