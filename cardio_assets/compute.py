"""Where the models run (device, dtype, backend flags) and how every run is seeded.

The one helper of its kind: the generator, the classifiers and the GPU resource use it.

Nothing here touches CUDA at import time; CUDA is only queried when a function is called.
"""

from __future__ import annotations

import random

import numpy as np
import torch

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`"auto"` (or None): CUDA when available, else CPU; any other name is passed to torch."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_dtype(name: str | torch.dtype | None = "auto", device: torch.device | None = None) -> torch.dtype:
    """`"auto"`: bf16 on CUDA (fp16 on GPUs without bf16), fp32 on CPU."""
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "auto":
        device = resolve_device("auto") if device is None else torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected 'auto' or one of {sorted(_DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """"bfloat16" for torch.bfloat16: the name `resolve_dtype` reads back, for records and JSON."""
    return str(dtype).removeprefix("torch.")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 natively: CUDA GPUs with bf16, CPUs with Intel AMX tiles.
    Elsewhere a CPU emulates bf16 and runs it slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.2
        return bool(probe is not None and probe())
    return False


def resolve_autocast_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The autocast dtype of a network that trains in fp32 weights: `"auto"` is bf16 where the
    device runs it natively (`native_bf16`), fp32 elsewhere; any other name as `resolve_dtype`."""
    if name is None or name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return resolve_dtype(name, device)


def configure_backend(tf32: bool = True, cpu_threads: int | None = None) -> None:
    """TF32 matmuls/convolutions on Ampere+ GPUs (a no-op for CPU math); cuDNN autotuning off
    so that runs are reproducible; optionally the number of CPU threads.

    On a CPU shared with other busy processes, 1 thread is often faster than 2: every op's
    OpenMP barrier waits for the thread that lost its core (steps measured 15x slower).
    """
    if cpu_threads:
        torch.set_num_threads(int(cpu_threads))
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def set_memory_format(channels_last: bool, *modules: torch.nn.Module) -> None:
    """Channels-last (or the ordinary contiguous) memory for the modules' 4-d weights; a
    convolution whose weight is channels-last gives channels-last activations too."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for module in modules:
        module.to(memory_format=memory_format)


def seed_everything(seed: int, deterministic_cudnn: bool = False) -> None:
    """Seed python, numpy and torch (all CUDA devices lazily, without initialising CUDA).

    `deterministic_cudnn` also pins cuDNN to deterministic kernels: the classifiers ask for
    it (small convolutions, exact reruns); the diffusion models leave the choice to
    `configure_backend`, whose autotuning is off either way."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic_cudnn:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def autocast_context(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for trainable fp32 models next to frozen low-precision ones."""
    import contextlib

    if dtype in (torch.bfloat16, torch.float16) and device.type in ("cuda", "cpu"):
        if device.type == "cpu" and dtype is torch.float16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def load_kwargs(dtype: torch.dtype, library: str = "diffusers") -> dict:
    """What every `from_pretrained` of local weights gets: no network, the dtype, and a plain load.
    diffusers' low-memory load needs `accelerate`, which this project does not depend on: left to its
    default, every load printed a four-line warning recommending it (156 lines of a demo's log)."""
    return {"local_files_only": True, "low_cpu_mem_usage": False, **dtype_kwargs(dtype, library)}


def dtype_kwargs(dtype: torch.dtype, library: str = "diffusers") -> dict:
    """`{"dtype": ...}` for libraries that renamed `torch_dtype` (diffusers >= 0.36,
    transformers >= 4.56), else `{"torch_dtype": ...}`."""
    from importlib.metadata import version

    def _v(text: str) -> tuple[int, int]:
        parts = text.split(".")
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)

    threshold = {"diffusers": (0, 36), "transformers": (4, 56)}[library]
    return {"dtype": dtype} if _v(version(library)) >= threshold else {"torch_dtype": dtype}
