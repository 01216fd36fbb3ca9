"""diffusers' ControlNet pipeline with classifier-free guidance limited to an interval of the trajectory.

Guidance applied at every step over-draws the prompted attributes at high noise, where the image's
coarse layout (here: how much fat surrounds the heart, the BMI band) is decided; applied only to
the middle and late steps it keeps the prompt's effect on detail with less caricature
(Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves sample and
distribution quality in diffusion models"). The interval is given as fractions of the sampling
steps, as diffusers' `control_guidance_start` / `control_guidance_end` are.

The pipeline's loop reads the `guidance_scale` property at every step; outside the interval it
reads 1 (the conditional prediction alone) while the batch keeps its unconditional half, so the
interval changes no shapes and the default (0, 1) is the plain pipeline.
"""

from __future__ import annotations

from diffusers import StableDiffusionControlNetPipeline


def guided_at_step(step: int, n_steps: int, interval: tuple[float, float]) -> bool:
    """Whether step `step` (0-based) of `n_steps` lies in the guidance interval [start, end)."""
    start, end = interval
    return start <= step / n_steps < end


class IntervalGuidanceControlNetPipeline(StableDiffusionControlNetPipeline):
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    _guided_now: bool = True

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale if self._guided_now else 1.0

    def __call__(self, *args, num_inference_steps: int = 50, **kwargs):
        if tuple(self.guidance_interval) == (0.0, 1.0):
            self._guided_now = True
            return super().__call__(*args, num_inference_steps=num_inference_steps, **kwargs)
        if kwargs.get("callback_on_step_end") is not None:
            raise ValueError("a guidance interval sets callback_on_step_end itself")
        interval = tuple(self.guidance_interval)

        def next_step(pipe, step: int, timestep, tensors: dict) -> dict:
            pipe._guided_now = guided_at_step(step + 1, pipe.num_timesteps, interval)
            return tensors

        self._guided_now = guided_at_step(0, num_inference_steps, interval)
        try:
            return super().__call__(*args, num_inference_steps=num_inference_steps, callback_on_step_end=next_step, **kwargs)
        finally:
            self._guided_now = True
