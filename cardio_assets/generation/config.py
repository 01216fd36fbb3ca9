"""Everything that sizes the generator models and their training and sampling.

One frozen dataclass, three presets:

- `smoke()`: 32 px, tiny models, a few steps; for tests (seconds on a CPU).
- `demo()`:  64 px, small models trained here; sized so that backbone + ControlNet training on
  ~6,000 images takes at most ~8 minutes and sampling ~1,500 images at most ~4 minutes on
  2 CPU cores. Measured on one thread of a shared 2-core CPU: training 427 s, sampling
  1,500 images 178 s (README.md; `benchmarks/diffusion.py --profile demo`).
- `paper()`: 512 px, Stable Diffusion 2.1-base loaded from a local folder, ControlNet AdamW lr
  1e-5, batch 1 x 2 accumulation, DDIM 20 steps, guidance 4 (the main paper's settings).

Naming note: diffusers' `UNet2DConditionModel(attention_head_dim=...)` is, for historical
reasons, the *number of heads*; `unet_attention_heads` is passed there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

# The UNet of Stable Diffusion 2.1-base (for benchmarks on random weights when no local folder
# is configured; the paper preset otherwise loads the real one from `backbone_folder`).
SD21_BASE_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
)

LR_SCHEDULES = ("constant", "cosine")

# Fields that may change between a checkpoint and its resumption without invalidating it.
RESUMABLE_FIELDS = frozenset(
    {
        "name",
        "controlnet_steps",
        "checkpoint_every",
        "log_every_seconds",
        "sampler",
        "sampler_steps",
        "guidance_scale",
        "guidance_interval",
        "controlnet_scale",
        "sample_batch_size",
        "device",
        "dtype",
        "tf32",
        "cpu_threads",
        "channels_last",
        "cache_in_memory_max_bytes",
        "encode_batch_size",
    }
)


@dataclass(frozen=True)
class DiffusionConfig:
    name: str = "custom"
    resolution: int = 32
    # --- backbone source: a local Stable Diffusion (diffusers layout) folder, or None = train here
    backbone_folder: str | None = None
    # --- VAE (AutoencoderKL); downsampling = 2 ** (len(vae_block_channels) - 1)
    vae_block_channels: tuple[int, ...] = (16, 32)
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 8
    vae_mid_attention: bool = False
    latent_channels: int = 4
    vae_kl_weight: float = 1e-4
    # weight of each image channel [ED, ES, ED] in the VAE's reconstruction loss; (0.5, 1, 0.5)
    # weighs the ES frame as much as the ED frame, which the image holds twice
    vae_channel_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # --- UNet2DConditionModel
    unet_block_channels: tuple[int, ...] = (32, 64)
    unet_attention: tuple[bool, ...] = (False, True)  # cross-attention per resolution level
    unet_layers_per_block: int = 1
    unet_attention_heads: int = 2
    unet_norm_groups: int = 8
    # --- CLIP text encoder (trained jointly with the UNet when train_text_encoder)
    text_hidden: int = 32
    text_layers: int = 1
    text_heads: int = 2
    text_intermediate: int = 64
    text_max_length: int = 20
    train_text_encoder: bool = True
    # --- ControlNet conditioning encoder: len = log2(downsampling) + 1
    controlnet_cond_channels: tuple[int, ...] = (8, 16)
    # how label maps become the conditioning image: "onehot" (6 channels) or "grey" (labels / 4)
    control_encoding: str = "onehot"
    # --- noise schedule (Stable Diffusion's)
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # --- backbone training (only when trained here)
    vae_steps: int = 20
    vae_batch_size: int = 8
    vae_lr: float = 1e-3
    unet_steps: int = 20
    unet_batch_size: int = 8
    unet_lr: float = 1e-3
    # --- ControlNet training
    controlnet_steps: int = 20
    batch_size: int = 4
    grad_accumulation: int = 1
    lr: float = 5e-4
    lr_warmup_steps: int = 0
    # the learning rate of the UNet and the ControlNet after warm-up: "constant", or "cosine"
    # (half a cosine from the full rate to 0 at the last step, as diffusers' get_scheduler); with
    # "cosine" the run's length shapes every step, so the step counts are no longer resumable
    lr_schedule: str = "constant"
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    prompt_drop: float = 0.1
    # Min-SNR-gamma loss weighting of the UNet and ControlNet training (None: plain MSE)
    snr_gamma: float | None = None
    # weight of the latent pixels under the heart (the control mask, one latent pixel dilated) in
    # the ControlNet's loss, against 1 elsewhere (1: plain MSE). On the demo, 6 raised QC pass of
    # the large cells' masks but every FID ratio by 20-65% (generation/README.md): left at 1
    heart_loss_weight: float = 1.0
    # training images are drawn inversely to their cell's size, at most this many times as often
    # as an image of the largest cell (1 = uniform); see generation/balance.py
    cell_balance_cap: float = 10.0
    gradient_checkpointing: bool = False
    # what is saved and sampled: an exponential moving average of the UNet's (and text encoder's)
    # and of the ControlNet's weights, with the decay 1 - (1 + step) ** -ema_power, at most
    # ema_max_decay (generation/ema.py); None saves the last step's weights
    ema_power: float | None = None
    ema_max_decay: float = 0.999
    # --- sampling
    sampler: str = "dpmsolver++"  # "dpmsolver++" | "unipc" | "ddim"
    sampler_steps: int = 20
    guidance_scale: float = 4.0
    # classifier-free guidance only on the steps in [start, end), as fractions of the sampling
    # steps (generation/guided_pipeline.py); (0, 1) = every step, the plain pipeline
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    # weight of the ControlNet's residuals at sampling (diffusers' controlnet_conditioning_scale)
    controlnet_scale: float = 1.0
    sample_batch_size: int = 8
    # --- bookkeeping
    checkpoint_every: int = 100
    log_every_seconds: float = 10.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    tf32: bool = True
    cpu_threads: int | None = None  # torch intra-op threads on CPU; None = torch's default
    # convolution weights and activations in channels-last memory (the UNet trains ~14% faster
    # on 2 CPU cores); stored weights stay in the ordinary layout
    channels_last: bool = True
    encode_batch_size: int = 64
    cache_in_memory_max_bytes: int = 4 * 1024**3

    def __post_init__(self) -> None:
        for name in ("vae_block_channels", "vae_channel_weights", "unet_block_channels", "unet_attention", "controlnet_cond_channels",
                     "guidance_interval"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.unet_attention) != len(self.unet_block_channels):
            raise ValueError("unet_attention needs one flag per UNet level")
        if self.backbone_folder is None:
            if self.resolution % self.downsampling:
                raise ValueError(f"resolution {self.resolution} not divisible by VAE downsampling {self.downsampling}")
            if 2 ** (len(self.controlnet_cond_channels) - 1) != self.downsampling:
                raise ValueError(
                    "controlnet_cond_channels must have log2(downsampling) + 1 entries "
                    f"({self.downsampling}x downsampling)"
                )
        if len(self.vae_channel_weights) != 3 or min(self.vae_channel_weights) < 0 or sum(self.vae_channel_weights) <= 0:
            raise ValueError("vae_channel_weights: three non-negative weights, one per image channel [ED, ES, ED]")
        if not 0.0 <= self.prompt_drop < 1.0:
            raise ValueError("prompt_drop must be in [0, 1)")
        if self.control_encoding not in ("grey", "onehot"):
            raise ValueError(f"unknown control_encoding {self.control_encoding!r}")
        start, end = self.guidance_interval
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"guidance_interval {self.guidance_interval}: need 0 <= start < end <= 1")
        if self.ema_power is not None and self.ema_power <= 0:
            raise ValueError(f"ema_power {self.ema_power}: need a positive power, or None for no average")
        if not 0.0 < self.ema_max_decay < 1.0:
            raise ValueError(f"ema_max_decay {self.ema_max_decay}: need 0 < decay < 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if self.sampler not in ("dpmsolver++", "unipc", "ddim"):
            raise ValueError(f"unknown sampler {self.sampler!r}")

    # ------------------------------------------------------------------ derived
    @property
    def downsampling(self) -> int:
        """Pixels per latent cell along each axis (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae_block_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsampling

    @property
    def trainable_here(self) -> bool:
        """Whether this preset can train its own backbone (the paper preset only loads SD)."""
        return self.vae_steps > 0 and self.unet_steps > 0

    def require_backbone_source(self, backbone_dir: str | None) -> None:
        """Fail at once when there is neither a local backbone nor a backbone to train here."""
        if not backbone_dir and not self.trainable_here:
            raise ValueError(
                f"the {self.name} profile generates with Stable Diffusion 2.1-base loaded from a local folder and "
                "cannot train its backbone here: set CARDIO_SD_BACKBONE_DIR (or the settings field sd_backbone_dir) "
                "to a diffusers-layout folder (see README, 'Local pretrained weights')"
            )

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.grad_accumulation

    def sampling_summary(self) -> str:
        """How the synthetic frames are sampled, in words, for the reports."""
        start, end = self.guidance_interval
        on = "every step" if (start, end) == (0.0, 1.0) else f"the steps from {start:.0%} to {end:.0%} of the trajectory"
        return (f"{self.sampler}, {self.sampler_steps} steps, classifier-free guidance {self.guidance_scale:g} on {on}, "
                f"ControlNet scale {self.controlnet_scale:g}, {self.resolution} px")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "DiffusionConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes) -> "DiffusionConfig":
        return dataclasses.replace(self, **changes)

    def training_fingerprint(self) -> dict:
        """The fields a ControlNet checkpoint depends on (all but RESUMABLE_FIELDS; a decaying
        learning rate makes the step count one of them)."""
        resumable = RESUMABLE_FIELDS if self.lr_schedule == "constant" else RESUMABLE_FIELDS - {"controlnet_steps"}
        return {k: v for k, v in self.to_dict().items() if k not in resumable}

    # ------------------------------------------------------------------ presets
    @classmethod
    def smoke(cls, **changes) -> "DiffusionConfig":
        """32 px, tiny models: a full train + sample cycle in about two minutes (tests)."""
        base = cls(
            name="smoke",
            resolution=32,
            vae_block_channels=(16, 32),
            vae_norm_groups=4,
            latent_channels=4,
            unet_block_channels=(16, 32),
            unet_attention=(False, True),
            unet_attention_heads=2,
            unet_norm_groups=4,
            text_hidden=16,
            text_layers=1,
            text_heads=2,
            text_intermediate=32,
            text_max_length=20,
            controlnet_cond_channels=(8, 16),
            # trained enough to pass the QC calibrated on the smoke run's real frames (so the
            # tests exercise every strategy on kept synthetic images); measured with
            # benchmarks/generator_quality.py --profile smoke: the VAE's reconstruction decides
            # (PSNR 22.5 -> 30 dB took first-attempt QC pass from 3% to 30%)
            vae_steps=800,
            vae_batch_size=8,
            vae_lr=3e-3,
            unet_steps=300,
            unet_batch_size=8,
            unet_lr=1e-3,
            controlnet_steps=800,
            batch_size=4,
            lr=1e-3,
            sampler_steps=4,
            guidance_scale=4.0,
            sample_batch_size=8,
            checkpoint_every=200,
            log_every_seconds=15.0,
            encode_batch_size=64,
        )
        return base.replace(**changes)

    @classmethod
    def demo(cls, **changes) -> "DiffusionConfig":
        """64 px, 16x16x4 latents; VAE 0.21M, UNet 1.4M, text encoder 0.1M, ControlNet 0.66M params."""
        base = cls(
            name="demo",
            resolution=64,
            vae_block_channels=(8, 16, 32),
            # two layers per block: the one-layer VAE blurred the apical slice's thin RV into the
            # myocardium (QC pass of its reconstructions of real apical frames 0.35 against the frames'
            # own 0.75; 0.61 with two layers), ES Dice of generated frames 0.656 -> 0.693 (real 0.707),
            # at the same training pace (generation/README.md, "The apical frames")
            vae_layers_per_block=2,
            vae_norm_groups=4,
            latent_channels=4,
            vae_kl_weight=1e-4,
            unet_block_channels=(32, 48, 64),
            unet_attention=(False, True, True),
            unet_attention_heads=4,
            unet_norm_groups=8,
            text_hidden=64,
            text_layers=2,
            text_heads=4,
            text_intermediate=128,
            text_max_length=20,
            controlnet_cond_channels=(16, 32, 64),
            # the VAE caps what any generator decoding through it can reach: QC pass of plain
            # encode-decode reconstructions of real demo frames was 0.645 at 800 steps, 0.723 at
            # 1600 (PSNR ED/ES 28.5/25.5 -> 30.0/28.1 dB; benchmarks/generator_quality.py --vae-only)
            vae_steps=1600,
            # the image is [ED, ES, ED], so a plain MSE weighs the ED frame twice: weighing both
            # frames alike took ES PSNR 26.8 -> 28.6 dB (ED 29.4 -> 28.3; phantom noise floor
            # ~27.7 dB) and QC pass of VAE reconstructions 0.727 -> 0.758 (generator_quality.py --vae-only)
            vae_channel_weights=(0.5, 1.0, 0.5),
            vae_batch_size=16,
            vae_lr=3e-3,
            # the UNet trained 1400 steps instead of 700 draws the prompted BMI band more faithfully
            # (overweight prompts failing their BMI floor 70 -> 43 and 49 of 576 images, two generator
            # seeds), at guidance 3 on the last 75% of the steps; the ControlNet's 1600 steps keep
            # the stage's time (generation README, "A better-fit UNet")
            unet_steps=1400,
            unet_batch_size=32,
            # twice the former rates (5e-4, 3e-4) with the weights averaged over the last ~16% of
            # the steps: first-attempt QC 0.654 -> 0.643 and 0.480 -> 0.561 (two generator seeds:
            # the gap between them halves), Dice and the diagnosis closer to real frames', mean FID
            # ratio 2.92 -> 2.80 and 3.17 -> 3.37; a cosine decay instead cost QC in both seeds
            # (generation README, "Averaged weights and the learning-rate schedule")
            unet_lr=1e-3,
            controlnet_steps=1600,
            batch_size=32,
            grad_accumulation=1,
            lr=6e-4,
            lr_warmup_steps=20,
            ema_power=0.75,
            sampler="dpmsolver++",
            # first-attempt QC pass with the demo's trained models, 192 training masks
            # (then benchmarks/sampling_steps.py, now sampling_settings.py): 20 steps 0.500, 12 steps 0.505,
            # 8 steps 0.474
            sampler_steps=12,
            # guidance draws each BMI band as a caricature of itself (synthetic normal-BMI frames p(normal)
            # 0.72-0.84 against 0.64 for real ones), which the realism report, weighing healthy cells as the
            # cohort does, saw as Normal BMI's FID ratio of 8.0: 2 instead of 3 halves the FID of normal-BMI
            # healthy frames (28 -> 15, 25 -> 11, 48 -> 24; three generators, benchmarks/band_realism.py);
            # on the demo's generator every Table 1 ratio but HF's falls (mean 3.66 -> 2.41), QC 0.817 both
            # (generation README, "Guidance 2"). 1.5 instead of 2, both demo draws (generator fixed; predictors
            # texture-augmented): the caricature within cells normal +0.116 -> +0.064 and +0.052 -> +0.005,
            # mean Table 1 ratio 2.30 -> 2.01 and 2.33 -> 1.82, QC 0.817 -> 0.817 and 0.816 -> 0.812
            # (generation README, "Guidance 1.5"). ControlNet scale 1.5: no better Dice (sampling_settings.py)
            guidance_scale=1.5,
            # guidance on the last 75% of the steps only (generation/guided_pipeline.py): within-group
            # FID ratios 5.3 -> 3.9 and 5.5 -> 3.7 (mean of Table 1's eight groups, two generator seeds,
            # the same images otherwise), first-attempt QC 0.568 -> 0.546 and 0.546 -> 0.541, the
            # diagnosis signal unchanged (700-step UNet, guidance 4, 576 training masks; generation README)
            guidance_interval=(0.25, 1.0),
            sample_batch_size=64,
            checkpoint_every=100,
            log_every_seconds=15.0,
            encode_batch_size=256,
        )
        return base.replace(**changes)

    @classmethod
    def paper(cls, backbone_folder: str | None = None, **changes) -> "DiffusionConfig":
        """Stable Diffusion 2.1-base at 512 px from a local folder; the main paper's settings.

        The architecture fields below describe SD 2.1-base for reference; the loaded folder's own
        configs are what is used. 5 epochs of ~200k images at batch 2 is ~500k steps.
        """
        base = cls(
            name="paper",
            resolution=512,
            backbone_folder=backbone_folder,
            vae_block_channels=(128, 256, 512, 512),
            vae_layers_per_block=2,
            vae_norm_groups=32,
            vae_mid_attention=True,
            latent_channels=4,
            unet_block_channels=(320, 640, 1280, 1280),
            unet_attention=(True, True, True, False),
            unet_layers_per_block=2,
            unet_attention_heads=5,
            unet_norm_groups=32,
            text_hidden=1024,
            text_layers=23,
            text_heads=16,
            text_intermediate=4096,
            text_max_length=77,
            train_text_encoder=False,
            controlnet_cond_channels=(16, 32, 96, 256),
            control_encoding="grey",  # the public code's labels / 4 image
            vae_steps=0,
            unet_steps=0,
            controlnet_steps=500_000,
            batch_size=1,
            grad_accumulation=2,
            lr=1e-5,
            lr_warmup_steps=0,
            max_grad_norm=1.0,
            gradient_checkpointing=True,
            sampler="ddim",
            sampler_steps=20,
            guidance_scale=4.0,
            sample_batch_size=16,
            checkpoint_every=5000,
            log_every_seconds=60.0,
            encode_batch_size=16,
        )
        return base.replace(**changes)

    @classmethod
    def preset(cls, name: str, **changes) -> "DiffusionConfig":
        try:
            factory = {"smoke": cls.smoke, "demo": cls.demo, "paper": cls.paper}[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; expected smoke, demo or paper") from None
        return factory(**changes)
