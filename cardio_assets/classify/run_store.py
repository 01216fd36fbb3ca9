"""Finished classifier runs kept on disk, so that a sweep killed half-way, or rerun after a change
that leaves some runs untouched, redoes only the runs it lacks.

A run (strategy x seed) is stored as `<folder>/<strategy>-seed<seed>-<key>/` holding
`predictions.parquet` and `run.json` (the run's description, `predictions.attrs["run"]`), the
folder published atomically. A `synth_only` run also keeps its model (`model.pt`, `model.json`):
`synth_pretrain_real_finetune` of the same seed starts from it, in whichever step it runs. `key` hashes everything the run's result depends on: the
strategy, the seed, the classifier settings that change training (not the device, threads,
workers, seed count or bootstrap size), the real index and, for a strategy that trains on
synthetic images, the synthetic one, and the bytes of a identity of their images (`lake.fingerprint`: a memory-mapped file's name, size and time):
regenerated synthetic frames give the synthetic strategies a new key (the real-only runs keep
theirs), re-preprocessed real ones give every run a new key, and a stored result is never
reused for other data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cardio_assets.classify.config import ClassifierConfig
from cardio_assets.classify.model import build_classifier
from cardio_assets.classify.schemes import TrainedModel
from cardio_assets.lake.atomic import atomic_dir
from cardio_assets.lake.fingerprint import rows_fingerprint

# settings that do not change what a run learns
NOT_IN_KEY = ("device", "torch_threads", "workers", "n_seeds", "bootstrap_n")


def data_fingerprint(image_set) -> str | None:
    """The identity of an `ImageSet` (None for None): its index and its images' files."""
    return None if image_set is None else rows_fingerprint(image_set.frames(), image_set.index)


def run_key(strategy: str, seed: int, config: ClassifierConfig, real_id: str, synthetic_id: str | None) -> str:
    """synthetic_id: the synthetic set's fingerprint for a strategy that trains on it, else None."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_IN_KEY}
    settings["dtype"] = str(config.compute_dtype())  # "auto" is bf16 on one machine, fp32 on another
    data = {"real": real_id, "synthetic": synthetic_id}
    text = json.dumps({"strategy": strategy, "seed": seed, "config": settings, "data": data}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def folder_name(strategy: str, seed: int, key: str) -> str:
    return f"{strategy}-seed{seed}-{key}"


def _folder(root: Path, strategy: str, seed: int, key: str) -> Path:
    return Path(root) / folder_name(strategy, seed, key)


def load_run(root: Path, strategy: str, seed: int, key: str) -> pd.DataFrame | None:
    """The stored predictions of that run (with `attrs["run"]`), or None."""
    return read_run(_folder(root, strategy, seed, key))


def read_run(folder: Path) -> pd.DataFrame | None:
    """The predictions stored in one run folder (with `attrs["run"]`), or None."""
    folder = Path(folder)
    if not (folder / "run.json").exists():
        return None
    predictions = pd.read_parquet(folder / "predictions.parquet")
    predictions.attrs["run"] = json.loads((folder / "run.json").read_text())
    return predictions


def save_run(root: Path, strategy: str, seed: int, key: str, predictions: pd.DataFrame,
             trained: TrainedModel | None = None) -> Path:
    """Store a finished run (and its model, if given); runs of the same strategy and seed stored
    under other keys go."""
    folder = _folder(root, strategy, seed, key)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        pd.DataFrame(predictions).to_parquet(tmp / "predictions.parquet", index=False)
        (tmp / "run.json").write_text(json.dumps(predictions.attrs["run"], default=_plain))
        if trained is not None:
            torch.save(trained.model.state_dict(), tmp / "model.pt")
            (tmp / "model.json").write_text(json.dumps(
                {"history": trained.history, "histories": trained.histories, "description": trained.description}, default=_plain))
    for stale in folder.parent.glob(f"{strategy}-seed{seed}-*"):
        if stale != folder and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def load_trained(root: Path, strategy: str, seed: int, key: str, config: ClassifierConfig) -> TrainedModel | None:
    """The model a stored run kept (`save_run(trained=...)`), or None."""
    folder = _folder(root, strategy, seed, key)
    if not (folder / "model.pt").exists():
        return None
    meta = json.loads((folder / "model.json").read_text())
    model = build_classifier(config.image_size, compute_dtype=config.compute_dtype())
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return TrainedModel(model, meta["history"], meta["histories"], meta["description"])


def _plain(value):
    """numpy scalars and arrays as JSON numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
