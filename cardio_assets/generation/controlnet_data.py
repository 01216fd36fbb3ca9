"""The ControlNet's training data, prepared once, and the batch each training step draws from it.

The frozen VAE and text encoder give the same answer every step, so their work is done once:
the VAE posterior (mean, std) of every image and the embedding of every distinct prompt. The
posteriors stay in memory, or go to float16 memmaps in `out_dir/cache/` when larger than
`config.cache_in_memory_max_bytes` (reused by a later call with the same data and backbone).
A step then samples a latent from the cached posterior, as `latent_dist.sample()` would.

The fingerprints of the data and of the backbone's weights key both that cache and the
training checkpoint: neither is reused for other data or another backbone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cardio_assets.generation.backbone import encode_prompts, unique_prompts
from cardio_assets.generation.balance import cell_balanced_weights, draw_rows
from cardio_assets.generation.config import DiffusionConfig
from cardio_assets.generation.control import control_tensor, to_model_space
from cardio_assets.generation.progress import Progress
from cardio_assets.generation.rows import row_shape, take_rows


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


def fingerprint_images(images, controls, prompts: list[str]) -> str:
    """A cheap hash of the training set: its shapes and every n-th image, mask and prompt
    (arrays or lazy row sources, `cardio_assets.generation.rows`)."""
    h = hashlib.sha1()
    h.update(str(((len(images),) + row_shape(images), (len(controls),) + row_shape(controls), len(prompts))).encode())
    step = max(1, len(images) // 64)
    every = np.arange(0, len(images), step)
    h.update(take_rows(images, every, np.float32).tobytes())
    h.update(take_rows(controls, every, np.uint8).tobytes())
    h.update("\n".join(prompts[::step]).encode())
    return h.hexdigest()


@dataclass
class ControlNetData:
    """Everything a ControlNet training step draws from."""

    mean: torch.Tensor | np.ndarray  # VAE posterior mean per image, unscaled (N, C, h, w)
    std: torch.Tensor | np.ndarray  # ... and its std; tensors, or float16 memmaps
    scaling_factor: float  # the VAE's latent scaling
    text_emb: torch.Tensor  # one row per distinct prompt, row 0 the empty prompt, on the device
    prompt_index: torch.Tensor  # each image's row in text_emb
    controls: object  # uint8 labels (N, 3, H, W): an array or a lazy row source, read per batch
    weights: torch.Tensor | None  # per-image draw probabilities; None draws uniformly
    num_train_timesteps: int

    @property
    def n_prompts(self) -> int:
        """Distinct non-empty prompts."""
        return len(self.text_emb) - 1

    def draw_batch(self, config: DiffusionConfig, gen: torch.Generator, device: torch.device):
        """(scaled latents, noise, timesteps, prompt embeddings, control) of one batch, on `device`.

        Every random draw comes from `gen`, in a fixed order: rows, posterior sample, noise,
        timesteps, prompt dropout.
        """
        B = config.batch_size
        idx = draw_rows(len(self.controls), B, gen, self.weights)
        m, s = _rows(self.mean, idx), _rows(self.std, idx)
        latents = (m + s * torch.randn(m.shape, generator=gen)) * self.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, self.num_train_timesteps, (B,), generator=gen)
        drop = torch.rand(B, generator=gen) < config.prompt_drop
        pidx = torch.where(drop, torch.zeros_like(idx), self.prompt_index[idx])
        cond = control_tensor(take_rows(self.controls, idx.numpy(), np.uint8), config.resolution, config.control_encoding).to(device)
        hidden = self.text_emb[pidx.to(device)]
        return latents.to(device), noise.to(device), t.to(device), hidden, cond


def prepare_data(
    backbone, images: np.ndarray, controls: np.ndarray, prompts: list[str], cells: Sequence[str] | None,
    config: DiffusionConfig, out_dir: Path, device, dtype, fingerprint: str, backbone_id: str, log,
) -> ControlNetData:
    """Encode the images' latent posteriors and the prompts once (no random draw)."""
    mean, std = _latent_cache(backbone, images, config, out_dir, device, dtype, fingerprint, backbone_id, log)
    uniq, prompt_index = unique_prompts(prompts)
    text_emb = torch.cat(
        [encode_prompts(backbone.tokenizer, backbone.text_encoder, uniq[i : i + 64], device) for i in range(0, len(uniq), 64)]
    )
    return ControlNetData(
        mean=mean,
        std=std,
        scaling_factor=float(backbone.vae.config.scaling_factor),
        text_emb=text_emb,
        prompt_index=prompt_index,
        controls=controls,
        weights=None if cells is None else torch.from_numpy(cell_balanced_weights(cells, config.cell_balance_cap)),
        num_train_timesteps=backbone.noise_scheduler.config.num_train_timesteps,
    )


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
        # meta.json is written last: a cache without it (a killed run's) is rebuilt
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir.mkdir(parents=True)
        mean = np.lib.format.open_memmap(cache_dir / "latent_mean.npy", mode="w+", dtype=np.float16, shape=(n, c, h, h))
        std = np.lib.format.open_memmap(cache_dir / "latent_std.npy", mode="w+", dtype=np.float16, shape=(n, c, h, h))
    progress = Progress("controlnet: encoding latents", n, every_seconds=config.log_every_seconds, log=log, unit="image")
    bs = config.encode_batch_size
    for i in range(0, n, bs):
        x = to_model_space(take_rows(images, np.arange(i, min(i + bs, n))), config.resolution).to(device=device, dtype=dtype)
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
