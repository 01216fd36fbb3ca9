"""Exponential moving average of the trained weights (`DiffusionConfig.ema_power`).

Diffusion models are sampled from an average of their recent weights, not from the last step's
(DDPM, latent diffusion, ControlNet's reference training): the last step's weights carry the
noise of the last few hundred minibatches, which shows as samples that change with the exact
step training stopped at. diffusers' `EMAModel` keeps the average; with its warm-up the decay
after step s is 1 - (1 + s) ** -power, capped at `ema_max_decay`, so a short run averages over
a window that grows with it (power 3/4: about the last 16% of 1,400 steps).

Training keeps optimizing the raw weights (and checkpoints them, with the average, for resuming);
what is saved for sampling is the average.
"""

from __future__ import annotations

from typing import Iterable

import torch

from cardio_assets.generation.config import DiffusionConfig


def weight_average(params: Iterable[torch.nn.Parameter], config: DiffusionConfig):
    """diffusers' `EMAModel` over `params` as `config` asks, or None without `ema_power`."""
    if config.ema_power is None:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(list(params), decay=config.ema_max_decay, use_ema_warmup=True, power=config.ema_power, foreach=True)

