"""The GPU resource: where the heavy steps (diffusion, classifiers) run.

`device="auto"` picks CUDA when present, else the CPU; `dtype="auto"` is bf16 on CUDA and
fp32 on the CPU for the diffusion models, and bf16 on CUDA and on CPUs with AMX for the
ResNet-18s (`ClassifierConfig.compute_dtype`; float16 leaves them in fp32). Nothing touches
CUDA until a heavy asset asks for its device. The heavy assets also carry the Dagster pool "gpu", which the instance config (dagster.yaml) limits
to one at a time, so two partitions never fight over one GPU.
"""

import dataclasses
import os
from collections.abc import Mapping

import torch
from dagster import ConfigurableResource
from pydantic import Field

from cardio_assets.compute import resolve_device, resolve_dtype

GPU_POOL = "gpu"
DATA_PARALLEL_VAR = "CARDIO_DATA_PARALLEL"


def data_parallel_from_env(environ: Mapping[str, str] | None = None) -> int:
    """CARDIO_DATA_PARALLEL: processes (GPUs) training the ControlNet data-parallel; 1 when unset."""
    raw = (os.environ if environ is None else environ).get(DATA_PARALLEL_VAR, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{DATA_PARALLEL_VAR}={raw!r}: give a whole number of processes (one per GPU), at least 1")
    return int(raw)


class GpuResource(ConfigurableResource):
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    dtype: str = Field(default="auto", description="auto | float32 | bfloat16 | float16")
    tf32: bool = Field(default=True, description="allow TF32 matmuls on Ampere+ GPUs")
    cpu_threads: int = Field(default=0, description="torch threads on the CPU; 0 = torch's default")
    data_parallel: int = Field(
        default=1, ge=1,
        description="processes training the ControlNet with torch DDP, one per GPU of the step's machine or pod (gloo on the CPU)",
    )

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def describe(self) -> str:
        device = self.torch_device()
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        return f"{device} ({name}), {resolve_dtype(self.dtype, device)}"

    def apply(self, config):
        """A copy of a Diffusion/Classifier config with this resource's device settings."""
        names = {f.name for f in dataclasses.fields(config)}
        changes = {"device": self.device, "dtype": self.dtype}  # both configs resolve "auto" (compute.py)
        if "tf32" in names:
            changes["tf32"] = self.tf32
        if "cpu_threads" in names and self.cpu_threads:
            changes["cpu_threads"] = self.cpu_threads
        if "torch_threads" in names and self.cpu_threads:
            changes["torch_threads"] = self.cpu_threads
        return dataclasses.replace(config, **changes)
