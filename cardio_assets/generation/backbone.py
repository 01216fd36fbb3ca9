"""The latent-diffusion backbone: VAE, text-conditioned UNet, CLIP text encoder + tokenizer.

Two sources, one loading path:

- `load_backbone(folder)` loads a Stable Diffusion folder in diffusers layout
  (`model_index.json`, `vae/`, `unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`) part by
  part with `from_pretrained(folder, subfolder=..., local_files_only=True)`, frozen. That is how
  SD 2.1-base is used when the user configures a local copy.
- `train_small_backbone(...)` builds and trains a small backbone of the same classes here and
  saves it as a full `StableDiffusionPipeline` folder, which `load_backbone` (and
  `StableDiffusionPipeline.from_pretrained`) then read exactly like SD 2.1.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cardio_assets.compute import (
    autocast_context,
    configure_backend,
    dtype_kwargs,
    resolve_device,
    resolve_dtype,
    seed_everything,
)
from cardio_assets.generation.balance import cell_balanced_weights, draw_rows
from cardio_assets.generation.config import DiffusionConfig
from cardio_assets.generation.control import check_images, to_model_space
from cardio_assets.generation.progress import Progress, subsample_curve
from cardio_assets.generation.tokenizer import build_prompt_tokenizer

RECORD_NAME = "training_record.json"


@dataclass
class Backbone:
    vae: "torch.nn.Module"
    unet: "torch.nn.Module"
    text_encoder: "torch.nn.Module"
    tokenizer: object
    noise_scheduler: object  # DDPMScheduler (training); sampling builds its own from the config
    folder: Path
    trained_here: bool

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> "Backbone":
        for m in (self.vae, self.unet, self.text_encoder):
            m.to(device=device, dtype=dtype)
        return self


# ---------------------------------------------------------------------------- building blocks
def make_noise_scheduler(config: DiffusionConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def make_vae(config: DiffusionConfig):
    from diffusers import AutoencoderKL

    n = len(config.vae_block_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.vae_block_channels,
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.vae_norm_groups,
        sample_size=config.resolution,
        mid_block_add_attention=config.vae_mid_attention,
    )


def make_unet(config: DiffusionConfig):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention))
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.unet_block_channels,
        layers_per_block=config.unet_layers_per_block,
        attention_head_dim=config.unet_attention_heads,  # diffusers: the number of heads
        cross_attention_dim=config.text_hidden,
        norm_num_groups=config.unet_norm_groups,
    )


def make_text_encoder(config: DiffusionConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=max(config.text_max_length, tokenizer.model_max_length),
        projection_dim=config.text_hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(text_config)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids exactly as the Stable Diffusion pipelines make them (pad to max length)."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode_token_ids(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    """The pipelines' prompt embedding: last hidden state, no attention mask (CLIP is causal)."""
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        raise NotImplementedError("text encoders with use_attention_mask are not supported")
    return text_encoder(input_ids, attention_mask=attention_mask)[0]


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: torch.device) -> torch.Tensor:
    ids = tokenize(tokenizer, prompts).to(device)
    return encode_token_ids(text_encoder, ids)


def unique_prompts(prompts: list[str]) -> tuple[list[str], torch.Tensor]:
    """(unique prompts with "" first, index of each input prompt into that list)."""
    uniq = [""] + sorted({p for p in prompts} - {""})
    pos = {p: i for i, p in enumerate(uniq)}
    return uniq, torch.tensor([pos[p] for p in prompts], dtype=torch.long)


@torch.no_grad()
def encode_latent_moments(
    vae, images: np.ndarray, resolution: int, batch_size: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of every image (unscaled), float32 on CPU."""
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        x = to_model_space(images[i : i + batch_size], resolution).to(device=device, dtype=dtype)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def diffusion_target(noise_scheduler, latents, noise, timesteps):
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {kind!r}")


def save_backbone(folder: str | Path, vae, text_encoder, tokenizer, unet, noise_scheduler) -> Path:
    """Write a full `StableDiffusionPipeline` folder (no safety checker, no feature extractor)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=noise_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# ---------------------------------------------------------------------------- loading
def read_record(folder: str | Path) -> dict | None:
    path = Path(folder) / RECORD_NAME
    return json.loads(path.read_text()) if path.exists() else None


def load_backbone(
    folder: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Backbone:
    """Load a diffusers-layout Stable Diffusion folder (SD 2.1-base or one trained here), frozen."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
    device = resolve_device(device or "auto")
    dtype = resolve_dtype(dtype or "auto", device)
    kw = dict(local_files_only=True)
    dkw = dtype_kwargs(dtype, "diffusers")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw, **dkw)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw, **dkw)
    text_encoder = CLIPTextModel.from_pretrained(
        folder, subfolder="text_encoder", **kw, **dtype_kwargs(dtype, "transformers")
    )
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **kw)
    noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **kw)
    for m in (vae, unet, text_encoder):
        m.requires_grad_(False)
        m.eval()
        m.to(device=device)
    record = read_record(folder) or {}
    return Backbone(
        vae=vae,
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        noise_scheduler=noise_scheduler,
        folder=folder,
        trained_here=bool(record.get("trained_here", False)),
    )


# ---------------------------------------------------------------------------- training here


def _train_vae(vae, images: np.ndarray, config: DiffusionConfig, device, dtype, gen, log) -> list[float]:
    data = to_model_space(images, config.resolution)  # (N, 3, R, R) in [-1, 1], CPU
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    warmup = max(1, config.vae_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    progress = Progress("vae", config.vae_steps, every_seconds=config.log_every_seconds, log=log)
    losses: list[float] = []
    vae.train()
    for step in range(config.vae_steps):
        idx = draw_rows(len(data), config.vae_batch_size, gen)  # the VAE learns every image alike
        x = data[idx].to(device)
        with autocast_context(device, dtype):
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(
                posterior.mean.shape, generator=gen
            ).to(device, posterior.mean.dtype)
            recon = vae.decode(z).sample
        rec = F.mse_loss(recon.float(), x)
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
    warmup = max(1, config.unet_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    progress = Progress("unet", config.unet_steps, every_seconds=config.log_every_seconds, log=log)
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
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        progress.update(step + 1, losses[-1])
    unet.eval()
    text_encoder.eval()
    return losses


def latent_scaling(mean: torch.Tensor, std: torch.Tensor) -> float:
    """VAE scaling factor so that scaled latents have unit standard deviation (SD's 0.18215)."""
    mean, std = mean[:4096], std[:4096]
    sample = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    return 1.0 / float(sample.std().clamp_min(1e-6))


def train_small_backbone(
    images: np.ndarray,
    prompts: list[str],
    config: DiffusionConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    cells: Sequence[str] | None = None,
) -> dict:
    """Train VAE then (text encoder +) UNet on `images`/`prompts`; save a pipeline folder.

    `cells` (one per image): the UNet draws images balanced over cells (`cell_balance_cap`);
    None draws uniformly.

    Returns the training record, also written to `out_dir/training_record.json` last (its
    presence marks a complete folder).
    """
    config.require_backbone_source(None)
    images = np.asarray(images, dtype=np.float32)
    check_images(images)
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

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_prompt_tokenizer(prompts, Path(tmp) / "tokenizer", config.text_max_length)
    vae = make_vae(config).to(device)
    unet = make_unet(config).to(device)
    text_encoder = make_text_encoder(config, tokenizer).to(device)
    noise_scheduler = make_noise_scheduler(config)
    n_params = {
        "vae": sum(p.numel() for p in vae.parameters()),
        "unet": sum(p.numel() for p in unet.parameters()),
        "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
    }
    log(f"backbone: training here on {len(images)} images at {config.resolution} px, device {device}, params {n_params}")

    t0 = time.perf_counter()
    vae_losses = _train_vae(vae, images, config, device, amp_dtype, gen, log)
    vae_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    mean, std = encode_latent_moments(vae, images, config.resolution, config.encode_batch_size, device, torch.float32)
    scaling = latent_scaling(mean, std)
    vae.register_to_config(scaling_factor=scaling)
    uniq, prompt_index = unique_prompts(prompts)
    encode_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    weights = None if cells is None else torch.from_numpy(cell_balanced_weights(cells, config.cell_balance_cap))
    unet_losses = _train_unet(
        unet, text_encoder, tokenizer, noise_scheduler, mean, std, scaling, prompt_index, uniq,
        config, device, amp_dtype, gen, log, weights,
    )
    unet_seconds = time.perf_counter() - t0

    for m in (vae, unet, text_encoder):
        m.to("cpu")
    if (out_dir / RECORD_NAME).exists():
        (out_dir / RECORD_NAME).unlink()
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)
    save_backbone(out_dir, vae, text_encoder, tokenizer, unet, noise_scheduler)
    record = {
        "kind": "backbone",
        "trained_here": True,
        "backbone_folder": str(out_dir),
        "n_images": int(len(images)),
        "n_prompts": len(uniq) - 1,
        "steps": {"vae": config.vae_steps, "unet": config.unet_steps},
        "text_encoder": "trained jointly with the UNet" if config.train_text_encoder else "frozen at random init",
        "unet_sampling": "uniform" if cells is None else f"balanced over cells, cap {config.cell_balance_cap:g}",
        "loss_curve": {"vae_reconstruction_mse": subsample_curve(vae_losses), "unet": subsample_curve(unet_losses)},
        "final_loss": {
            "vae_reconstruction_mse": float(np.mean(vae_losses[-20:])) if vae_losses else None,
            "unet": float(np.mean(unet_losses[-20:])) if unet_losses else None,
        },
        "vae_scaling_factor": scaling,
        "parameters": n_params,
        "seed": config.seed,
        "config": config.to_dict(),
        "device": str(device),
        "seconds": round(time.perf_counter() - t_start, 3),
        "stage_seconds": {
            "vae": round(vae_seconds, 3),
            "encode": round(encode_seconds, 3),
            "unet": round(unet_seconds, 3),
        },
    }
    (out_dir / RECORD_NAME).write_text(json.dumps(record, indent=1))
    log(f"backbone: saved to {out_dir} in {record['seconds']:.1f}s")
    return record
