"""The latent-diffusion backbone: VAE, text-conditioned UNet, CLIP text encoder + tokenizer.

Two sources, one loading path:

- `load_backbone(folder)` loads a Stable Diffusion folder in diffusers layout
  (`model_index.json`, `vae/`, `unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`) part by
  part with `from_pretrained(folder, subfolder=..., local_files_only=True)`, frozen. That is how
  SD 2.1-base is used when the user configures a local copy.
- `cardio_assets.generation.backbone_training.train_small_backbone(...)` builds a small
  backbone of the same classes (`make_vae`, `make_unet`, `make_text_encoder` here), trains it
  and saves it with `save_backbone` as a full `StableDiffusionPipeline` folder, which
  `load_backbone` (and `StableDiffusionPipeline.from_pretrained`) then read exactly like SD 2.1.

Prompts become UNet conditions here too (`tokenize`, `encode_token_ids`), exactly as the
Stable Diffusion pipelines make them, for training and sampling alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cardio_assets.compute import load_kwargs, resolve_device, resolve_dtype
from cardio_assets.generation.config import DiffusionConfig

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


def diffusion_target(noise_scheduler, latents, noise, timesteps):
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {kind!r}")


def diffusion_loss(noise_scheduler, pred, target, timesteps, snr_gamma: float | None = None,
                   pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the prediction, per-sample weighted by Min-SNR-gamma (Hang et al.
    2023) when `snr_gamma` is set: min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v.
    `pixel_weights` (N, 1, h, w) weigh latent pixels within each sample (a weighted mean)."""
    if snr_gamma is None and pixel_weights is None:
        return F.mse_loss(pred.float(), target.float())
    squared = F.mse_loss(pred.float(), target.float(), reduction="none")
    if pixel_weights is None:
        per_sample = squared.mean(dim=tuple(range(1, pred.ndim)))
    else:
        w = pixel_weights.float().expand_as(squared)
        per_sample = (squared * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))
    if snr_gamma is None:
        return per_sample.mean()
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    weight = torch.clamp(snr, max=snr_gamma)
    weight = weight / (snr + 1 if noise_scheduler.config.prediction_type == "v_prediction" else snr)
    return (per_sample * weight).mean()


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
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **load_kwargs(dtype))
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **load_kwargs(dtype))
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **load_kwargs(dtype, "transformers"))
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
