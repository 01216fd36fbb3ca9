"""The six training strategies, as data, and the code that runs one of them.

| name | training data |
|---|---|
| `real` | real training patients (healthy undersampled to HF 25%) |
| `real_plus_synth_1x` | + a synthetic set balanced over the 36 cells, N per cell |
| `real_plus_synth_2x` | + the balanced synthetic set with 2N per cell (the 1x set is its first half) |
| `synth_only` | the 2N-per-cell synthetic set alone |
| `synth_pretrain_real_finetune` | train on the 2N synthetic set, then fine-tune on real from those weights (RoentGen-v2) |
| `real_synth_mix_alpha` | every batch mixes real and synthetic with real share alpha, alpha from a grid chosen on validation balanced accuracy (Ktena et al.) |

N is `ClassifierConfig.synthetic_per_cell`. Validation, test and the balanced held-out set are
always real: synthetic images are only ever training data. Validation healthy patients are
undersampled to `hf_val_fraction`; test and held-out keep their prevalence.

In the alpha mix the synthetic half of a batch is drawn, as in Ktena et al., uniformly over
the demographic cells while keeping the training label prevalence (HF at
`hf_train_fraction`); an epoch has as many batches as the `real` strategy's epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cardio_assets.classify import run_store
from cardio_assets.classify.config import ClassifierConfig
from cardio_assets.classify.model import HFClassifier
from cardio_assets.classify.schemes import stage_logs, train_concat, train_mix, train_pretrain_finetune
from cardio_assets.classify.train import (
    Frames,
    Log,
    as_frames,
    auroc,
    choose_threshold,
    predict,
    undersample_healthy,
)
from cardio_assets.cohort.cells import CELL_KEYS
from cardio_assets.cohort.splits import EVALUATION_SETS
from cardio_assets.cohort.training_patients import classifier_run_name, patient_roles

PREDICTION_COLUMNS = (
    "strategy", "seed", "evaluation_set", "patient_id", "cell", "sex", "age_band", "bmi_band",
    "label", "score", "threshold", "prediction",
)


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str  # column header in reports
    uses_real: bool
    synthetic_multiple: int  # synthetic images per cell, in units of config.synthetic_per_cell
    scheme: str  # "concat" | "pretrain_finetune" | "mix"
    description: str


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("real", "Real", True, 0, "concat", "real training images only (baseline)"),
        Strategy("real_plus_synth_1x", "Real + synth 1x", True, 1, "concat",
                 "real + balanced synthetic, N per cell"),
        Strategy("real_plus_synth_2x", "Real + synth 2x", True, 2, "concat",
                 "real + balanced synthetic, 2N per cell"),
        Strategy("synth_only", "Synthetic only", False, 2, "concat", "balanced synthetic (2N per cell) only"),
        Strategy("synth_pretrain_real_finetune", "Synth pretrain + real finetune", True, 2, "pretrain_finetune",
                 "trained on balanced synthetic (2N per cell), then fine-tuned on real from those weights"),
        Strategy("real_synth_mix_alpha", "Real/synth mix (alpha)", True, 2, "mix",
                 "batches mix real (share alpha) and synthetic; alpha chosen on validation"),
    )
}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)


@dataclass
class ImageSet:
    """Images (N, 3, H, W) in [0, 1] (array, memmap or lazy `Frames`) and their index, row i
    of the index describing image i."""

    images: object
    index: pd.DataFrame

    def __post_init__(self) -> None:
        self.index = self.index.reset_index(drop=True)
        if len(self.index) != len(self.images):
            raise ValueError(f"index has {len(self.index)} rows but there are {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.index)

    def frames(self, rows=None) -> Frames:
        frames = as_frames(self.images)
        return frames if rows is None else frames.subset(rows)

    @classmethod
    def concat(cls, sets) -> "ImageSet":
        """Lazily concatenate several sets (e.g. the 36 per-cell FrameSets of the data lake,
        anything with `.images` and `.index`); memory-mapped images stay on disk."""
        sets = [s for s in sets if len(s.index)]
        if not sets:
            raise ValueError("nothing to concatenate")
        parts = []
        for s in sets:
            f = as_frames(s.images)
            parts += list(zip(f.arrays, f.rows))
        return cls(Frames(parts), pd.concat([s.index for s in sets], ignore_index=True))


@dataclass
class TrainingSet:
    """Rows (positions) of the real and synthetic indexes a strategy trains on."""

    strategy: str
    real_rows: np.ndarray
    synthetic_rows: np.ndarray
    notes: dict = field(default_factory=dict)


def _labels(index: pd.DataFrame) -> np.ndarray:
    return (index["diagnosis"].to_numpy() == "hf").astype(np.int64)


def balanced_synthetic_rows(synthetic_index: pd.DataFrame, per_cell: int, seed: int) -> tuple[np.ndarray, dict]:
    """Up to `per_cell` synthetic rows from each of the 36 cells, picked at random (seeded per
    cell, so the first N of a cell are the same whatever the total asked: 1x is a subset of
    2x). Returns the rows, sorted, and the count per cell (short cells are reported)."""
    index = synthetic_index.reset_index(drop=True)
    if "synthetic" in index and not index["synthetic"].astype(bool).all():
        raise ValueError("the synthetic index holds rows not marked synthetic")
    rows, counts = [], {}
    for i, cell in enumerate(CELL_KEYS):
        members = np.flatnonzero(index["cell"].to_numpy() == cell)
        rng = np.random.default_rng([seed, i])
        take = members[rng.permutation(len(members))[:per_cell]]
        rows.append(take)
        counts[cell] = len(take)
    short = {c: n for c, n in counts.items() if n < per_cell}
    return np.sort(np.concatenate(rows)) if rows else np.empty(0, np.int64), {"per_cell": counts, "short_cells": short}


def real_training_rows(real_index: pd.DataFrame, config: ClassifierConfig, seed: int) -> np.ndarray:
    index = real_index.reset_index(drop=True)
    train = index[(index["split"] == "train") & ~_synthetic_mask(index)]
    return np.sort(undersample_healthy(train, config.hf_train_fraction, seed).index.to_numpy())


def validation_rows(real_index: pd.DataFrame, config: ClassifierConfig, seed: int) -> np.ndarray:
    index = real_index.reset_index(drop=True)
    val = index[(index["split"] == "val") & ~_synthetic_mask(index)]
    return np.sort(undersample_healthy(val, config.hf_val_fraction, seed).index.to_numpy())


def _synthetic_mask(index: pd.DataFrame) -> np.ndarray:
    return index["synthetic"].astype(bool).to_numpy() if "synthetic" in index else np.zeros(len(index), bool)


def build_training_set(strategy: str, real_index: pd.DataFrame, synthetic_index: pd.DataFrame | None,
                       config: ClassifierConfig, seed: int) -> TrainingSet:
    """The training rows of a strategy (real rows undersampled at patient level, synthetic
    rows balanced over the 36 cells)."""
    spec = get_strategy(strategy)
    real_rows = real_training_rows(real_index, config, seed) if spec.uses_real else np.empty(0, np.int64)
    notes: dict = {}
    synthetic_rows = np.empty(0, np.int64)
    if spec.synthetic_multiple:
        if synthetic_index is None or len(synthetic_index) == 0:
            raise ValueError(f"strategy {strategy!r} needs synthetic images, and none were given")
        synthetic_rows, notes = balanced_synthetic_rows(
            synthetic_index, spec.synthetic_multiple * config.synthetic_per_cell, seed)
    return TrainingSet(strategy, real_rows, synthetic_rows, notes)


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGY_NAMES}") from None


def _predictions(strategy: str, seed: int, evaluation_set: str, index: pd.DataFrame, scores: np.ndarray,
                 threshold: float) -> pd.DataFrame:
    frame = index[["patient_id", "cell", "sex", "age_band", "bmi_band"]].copy()
    frame["label"] = _labels(index)
    frame["score"] = scores
    # one row per patient (val/test/held-out patients have one image; average if more)
    frame = (frame.groupby("patient_id", sort=True)
             .agg(cell=("cell", "first"), sex=("sex", "first"), age_band=("age_band", "first"),
                  bmi_band=("bmi_band", "first"), label=("label", "max"), score=("score", "mean"))
             .reset_index())
    frame["strategy"] = strategy
    frame["seed"] = seed
    frame["evaluation_set"] = evaluation_set
    frame["threshold"] = threshold
    frame["prediction"] = (frame["score"] >= threshold).astype(np.int64)
    return frame[list(PREDICTION_COLUMNS)]


def _predict_evaluation_sets(name: str, seed: int, model: HFClassifier, real: ImageSet, threshold: float,
                             batch_size: int) -> pd.DataFrame:
    """Per-patient predictions on the real test and held-out images (`PREDICTION_COLUMNS`)."""
    outputs = []
    for evaluation_set in EVALUATION_SETS:
        rows = np.flatnonzero((real.index["split"] == evaluation_set).to_numpy())
        if len(rows) == 0:
            continue
        scores = predict(model, real.frames(rows), batch_size)
        outputs.append(_predictions(name, seed, evaluation_set, real.index.iloc[rows], scores, threshold))
    return pd.concat(outputs, ignore_index=True) if outputs else pd.DataFrame(columns=PREDICTION_COLUMNS)


def run_strategy(name: str, real: ImageSet, synthetic: ImageSet | None, config: ClassifierConfig, seed: int,
                 log: Log = print, synthetic_models: dict | None = None) -> pd.DataFrame:
    """Train one strategy with one seed, choose the threshold on validation, predict test and
    held-out patients. Returns the predictions (`PREDICTION_COLUMNS`); `result.attrs["run"]`
    holds what the run did (model provenance, sizes, best epoch, threshold, alpha, history).

    synthetic_models: a dict shared between the runs of one sweep: `synth_only` leaves its
    model there and `synth_pretrain_real_finetune` of the same seed and synthetic rows starts
    from it instead of repeating that training.
    """
    t0 = time.perf_counter()
    spec = get_strategy(name)
    if _synthetic_mask(real.index).any():
        raise ValueError("the real index holds synthetic rows; pass synthetic images separately")
    synthetic_index = synthetic.index if synthetic is not None else None
    ts = build_training_set(name, real.index, synthetic_index, config, seed)
    short = ts.notes.get("short_cells", {})
    if short:
        wanted = spec.synthetic_multiple * config.synthetic_per_cell
        log(f"[{name} seed {seed}] warning: {len(short)} of 36 cells have fewer than the {wanted} synthetic "
            f"images asked for (fewest: {min(short.values())}, in {min(short, key=short.get)})")

    val_rows = validation_rows(real.index, config, seed)
    val_index = real.index.iloc[val_rows]
    val = (real.frames(val_rows), _labels(val_index), val_index["sex"].to_numpy())
    real_frames = real.frames(ts.real_rows)
    real_labels = _labels(real.index.iloc[ts.real_rows])
    synth_index = synthetic.index.iloc[ts.synthetic_rows] if len(ts.synthetic_rows) else None
    synth_frames = synthetic.frames(ts.synthetic_rows) if synth_index is not None else None
    synth_labels = _labels(synth_index) if synth_index is not None else np.empty(0, np.int64)

    log(f"[{name} seed {seed}] training on {len(real_labels)} real ({int(real_labels.sum())} HF) and "
        f"{len(synth_labels)} synthetic ({int(synth_labels.sum())} HF) images; "
        f"validation {len(val[1])} ({int(val[1].sum())} HF)")
    run: dict = {"strategy": name, "seed": seed, "n_train_real": int(len(real_labels)),
                 "n_train_real_hf": int(real_labels.sum()), "n_train_synthetic": int(len(synth_labels)),
                 "n_train_synthetic_hf": int(synth_labels.sum()), "n_val": int(len(val[1])),
                 "n_val_hf": int(val[1].sum()), "alpha": None, "alpha_scores": None}

    real_part, synth_part = (real_frames, real_labels), (synth_frames, synth_labels)
    stage_log = stage_logs(log, name, seed)
    if spec.scheme == "concat":
        trained = train_concat(real_part, synth_part, val, config, seed, stage_log)
    elif spec.scheme == "pretrain_finetune":
        pretrained = (synthetic_models or {}).get(_synthetic_only_key(seed, ts.synthetic_rows))
        trained = train_pretrain_finetune(real_part, synth_part, val, config, seed, stage_log, pretrained)
    elif spec.scheme == "mix":
        trained = train_mix(real_part, synth_part, synth_index, val, config, seed, stage_log)
    else:  # pragma: no cover - guarded by the strategy table
        raise ValueError(spec.scheme)
    if synthetic_models is not None and not spec.uses_real and spec.scheme == "concat":
        synthetic_models[_synthetic_only_key(seed, ts.synthetic_rows)] = trained

    val_scores = predict(trained.model, val[0], max(config.batch_size, 128))
    threshold = choose_threshold(val_scores, val[1])
    # chance is judged on AUROC: unlike the balanced accuracy it does not depend on the
    # threshold just tuned on these same validation scores
    run["val_auroc"] = auroc(val_scores, val[1])
    # the patients behind the real images this run trained and validated on (leakage check)
    run["train_patients"] = sorted(set(real.index["patient_id"].iloc[ts.real_rows]))
    run["val_patients"] = sorted(set(val_index["patient_id"]))
    predictions = _predict_evaluation_sets(name, seed, trained.model, real, threshold, max(config.batch_size, 128))
    run.update(
        alpha=trained.alpha, alpha_scores=trained.alpha_scores,
        model_description=trained.description, best_epoch=trained.history["best_epoch"],
        val_balanced_accuracy=trained.history["best_val_balanced_accuracy"], threshold=threshold,
        synthetic_per_cell=ts.notes.get("per_cell"), seconds=time.perf_counter() - t0, histories=trained.histories,
    )
    predictions.attrs["run"] = run
    log(f"[{name} seed {seed}] done in {run['seconds']:.1f} s; threshold {threshold:.3f}")
    return predictions


def _synthetic_only_key(seed: int, synthetic_rows: np.ndarray) -> tuple[int, bytes]:
    return seed, np.asarray(synthetic_rows, dtype=np.int64).tobytes()


def run_record(predictions: pd.DataFrame) -> dict:
    """The run description of a `run_strategy` result, flat (nested values as JSON text, so
    a table of runs stores as Parquet), without the per-epoch histories and the patient lists
    (those are in `run_patients`)."""
    run = dict(predictions.attrs.get("run", {}))
    for key in ("histories", "train_patients", "val_patients"):
        run.pop(key, None)
    for key in ("alpha_scores", "synthetic_per_cell"):
        if run.get(key) is not None:
            run[key] = json.dumps(run[key], sort_keys=True)
    return run


def run_patients(predictions: pd.DataFrame) -> pd.DataFrame:
    """The real patients a `run_strategy` result trained and validated on, in the
    `training_patients` format (model `classifier`, run `<strategy> seed <seed>`)."""
    run = predictions.attrs["run"]
    return patient_roles("classifier", classifier_run_name(run["strategy"], run["seed"]),
                         run["train_patients"], run["val_patients"])


def run_strategies(names, real: ImageSet, synthetic: ImageSet | None, config: ClassifierConfig,
                   seeds=None, log: Log = print, store: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every strategy x seed: (all predictions, one row per run from `run_record`, the
    patients every run trained and validated on from `run_patients`).

    store: a folder of finished runs (`run_store`): a run stored there for the same data and
    settings is read instead of trained, and every run trained here is stored as it finishes,
    so a killed sweep resumes at the run it was in. Each run's folder name is in its record
    (`stored_run`); `synth_only` runs keep their model there for `synth_pretrain_real_finetune`,
    which may run in another step (the `classifier_strategy_runs` partitions).
    """
    seeds = list(range(config.n_seeds)) if seeds is None else list(seeds)
    if store is not None:
        real_id, synthetic_id = run_store.data_fingerprint(real), run_store.data_fingerprint(synthetic)
    results = []
    for seed in seeds:
        synthetic_models: dict = {}  # one seed's synth_only model, the pretraining of synth_pretrain_real_finetune
        for name in names:
            uses_synthetic = get_strategy(name).synthetic_multiple > 0
            key = run_store.run_key(name, seed, config, real_id, synthetic_id if uses_synthetic else None) if store is not None else None
            p = run_store.load_run(store, name, seed, key) if store is not None else None
            if p is not None:
                log(f"[{name} seed {seed}] finished before, for the same data and settings: reusing it")
                p.attrs["run"]["reused_stored_run"] = True
            else:
                shares_model = store is not None and name in ("synth_only", "synth_pretrain_real_finetune")
                if shares_model:
                    models_key = _synthetic_only_key(seed, build_training_set("synth_only", real.index, synthetic.index, config, seed).synthetic_rows)
                    only_key = run_store.run_key("synth_only", seed, config, real_id, synthetic_id)
                    if name != "synth_only" and models_key not in synthetic_models:  # synth_only ran in another step
                        stored = run_store.load_trained(store, "synth_only", seed, only_key, config)
                        if stored is not None:
                            synthetic_models[models_key] = stored
                p = run_strategy(name, real, synthetic, config, seed, log, synthetic_models)
                p.attrs["run"]["reused_stored_run"] = False
                if store is not None:
                    p.attrs["run"]["stored_run"] = run_store.folder_name(name, seed, key)
                    keep = synthetic_models.get(models_key) if shares_model and name == "synth_only" else None
                    run_store.save_run(store, name, seed, key, p, trained=keep)
            results.append(p)
    return combine_runs(results)


def combine_runs(results: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """`run_strategy` results as (all predictions, one row per run, the patients of every run)."""
    return (pd.concat(results, ignore_index=True), pd.DataFrame([run_record(p) for p in results]),
            pd.concat([run_patients(p) for p in results], ignore_index=True))
