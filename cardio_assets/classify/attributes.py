"""Attribute predictors: one ResNet-18 with a head per attribute (sex, age band, BMI band, HF).

Trained on real training frames; used (1) by quality control to check that a synthetic
image agrees with its prompt (RoentGen-v2), for the attributes it predicts well enough on
real validation frames to be trusted, and (2) as the FID feature extractor when no
InceptionV3 weights are configured (its penultimate layer knows cardiac images).

A predictor is trusted when its validation balanced accuracy is at least halfway between
chance and perfect: 0.75 for two classes, 0.67 for three.

Its QC floors are calibrated on real frames, as the mask checks are: for each class, the
`QC_FLOOR_QUANTILE` of the probability the predictor gives that class on real validation frames
of it. A synthetic image fails a trusted attribute when its prompted class gets less than that:
it looks less like its prompt than 98% of real images of the class. (Asking for the top class
instead would reject a third of real frames where a predictor is right two times in three.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.metrics import balanced_accuracy_score

from cardio_assets.classify.model import HFClassifier, build_classifier
from cardio_assets.classify.train import Frames, augment, texture_jitter
from cardio_assets.cohort.cells import AGE_BANDS, BMI_BANDS, DIAGNOSES, SEXES
from cardio_assets.compute import dtype_name, resolve_dtype, seed_everything

ATTRIBUTES: dict[str, tuple[str, ...]] = {"sex": SEXES, "age_band": AGE_BANDS, "bmi_band": BMI_BANDS, "diagnosis": DIAGNOSES}
QC_ATTRIBUTES = ("sex", "age_band", "bmi_band")  # the diagnosis is what the classifiers learn: not a QC gate
QC_FLOOR_QUANTILE = 0.02  # as the mask checks' calibration (generation/qc.py calibrate_thresholds)
MIN_FRAMES_FOR_FLOOR = 10  # fewer real validation frames of a class: no floor, that class is not checked


def trust_threshold(n_classes: int) -> float:
    return 0.5 * (1.0 + 1.0 / n_classes)


@dataclass
class AttributePredictor:
    model: HFClassifier
    validation: dict[str, float]  # balanced accuracy per attribute on real validation frames
    # QC floors: {attribute: {class: probability}} from real validation frames (module docstring)
    floors: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def trusted(self) -> set[str]:
        return {a for a in QC_ATTRIBUTES if self.validation.get(a, 0.0) >= trust_threshold(len(ATTRIBUTES[a]))}

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 256) -> list[dict[str, str]]:
        self.model.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[start : start + batch_size], dtype=np.float32))
            logits = _split(self.model(x))
            picks = {a: logits[a].argmax(1).tolist() for a in ATTRIBUTES}
            out += [{a: ATTRIBUTES[a][picks[a][i]] for a in ATTRIBUTES} for i in range(len(x))]
        return out

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, batch_size: int = 256) -> list[dict[str, dict[str, float]]]:
        """Per image, {attribute: {class: probability}} (softmax of each head)."""
        self.model.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[start : start + batch_size], dtype=np.float32))
            probs = {a: F.softmax(logits, dim=1).numpy() for a, logits in _split(self.model(x)).items()}
            out += [{a: dict(zip(ATTRIBUTES[a], map(float, probs[a][i]))) for a in ATTRIBUTES} for i in range(len(x))]
        return out

    def qc_floors(self) -> dict[str, dict[str, float]]:
        """The floors of the trusted attributes: what QC checks."""
        return {a: self.floors[a] for a in sorted(self.trusted) if self.floors.get(a)}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "predictor.json").write_text(json.dumps({
            "image_size": self.model.preprocess.image_size,
            "validation_balanced_accuracy": self.validation, "trusted": sorted(self.trusted),
            "qc_floors": self.floors, "qc_floor_quantile": QC_FLOOR_QUANTILE,
            "init": self.model.description,
            "compute_dtype": dtype_name(self.model.compute_dtype),
        }, indent=2))

    @classmethod
    def load(cls, folder: Path, image_size: int) -> "AttributePredictor":
        meta = json.loads((folder / "predictor.json").read_text())
        # features and QC probabilities as the predictor computed them when it was calibrated
        compute_dtype = resolve_dtype(meta.get("compute_dtype", "float32"))
        model = build_classifier(image_size, None, num_classes=_n_outputs(), compute_dtype=compute_dtype)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        if "qc_floors" not in meta:  # saved before the floors existed: QC would silently check no attribute
            raise ValueError(f"{folder / 'predictor.json'} has no qc_floors (saved by an older version): materialize attribute_predictors again")
        return cls(model.eval(), meta["validation_balanced_accuracy"], meta["qc_floors"])


def _n_outputs() -> int:
    return sum(len(v) for v in ATTRIBUTES.values())


def _split(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    parts = torch.split(logits, [len(v) for v in ATTRIBUTES.values()], dim=1)
    return dict(zip(ATTRIBUTES, parts))


def _targets(index: pd.DataFrame) -> dict[str, torch.Tensor]:
    # torch.tensor copies: pandas hands out read-only arrays under copy-on-write, which torch.as_tensor warns about
    return {a: torch.tensor(index[a].map({v: i for i, v in enumerate(vals)}).to_numpy(), dtype=torch.long) for a, vals in ATTRIBUTES.items()}


def train_attribute_predictor(
    train_images: Frames, train_index: pd.DataFrame, val_images: Frames, val_index: pd.DataFrame,
    image_size: int, epochs: int, seed: int, pretrained_weights: str | None = None,
    batch_size: int = 64, lr: float = 1e-3, schedule: str = "constant", log=print,
    compute_dtype: torch.dtype = torch.float32, texture_blur: float = 0.0,
) -> AttributePredictor:
    """Multi-head ResNet-18; class-weighted cross-entropy per head (HF and some bands are rare).

    schedule: "constant" (Adam at `lr`) or "onecycle" (AdamW, warm-up to `lr` over the first
    30% of steps, then cosine annealing to zero: few epochs of a network trained from scratch
    converge further). texture_blur > 0: `train.texture_jitter` with that largest blur sigma before
    the flips and noise, so the heads read anatomy, not how sharp or bright a frame is.
    """
    if schedule not in ("constant", "onecycle"):
        raise ValueError(f"schedule must be constant or onecycle, not {schedule!r}")
    seed_everything(seed, deterministic_cudnn=True)
    model = build_classifier(image_size, pretrained_weights or None, num_classes=_n_outputs(), compute_dtype=compute_dtype)
    targets = _targets(train_index)
    weights = {a: _class_weights(t, len(ATTRIBUTES[a])) for a, t in targets.items()}
    generator = torch.Generator().manual_seed(seed)
    n = len(train_images)
    steps_per_epoch = len(range(0, n - 1, batch_size))
    if schedule == "onecycle":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.3)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = None
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n - 1, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            x = torch.as_tensor(train_images.take(idx.numpy()))
            if texture_blur > 0:
                x = texture_jitter(x.float(), generator, max_blur_sigma=texture_blur)
            x = augment(x, 0.02, generator)
            logits = _split(model(x))
            loss = sum(F.cross_entropy(logits[a], targets[a][idx], weight=weights[a]) for a in ATTRIBUTES)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(idx)
        log(f"attribute predictors: epoch {epoch + 1}/{epochs}, loss {total / n:.3f}")
    predictor = AttributePredictor(model.eval(), {})
    val = val_images.take(np.arange(len(val_images)))
    predicted = predictor.predict(val)
    for a in ATTRIBUTES:
        truth = val_index[a].to_numpy()
        guess = np.array([p[a] for p in predicted])
        predictor.validation[a] = float(balanced_accuracy_score(truth, guess)) if len(set(truth)) > 1 else float("nan")
    predictor.floors = qc_floors(predictor.probabilities(val), val_index)
    log(f"attribute predictors: validation balanced accuracy {predictor.validation}; trusted for QC: {sorted(predictor.trusted)}; "
        f"QC floors {predictor.qc_floors()}")
    return predictor


def qc_floors(probabilities: list[dict[str, dict[str, float]]], index: pd.DataFrame,
              quantile: float = QC_FLOOR_QUANTILE) -> dict[str, dict[str, float]]:
    """{attribute: {class: the `quantile` of p(class) over the real frames of that class}} (QC attributes;
    classes with fewer than `MIN_FRAMES_FOR_FLOOR` frames get none)."""
    floors: dict[str, dict[str, float]] = {}
    for a in QC_ATTRIBUTES:
        truth = index[a].to_numpy()
        for value in ATTRIBUTES[a]:
            own = [p[a][value] for p, t in zip(probabilities, truth) if t == value]
            if len(own) >= MIN_FRAMES_FOR_FLOOR:
                floors.setdefault(a, {})[value] = float(np.quantile(own, quantile))
    return floors


def _class_weights(targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    counts = torch.bincount(targets, minlength=n_classes).float().clamp(min=1)
    return counts.sum() / (n_classes * counts)
