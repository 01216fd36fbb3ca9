"""The three ways a strategy trains its model (`Strategy.scheme` in `strategies`).

- `concat`: one training on the real and synthetic images together;
- `pretrain_finetune`: train on the synthetic images, then fine-tune those weights on the
  real ones at `config.finetune_lr` (RoentGen-v2);
- `mix`: every batch mixes real images (share alpha) and synthetic ones (`mixed_batches`),
  one training per alpha of `config.alpha_grid`, the best on validation kept (Ktena et al.).

Each takes the real and the synthetic training images as (frames, labels) pairs and the
validation tuple of `train_classifier`, and returns a `TrainedModel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from cardio_assets.classify.config import ClassifierConfig
from cardio_assets.classify.model import HFClassifier
from cardio_assets.classify.train import EpochBatches, Frames, Log, train_classifier

StageLog = Callable[[str], Log]  # stage name ("" for none) -> a log that prefixes it


def mixed_batches(n_real: int, synthetic_labels: np.ndarray, synthetic_cells: np.ndarray, alpha: float,
                  batch_size: int, hf_fraction: float) -> EpochBatches:
    """Batches over [real 0..n_real) + [synthetic n_real..): round(alpha * batch) real images
    (a shuffled pass, continued across batches) and the rest synthetic, drawn with replacement
    with weights uniform over cells within a label and HF at `hf_fraction` (Ktena et al.)."""
    n_synth = len(synthetic_labels)
    k_real = min(batch_size, max(0, int(round(alpha * batch_size))))
    if n_synth == 0:
        k_real = batch_size
    k_synth = batch_size - k_real
    weights = np.zeros(n_synth)
    if n_synth:
        labels = np.asarray(synthetic_labels)
        cells = pd.Series(np.asarray(synthetic_cells))
        cell_size = cells.map(cells.value_counts()).to_numpy()
        for label, share in ((1, hf_fraction), (0, 1.0 - hf_fraction)):
            mine = labels == label
            if mine.any():
                n_cells = len(np.unique(cells[mine]))
                weights[mine] = share / n_cells / cell_size[mine]
        weights /= weights.sum()
    n_steps = max(1, math.ceil(n_real / batch_size))

    def make(rng: np.random.Generator) -> list[np.ndarray]:
        real_stream = rng.permutation(n_real) if n_real else np.empty(0, np.int64)
        batches, cursor = [], 0
        for _ in range(n_steps):
            real_part = np.empty(0, np.int64)
            if k_real and n_real:
                take = (np.arange(cursor, cursor + k_real)) % n_real
                real_part = real_stream[take]
                cursor += k_real
            synth_part = n_real + rng.choice(n_synth, size=k_synth, p=weights) if k_synth else np.empty(0, np.int64)
            batch = np.concatenate([real_part, synth_part]).astype(np.int64)
            if len(batch) >= 2:
                batches.append(batch)
        return batches

    return make


@dataclass
class TrainedModel:
    """The model a strategy keeps, and what its training did."""

    model: HFClassifier
    history: dict  # the kept model's training history
    histories: dict  # every training run's history, by stage
    description: str
    alpha: float | None = None
    alpha_scores: dict | None = None


def stage_logs(log: Log, name: str, seed: int) -> StageLog:
    """Logs that prefix each message with the strategy, the seed and the stage."""

    def for_stage(stage: str) -> Log:
        prefix = f"[{name} seed {seed}{' ' + stage if stage else ''}]"
        return lambda msg: log(f"{prefix} {msg}")

    return for_stage


def train_concat(real: tuple, synth: tuple, val: tuple, config: ClassifierConfig, seed: int, stage_log: StageLog) -> TrainedModel:
    """One training on the real and synthetic images together (either may be empty)."""
    real_frames, real_labels = real
    synth_frames, synth_labels = synth
    parts = [f for f in (real_frames if len(real_labels) else None, synth_frames) if f is not None]
    frames = Frames([p for f in parts for p in zip(f.arrays, f.rows)])
    labels = np.concatenate([real_labels, synth_labels])
    model, history = train_classifier((frames, labels), val, config, seed, log=stage_log(""))
    return TrainedModel(model, history, {"train": history}, history["model_description"])


def train_pretrain_finetune(real: tuple, synth: tuple, val: tuple, config: ClassifierConfig, seed: int,
                            stage_log: StageLog, pretrained: TrainedModel | None = None) -> TrainedModel:
    """Train on the synthetic images, then fine-tune those weights on the real ones.

    `pretrained`: the model a synthetic-only training on these same images, config and seed
    already made (strategy `synth_only`); the pretraining stage would repeat it exactly.
    """
    if pretrained is None:
        pre_model, pre_history = train_classifier(synth, val, config, seed, log=stage_log("pretrain"))
    else:
        pre_model, pre_history = pretrained.model, pretrained.history
        stage_log("pretrain")("the synth_only model of this seed, trained on the same images (not trained again)")
    init_state = {k: v.detach().clone() for k, v in pre_model.state_dict().items()}
    description = f"synthetic pretraining from {pre_history['model_description']}, then real fine-tuning"
    model, history = train_classifier(real, val, config, seed, init_state=init_state, log=stage_log("finetune"),
                                      lr=config.finetune_lr, init_description=description)
    return TrainedModel(model, history, {"pretrain": pre_history, "finetune": history}, description)


def train_mix(real: tuple, synth: tuple, synth_index: pd.DataFrame | None, val: tuple, config: ClassifierConfig,
               seed: int, stage_log: StageLog) -> TrainedModel:
    """One training per alpha of the grid, batches mixing real and synthetic; the alpha with
    the best validation balanced accuracy is kept (the first on a tie)."""
    real_frames, real_labels = real
    synth_frames, synth_labels = synth
    frames = Frames([p for f in (real_frames, synth_frames) for p in zip(f.arrays, f.rows)])
    labels = np.concatenate([real_labels, synth_labels])
    best = None
    scores = {}
    histories = {}
    for alpha in config.alpha_grid:
        batches = mixed_batches(len(real_labels), synth_labels, synth_index["cell"].to_numpy(), alpha,
                                config.batch_size, config.hf_train_fraction)
        m, h = train_classifier((frames, labels), val, config, seed, log=stage_log(f"alpha={alpha:g}"),
                                epoch_batches=batches)
        scores[alpha] = float(h["best_val_balanced_accuracy"])
        histories[f"alpha={alpha:g}"] = h
        key = scores[alpha] if np.isfinite(scores[alpha]) else -np.inf
        if best is None or key > best[0]:
            best = (key, alpha, m, h)
    _, alpha, model, history = best
    stage_log("")(f"alpha {alpha:g} chosen on validation balanced accuracy {scores}")
    return TrainedModel(model, history, histories, history["model_description"], alpha,
                        {f"{a:g}": s for a, s in scores.items()})
