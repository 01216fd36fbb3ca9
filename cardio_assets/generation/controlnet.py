"""ControlNet training on a frozen latent-diffusion backbone (the main paper's step 5).

Only the ControlNet branch trains (`ControlNetModel.from_unet`); VAE, UNet and text encoder are
frozen (`requires_grad_(False)`). VAE posteriors (mean, std) and prompt embeddings are computed
once and cached: in memory, or as float16 memmaps in `out_dir/cache/` when larger than
`config.cache_in_memory_max_bytes`; each step samples a latent from the cached posterior, as
`latent_dist.sample()` would. Prompts are replaced by the empty prompt with probability
`config.prompt_drop` so that classifier-free guidance works at sampling time.

Resumable: every `checkpoint_every` steps (and at the end) `out_dir/checkpoint/` is written
atomically with weights, optimizer, lr scheduler and all RNG states; a new call finds it and
continues, reproducing the uninterrupted run exactly. All per-step randomness (batch indices,
posterior samples, noise, timesteps, prompt dropout) comes from one torch.Generator whose state
is checkpointed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cardio_assets.compute import autocast_context, configure_backend, resolve_device, resolve_dtype, seed_everything
from cardio_assets.generation.backbone import (
    RECORD_NAME,
    diffusion_target,
    encode_prompts,
    load_backbone,
    unique_prompts,
)
from cardio_assets.generation.balance import cell_balanced_weights, draw_rows
from cardio_assets.generation.checkpoint import (
    clean_temporaries,
    find_checkpoint,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from cardio_assets.generation.config import DiffusionConfig
from cardio_assets.generation.control import check_controls, check_images, control_channels, control_tensor, to_model_space
from cardio_assets.generation.progress import Progress, subsample_curve


class CheckpointMismatch(RuntimeError):
    """The checkpoint in out_dir was made with a different training configuration."""


def backbone_identity(folder: str | Path) -> str:
    """Changes when the backbone folder's weights are rewritten (path, sizes, mtimes)."""
    folder = Path(folder).resolve()
    h = hashlib.sha1(str(folder).encode())
    index = folder / "model_index.json"
    if index.exists():
        h.update(index.read_bytes())
    for sub in ("vae", "unet", "text_encoder"):
        for f in sorted((folder / sub).glob("*")):
            st = f.stat()
            h.update(f"{sub}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _fingerprint_images(images: np.ndarray, controls: np.ndarray, prompts: list[str]) -> str:
    h = hashlib.sha1()
    h.update(str((images.shape, controls.shape, len(prompts))).encode())
    step = max(1, len(images) // 64)
    h.update(np.ascontiguousarray(images[::step]).tobytes())
    h.update(np.ascontiguousarray(controls[::step]).tobytes())
    h.update("\n".join(prompts[::step]).encode())
    return h.hexdigest()


@torch.no_grad()
def _latent_cache(backbone, images, config, out_dir: Path, device, dtype, fingerprint: str, backbone_id: str, log):
    """(mean, std) of the VAE posterior per image; tensors or float16 memmaps (N, C, h, w)."""
    n = len(images)
    h = config.resolution // backbone.vae_scale_factor
    c = backbone.vae.config.latent_channels
    nbytes = 2 * n * c * h * h * 4
    in_memory = nbytes <= config.cache_in_memory_max_bytes
    cache_dir = out_dir / "cache"
    meta = {"n": n, "shape": [c, h, h], "resolution": config.resolution, "backbone": backbone_id,
            "fingerprint": fingerprint}
    if not in_memory and (cache_dir / "meta.json").exists():
        if json.loads((cache_dir / "meta.json").read_text()) == meta:
            log(f"controlnet: reusing latent cache {cache_dir}")
            mean = np.load(cache_dir / "latent_mean.npy", mmap_mode="r")
            std = np.load(cache_dir / "latent_std.npy", mmap_mode="r")
            return mean, std
    if in_memory:
        mean = torch.empty((n, c, h, h), dtype=torch.float32)
        std = torch.empty((n, c, h, h), dtype=torch.float32)
    else:
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir.mkdir(parents=True)
        mean = np.lib.format.open_memmap(cache_dir / "latent_mean.npy", mode="w+", dtype=np.float16, shape=(n, c, h, h))
        std = np.lib.format.open_memmap(cache_dir / "latent_std.npy", mode="w+", dtype=np.float16, shape=(n, c, h, h))
    progress = Progress("controlnet: encoding latents", n, every_seconds=config.log_every_seconds, log=log, unit="image")
    bs = config.encode_batch_size
    for i in range(0, n, bs):
        x = to_model_space(images[i : i + bs], config.resolution).to(device=device, dtype=dtype)
        dist = backbone.vae.encode(x).latent_dist
        m, s = dist.mean.float().cpu(), dist.std.float().cpu()
        if in_memory:
            mean[i : i + bs], std[i : i + bs] = m, s
        else:
            mean[i : i + bs], std[i : i + bs] = m.numpy().astype(np.float16), s.numpy().astype(np.float16)
        progress.update(min(i + bs, n))
    if not in_memory:
        mean.flush()
        std.flush()
        (cache_dir / "meta.json").write_text(json.dumps(meta))
    return mean, std


def _rows(array, idx: torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array[idx]
    return torch.from_numpy(np.asarray(array[idx.numpy()], dtype=np.float32))


def controlnet_loss(backbone, controlnet, latents, noise, timesteps, hidden, cond, dtype=torch.float32):
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
    return F.mse_loss(pred.float(), target.float())


def train_controlnet(
    backbone_dir: str | Path,
    images: np.ndarray,
    controls: np.ndarray,
    prompts: list[str],
    config: DiffusionConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    resume: str = "auto",
    cells: Sequence[str] | None = None,
) -> dict:
    """Train (or resume training) a ControlNet on a frozen backbone; return the training record.

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
    from diffusers import ControlNetModel
    from diffusers.optimization import get_scheduler

    t_call = time.perf_counter()
    images = np.asarray(images, dtype=np.float32)
    controls = np.asarray(controls)
    prompts = list(prompts)
    check_images(images)
    check_controls(controls, len(images))
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    if len(images) == 0:
        raise ValueError("no training images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_temporaries(out_dir)

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    configure_backend(config.tf32, config.cpu_threads)
    seed_everything(config.seed)

    backbone = load_backbone(backbone_dir, device=device, dtype=dtype)
    if backbone.resolution != config.resolution:
        log(f"controlnet: backbone native resolution {backbone.resolution} px, training at {config.resolution} px")
    fingerprint = _fingerprint_images(images, controls, prompts)
    backbone_id = backbone_identity(backbone_dir)

    # -- caches (deterministic, no RNG)
    t0 = time.perf_counter()
    mean, std = _latent_cache(backbone, images, config, out_dir, device, dtype, fingerprint, backbone_id, log)
    uniq, prompt_index = unique_prompts(prompts)
    text_emb = torch.cat(
        [encode_prompts(backbone.tokenizer, backbone.text_encoder, uniq[i : i + 64], device) for i in range(0, len(uniq), 64)]
    )
    cache_seconds = time.perf_counter() - t0
    sf = float(backbone.vae.config.scaling_factor)

    # -- model, optimizer (fp32 weights; autocast to the backbone dtype on GPU)
    controlnet = ControlNetModel.from_unet(
        backbone.unet, conditioning_embedding_out_channels=tuple(config.controlnet_cond_channels),
        conditioning_channels=control_channels(config.control_encoding),
    ).to(device=device)  # fp32 parameters (from_unet builds in the default dtype)
    controlnet.train()
    if config.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        backbone.unet.enable_gradient_checkpointing()
    params = [p for p in controlnet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=config.lr_warmup_steps)
    gen = torch.Generator().manual_seed(config.seed)

    # -- resume
    start, losses, seconds_before, resumed_from = 0, [], 0.0, None
    ckpt = find_checkpoint(out_dir)
    if ckpt is not None:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        saved = json.loads(state["fingerprint"])
        now = json.loads(json.dumps(config.training_fingerprint()))
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if state.get("data_fingerprint") != fingerprint:
            diff.append("training data")
        if state.get("backbone") != backbone_id:
            diff.append("backbone weights")
        if diff or resume == "never":
            why = f"made with a different {', '.join(diff)}" if diff else "resume='never'"
            if resume == "require":
                raise CheckpointMismatch(f"{ckpt} was {why}; delete it to start over")
            stale = out_dir / f"checkpoint.stale-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            ckpt.rename(stale)
            log(f"controlnet: checkpoint {why}: set aside as {stale.name}, starting fresh")
            ckpt = None
    if ckpt is not None:
        state = load_checkpoint(ckpt, controlnet)
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        set_rng_states(state["rng"], gen)
        start = int(state["step"])
        losses = [float(x) for x in state["losses"]]
        seconds_before = float(state["seconds"])
        resumed_from = start
        log(f"controlnet: resuming from {ckpt} at step {start}")
    total = int(config.controlnet_steps)
    if start > total:
        log(f"controlnet: checkpoint is at step {start}, beyond the {total} steps asked; keeping it")
    if start < total and (out_dir / RECORD_NAME).exists():
        (out_dir / RECORD_NAME).unlink()  # no record = not finished (until the end of this call)

    def checkpoint_state(step: int) -> dict:
        return {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "rng": rng_states(gen),
            "losses": torch.tensor(losses, dtype=torch.float64),
            "seconds": seconds_before + (time.perf_counter() - t_loop),
            "fingerprint": json.dumps(config.training_fingerprint()),
            "data_fingerprint": fingerprint,
            "backbone": backbone_id,
        }

    n = len(images)
    weights = None if cells is None else torch.from_numpy(cell_balanced_weights(cells, config.cell_balance_cap))
    T = backbone.noise_scheduler.config.num_train_timesteps
    B, accum = config.batch_size, config.grad_accumulation
    progress = Progress("controlnet", total, start=start, every_seconds=config.log_every_seconds, log=log)
    t_loop = time.perf_counter()
    last_saved = start
    step = start
    for step in range(start + 1, total + 1):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(accum):
            idx = draw_rows(n, B, gen, weights)
            m, s = _rows(mean, idx), _rows(std, idx)
            latents = (m + s * torch.randn(m.shape, generator=gen)) * sf
            noise = torch.randn(latents.shape, generator=gen)
            t = torch.randint(0, T, (B,), generator=gen)
            drop = torch.rand(B, generator=gen) < config.prompt_drop
            pidx = torch.where(drop, torch.zeros_like(idx), prompt_index[idx])
            cond = control_tensor(controls[idx.numpy()], config.resolution, config.control_encoding).to(device)
            hidden = text_emb[pidx.to(device)]
            loss = controlnet_loss(
                backbone, controlnet, latents.to(device), noise.to(device), t.to(device), hidden, cond, dtype
            ) / accum
            loss.backward()
            step_loss += float(loss.detach())
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        losses.append(step_loss)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save_checkpoint(out_dir, controlnet, checkpoint_state(step))
            last_saved = step
        progress.update(step, step_loss)
    steps_done = max(0, total - start)
    loop_seconds = time.perf_counter() - t_loop
    if steps_done and last_saved != total:
        save_checkpoint(out_dir, controlnet, checkpoint_state(total))

    # -- final weights, atomically
    final = out_dir / "controlnet"
    tmp = out_dir / ".controlnet.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    controlnet.save_pretrained(tmp, safe_serialization=True)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)

    seconds = time.perf_counter() - t_call
    record = {
        "kind": "controlnet",
        "steps": max(total, start),
        "steps_this_call": steps_done,
        "resumed_from_step": resumed_from,
        "loss_curve": subsample_curve(losses),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "seed": config.seed,
        "backbone_folder": str(Path(backbone_dir)),
        "backbone_trained_here": backbone.trained_here,
        "backbone_source": "trained here" if backbone.trained_here else "loaded from local folder",
        "controlnet_folder": str(final),
        "n_images": n,
        "n_prompts": len(uniq) - 1,
        "sampling": "uniform" if cells is None else f"balanced over cells, cap {config.cell_balance_cap:g}",
        "parameters": sum(p.numel() for p in params),
        "config": config.to_dict(),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "seconds": round(seconds, 3),
        "seconds_total": round(seconds_before + loop_seconds + cache_seconds, 3),
        "cache_seconds": round(cache_seconds, 3),
        "train_seconds": round(loop_seconds, 3),
        "steps_per_second": round(steps_done / loop_seconds, 4) if steps_done and loop_seconds > 0 else None,
    }
    (out_dir / RECORD_NAME).write_text(json.dumps(record, indent=1))
    log(
        f"controlnet: {record['steps']} steps done ({steps_done} in this call, "
        f"{record['steps_per_second'] or 0:.2f} steps/s), saved to {final}"
    )
    return record
