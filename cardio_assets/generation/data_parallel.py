"""Data-parallel ControlNet training: one process per GPU of a pod (gloo on the CPU), torch DDP.

Every process draws the same global batch from the same checkpointed generator and trains on
its own contiguous share of its rows; each share's loss is weighted by its size, so DDP's
gradient average equals the gradient of the global batch's mean loss. The training therefore
follows the one-process run (same batches, same loss curve up to float summation order) at any
world size, and a checkpoint written by any world size resumes at any other: it holds the
model, optimizer, scheduler and generator, never anything per process.

Rank 0 alone writes the checkpoints, the final weights and the record; the others wait at a
barrier where rank 0 sets things up (a stale checkpoint set aside, a latent cache written)
before they read them.

`train_controlnet_data_parallel` starts the processes itself (`torch.multiprocessing`, a file
rendezvous), so a Dagster step with N GPUs needs no launcher. Under `torchrun` or `accelerate
launch`, initialise the process group and call `train_controlnet` in every process: it finds
the group and behaves the same.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from cardio_assets.lake import mirror


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the data-parallel ones; rank 0 of 1 when there is no group."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> "ProcessGroup":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first; the others run it after rank 0 has finished it."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda:<rank> (modulo the GPUs visible); the CPU stays the CPU."""
        if device.type != "cuda" or not self.parallel:
            return device
        index = self.rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)

    def share(self, batch_size: int) -> slice:
        """This process's contiguous rows of a global batch (sizes differ by at most one)."""
        if batch_size < self.world_size:
            raise ValueError(f"batch size {batch_size} is smaller than the {self.world_size} data-parallel processes")
        bounds = np.linspace(0, batch_size, self.world_size + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DDP around `model` (rank 0's weights broadcast to all); the model itself without a group."""
        if not self.parallel:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, model: torch.nn.Module, last_micro_step: bool):
        """Skip the gradient all-reduce on all but the last micro-step of an accumulated step."""
        if self.parallel and not last_micro_step:
            return model.no_sync()
        return nullcontext()

    def global_loss(self, share_loss: torch.Tensor) -> float:
        """The global batch's loss from each process's size-weighted share (one all-reduce)."""
        value = share_loss.detach().float().reshape(1)  # on the process's device: NCCL reduces CUDA tensors
        if self.parallel:
            dist.all_reduce(value)
        return float(value.cpu())


def train_controlnet_data_parallel(
    world_size: int,
    backbone_dir: str | Path,
    images: np.ndarray,
    controls: np.ndarray,
    prompts: list[str],
    config,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    resume: str = "auto",
    cells: Sequence[str] | None = None,
    backend: str | None = None,
) -> dict:
    """`train_controlnet` in `world_size` processes; returns rank 0's training record.

    backend: "nccl" on CUDA, "gloo" on the CPU (None picks by `config.device`). The processes
    print their progress (rank 0 only) to stdout, which a Dagster step captures; `log` gets
    the start and the end.
    """
    from cardio_assets.generation.backbone import RECORD_NAME
    from cardio_assets.generation.controlnet import train_controlnet

    if world_size <= 1:
        return train_controlnet(backbone_dir, images, controls, prompts, config, out_dir, log=log, resume=resume, cells=cells)
    from cardio_assets.compute import resolve_device

    backend = backend or ("nccl" if resolve_device(config.device).type == "cuda" else "gloo")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendezvous = Path(tempfile.mkdtemp(prefix="cardio-ddp-"))  # processes of one machine
    log(f"controlnet: training data-parallel in {world_size} processes ({backend})")
    try:
        torch.multiprocessing.start_processes(
            _worker, nprocs=world_size, join=True, start_method="spawn",
            args=(world_size, backend, f"file://{rendezvous / 'store'}", backbone_dir, images, controls, prompts, config,
                  str(out_dir), resume, None if cells is None else list(cells), mirror.attachments()),
        )
    finally:
        shutil.rmtree(rendezvous, ignore_errors=True)
    record = json.loads((out_dir / RECORD_NAME).read_text())
    log(f"controlnet: {record['steps']} steps done in {world_size} processes, {record['steps_per_second'] or 0:.2f} steps/s")
    return record


def _worker(rank, world_size, backend, init_method, backbone_dir, images, controls, prompts, config, out_dir, resume, cells,
            lake_mirrors):
    from cardio_assets.generation.controlnet import train_controlnet

    mirror.attach_all(lake_mirrors)  # rank 0's checkpoints reach a lake on object storage as they are written
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        train_controlnet(backbone_dir, images, controls, prompts, config, out_dir, resume=resume, cells=cells,
                         log=_print_flushed if rank == 0 else _silent)
    finally:
        dist.destroy_process_group()


def _print_flushed(message: str) -> None:
    print(message, flush=True)


def _silent(message: str) -> None:
    pass
