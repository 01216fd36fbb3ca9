"""Atomic, resumable training checkpoints.

A checkpoint is a folder `checkpoint/` holding `model.safetensors` (the trained weights) and
`state.pt` (step, optimizer, lr scheduler, RNG states of torch / numpy / python / CUDA and of
the data generator, loss history, config fingerprint) and `COMPLETE`. It is written through
`cardio_assets.lake.atomic.atomic_dir`, so a crash mid-write leaves the previous checkpoint intact.
`state.pt` holds only tensors and plain Python values, so it loads with `weights_only=True`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cardio_assets.lake.atomic import atomic_dir, recover

NAME = "checkpoint"


def rng_states(data_generator: torch.Generator | None = None) -> dict:
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "data": data_generator.get_state() if data_generator is not None else None,
    }
    return states


def set_rng_states(states: dict, data_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if data_generator is not None and states.get("data") is not None:
        data_generator.set_state(states["data"])


def _state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(out_dir: str | Path, model: torch.nn.Module, state: dict) -> Path:
    """Write `out_dir/checkpoint` atomically; `COMPLETE` (the step) is written last, synced."""
    out_dir = Path(out_dir)
    final = out_dir / NAME
    with atomic_dir(final) as tmp:
        save_file(_state_dict_cpu(model), str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        with open(tmp / "COMPLETE", "w") as fh:
            fh.write(str(state.get("step", "")))
            fh.flush()
            os.fsync(fh.fileno())
    return final


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint folder, also after a crash between atomic_dir's two renames."""
    found = recover(Path(out_dir) / NAME)
    return found if found is not None and (found / "COMPLETE").exists() else None


def load_checkpoint(path: str | Path, model: torch.nn.Module) -> dict:
    """Load weights into `model` (strict) and return the state dict (CPU tensors)."""
    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    model.load_state_dict(weights, strict=True)
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)


def clean_temporaries(out_dir: str | Path, names: tuple[str, ...] = (NAME,)) -> None:
    """Recover `out_dir/<name>` for each name from what a killed run left (`lake.atomic.recover`)."""
    for name in names:
        recover(Path(out_dir) / name)
