"""Which patients every model trained and validated on, kept in the lake so that leakage is
proven by a check rather than assumed from the code.

One format for every model: a table with columns `model`, `run`, `patient_id`, `role`
(`train`: its images were training data; `val`: they chose the epoch, threshold or alpha),
stored as `training_patients.parquet` in the model's folder under `data_lake/models/`:

| folder | model | run |
|---|---|---|
| `diffusion_backbone/` (only when trained here) | `diffusion_backbone` | `diffusion_backbone` |
| `controlnet/` | `controlnet` | `controlnet` |
| `attribute_predictors/` | `attribute_predictors` | `attribute_predictors` |
| `classifiers/` (one file for all runs) | `classifier` | `<strategy> seed <seed>` |

Synthetic training images are not listed: they carry only a salted hash of their source
patient, and the `masks_from_training_only` check traces those to the training split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cardio_assets.lake.atomic import atomic_write_file

FILE_NAME = "training_patients.parquet"
CLASSIFIER_FOLDER = "classifiers"  # under data_lake/models/, beside the generator models
COLUMNS = ("model", "run", "patient_id", "role")
ROLES = ("train", "val")


def patient_roles(model: str, run: str, train_ids, val_ids=()) -> pd.DataFrame:
    """One row per distinct patient and role of one training run."""
    rows = [(model, run, pid, role) for role, ids in (("train", train_ids), ("val", val_ids)) for pid in sorted(set(ids))]
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(str)


def classifier_run_name(strategy: str, seed) -> str:
    # int(): a runs table with skipped rows (no seed) holds the seeds as floats
    return f"{strategy} seed {int(seed)}"


def write_training_patients(folder: Path, table: pd.DataFrame) -> Path:
    """Write the table into `folder` atomically (a killed run leaves the previous record,
    never half of one)."""
    return atomic_write_file(Path(folder) / FILE_NAME, lambda tmp: table[list(COLUMNS)].to_parquet(tmp, index=False))


def read_training_patients(folder: Path) -> pd.DataFrame | None:
    """The record in `folder`, or None when the model left none (leakage then unproven)."""
    path = Path(folder) / FILE_NAME
    return pd.read_parquet(path) if path.exists() else None
