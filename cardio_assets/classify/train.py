"""Training and inference of the HF classifier: the main paper's recipe, seeded.

- Adam, ReduceLROnPlateau (factor 0.5, patience 3) on validation balanced accuracy;
- augmentation: random horizontal and vertical flips, then Gaussian noise;
- every batch is resized to `config.image_size` inside the model (`HFClassifier`);
- after each epoch the model is scored on validation; the epoch with the best validation
  balanced accuracy is kept and its weights are restored at the end;
- python, numpy and torch are seeded, so one seed gives one result on one machine.

Images are read batch by batch (`Frames.take`), so a memory-mapped array is never loaded
whole.
"""

from __future__ import annotations

import copy
import math
import mmap
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torchvision.transforms.v2.functional import gaussian_blur

from cardio_assets.classify.config import ClassifierConfig
from cardio_assets.classify.model import HFClassifier, build_classifier
from cardio_assets.compute import dtype_name, resolve_device, seed_everything

Log = Callable[[str], None]
EpochBatches = Callable[[np.random.Generator], list[np.ndarray]]


# --------------------------------------------------------------------------- data views


class Frames:
    """Rows of one or more image arrays, read lazily (memmaps stay on disk).

    `Frames([(real_images, rows_a), (synthetic_images, rows_b)])` is the concatenation of
    `real_images[rows_a]` and `synthetic_images[rows_b]`; `take(positions)` reads only the
    requested rows, as float32.
    """

    def __init__(self, parts: Sequence[tuple[np.ndarray, np.ndarray | None]]):
        self.arrays: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        for array, rows in parts:
            if array.ndim != 4 or array.shape[1] != 3:
                raise ValueError(f"images must be (N, 3, H, W), got {array.shape}")
            rows = np.arange(len(array)) if rows is None else np.asarray(rows, dtype=np.int64)
            self.arrays.append(array)
            self.rows.append(rows)
        shapes = {a.shape[2:] for a in self.arrays}
        if len(shapes) > 1:
            raise ValueError(f"all image arrays must share H x W, got {sorted(shapes)}")
        self.offsets = np.cumsum([0] + [len(r) for r in self.rows])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.arrays[0].shape[1:]) if self.arrays else (3, 0, 0)

    def subset(self, positions: Iterable[int]) -> "Frames":
        """A lazy view of the given positions, in the given order."""
        positions = np.asarray(positions, dtype=np.int64)
        if not self.arrays:
            return self
        part_of = np.searchsorted(self.offsets, positions, side="right") - 1
        parts = []
        start = 0
        while start < len(positions):  # consecutive runs of one part stay one part
            stop = start
            while stop < len(positions) and part_of[stop] == part_of[start]:
                stop += 1
            p = part_of[start]
            parts.append((self.arrays[p], self.rows[p][positions[start:stop] - self.offsets[p]]))
            start = stop
        return Frames(parts) if parts else Frames([(self.arrays[0], np.empty(0, dtype=np.int64))])

    def take(self, positions: Iterable[int]) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions),) + self.image_shape, dtype=np.float32)
        part_of = np.searchsorted(self.offsets, positions, side="right") - 1
        for part in np.unique(part_of):
            where = np.flatnonzero(part_of == part)
            rows = self.rows[part][positions[where] - self.offsets[part]]
            order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memmap
            out[where[order]] = self.arrays[part][rows[order]]
        return out

    def __getstate__(self) -> dict:
        # a memory-mapped file travels by name, not by content: a spawned process (data-parallel
        # training) reopens it instead of receiving every image through a pipe
        return {"parts": [(_portable(array), rows) for array, rows in zip(self.arrays, self.rows)]}

    def __setstate__(self, state: dict) -> None:
        self.__init__([(_reopen(array), rows) for array, rows in state["parts"]])


def _portable(array: np.ndarray):
    """A whole memory-mapped .npy file (np.load's mmap_mode) as its file name; anything else as is."""
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and str(array.filename or "").endswith(".npy"):
        return ("npy-memmap", str(array.filename), array.mode)
    return array


def _reopen(array):
    if isinstance(array, tuple) and array[0] == "npy-memmap":
        return np.load(array[1], mmap_mode=array[2])
    return array


def as_frames(images) -> Frames:
    return images if isinstance(images, Frames) else Frames([(images, None)])


def per_image(images, *functions: Callable[[np.ndarray], Sequence], chunk: int = 1024) -> list[list]:
    """Each function's outputs for every image of an array, memmap or lazy `Frames`, in order: the
    images are read once, `chunk` at a time as float32, and every function sees each chunk (one
    output per image). None or no images: empty lists."""
    outputs: list[list] = [[] for _ in functions]
    if images is None or not len(images):
        return outputs
    frames = as_frames(images)
    for start in range(0, len(frames), chunk):
        batch = np.asarray(frames.take(np.arange(start, min(len(frames), start + chunk))), dtype=np.float32)
        for out, function in zip(outputs, functions):
            out.extend(function(batch))
    return outputs


# --------------------------------------------------------------------------- sampling


def undersample_healthy(index: pd.DataFrame, hf_fraction: float, seed: int) -> pd.DataFrame:
    """Keep every HF patient and a seeded random subset of healthy patients so that HF
    patients make up `hf_fraction` of the patients kept (all images of a kept patient
    stay). If HF already makes up at least that share, nothing is dropped.
    Returns the kept rows of `index` (its own labels kept, order kept).
    """
    if not 0.0 < hf_fraction < 1.0:
        raise ValueError(f"hf_fraction must lie in (0, 1), got {hf_fraction}")
    is_hf = index.groupby("patient_id", sort=True)["diagnosis"].agg(lambda d: bool((d == "hf").any()))
    hf_ids = is_hf.index[is_hf.to_numpy()]
    healthy_ids = is_hf.index[~is_hf.to_numpy()]
    n_keep = int(round(len(hf_ids) * (1.0 - hf_fraction) / hf_fraction))
    if len(hf_ids) == 0 or n_keep >= len(healthy_ids):
        return index
    rng = np.random.default_rng(seed)
    kept_healthy = healthy_ids[rng.permutation(len(healthy_ids))[:n_keep]]
    keep = set(hf_ids) | set(kept_healthy)
    return index[index["patient_id"].isin(keep)]


def shuffled_batches(n: int, batch_size: int) -> EpochBatches:
    """One pass over n items in random order; a last batch of one is dropped (BatchNorm)."""

    def make(rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(n)
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        return [b for b in batches if len(b) >= 2]

    return make


# --------------------------------------------------------------------------- helpers


def augment(x: torch.Tensor, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, random vertical flip (each p=0.5 per image), Gaussian noise."""
    n = x.shape[0]
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip_h.view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(flip_v.view(-1, 1, 1, 1), x.flip(-2), x)
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, generator=generator)
    return x.clamp_(0.0, 1.0)


def texture_jitter(x: torch.Tensor, generator: torch.Generator, max_blur_sigma: float = 1.0, gain: float = 0.1,
                   offset: float = 0.05) -> torch.Tensor:
    """Per image: Gaussian blur of a random sigma in [0, max_blur_sigma] (half the images), then a
    random gain in [1 - gain, 1 + gain] about the image's mean and a shift in [-offset, offset].

    For models that must read anatomy rather than texture: a synthetic frame is a little smoother
    than a real one (the VAE does not reproduce the acquisition's noise), and a predictor trained on
    real frames alone read a blur of 0.5 pixel as male (p(female) of real female frames 0.65 -> 0.53).
    """
    n = x.shape[0]
    sigma = torch.rand(n, generator=generator) * max_blur_sigma * (torch.rand(n, generator=generator) < 0.5)
    kernel = 2 * math.ceil(2.5 * max_blur_sigma) + 1
    blurred = [gaussian_blur(image, kernel_size=kernel, sigma=float(s)) if s > 0.05 else image for image, s in zip(x, sigma)]
    x = torch.stack(blurred)
    g = 1.0 + gain * (2.0 * torch.rand(n, 1, 1, 1, generator=generator) - 1.0)
    b = offset * (2.0 * torch.rand(n, 1, 1, 1, generator=generator) - 1.0)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * g + mean + b).clamp_(0.0, 1.0)


def balanced_accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """scikit-learn's balanced accuracy of `score >= threshold`; NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(balanced_accuracy_score(labels, np.asarray(scores) >= threshold))


def choose_threshold(val_scores: np.ndarray, val_labels: np.ndarray) -> float:
    """The decision threshold that maximises balanced accuracy on validation.

    Candidates are the midpoints between consecutive distinct validation scores (plus one
    below the lowest and one above the highest), predictions are `score >= threshold`.
    Among tied best candidates the median one is taken, which keeps the threshold in the
    middle of a flat optimum rather than on its edge. Maximising balanced accuracy is
    maximising Youden's J = TPR - FPR. Without both classes in validation: 0.5.
    """
    scores = np.asarray(val_scores, dtype=np.float64)
    labels = np.asarray(val_labels).astype(bool)
    if len(scores) == 0 or labels.all() or not labels.any():
        return 0.5
    distinct = np.unique(scores)
    mids = (distinct[:-1] + distinct[1:]) / 2.0
    candidates = np.concatenate([[distinct[0] - 1e-6], mids, [distinct[-1] + 1e-6]])
    # TPR(t) and TNR(t) for all candidates by sorting, not a loop
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    tpr = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)
    tnr = np.searchsorted(neg, candidates, side="left") / len(neg)
    ba = 0.5 * (tpr + tnr)
    best = np.flatnonzero(ba >= ba.max() - 1e-12)
    return float(candidates[best[len(best) // 2]])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def _read_batches(frames: Frames, batches: list[np.ndarray], pool: ThreadPoolExecutor | None, depth: int):
    """Yield the images of each batch; with a pool, up to 2 x depth batches are read ahead."""
    if pool is None:
        for positions in batches:
            yield frames.take(positions)
        return
    ahead = max(1, 2 * depth)
    pending = [pool.submit(frames.take, b) for b in batches[:ahead]]
    for i in range(len(batches)):
        if i + ahead < len(batches):
            pending.append(pool.submit(frames.take, batches[i + ahead]))
        yield pending[i].result()
        pending[i] = None


# --------------------------------------------------------------------------- inference


@torch.no_grad()
def predict(model: HFClassifier, images, batch_size: int = 128, device: torch.device | str | None = None) -> np.ndarray:
    """P(HF) for every image, in order (softmax of the two logits, class 1 = HF)."""
    frames = as_frames(images)
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty(len(frames), dtype=np.float64)
    for start in range(0, len(frames), batch_size):
        positions = np.arange(start, min(start + batch_size, len(frames)))
        x = torch.from_numpy(frames.take(positions)).to(device)
        out[positions] = torch.softmax(model(x).float(), dim=1)[:, 1].cpu().numpy()
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- training

HISTORY_KEYS = (
    "epoch", "train_loss", "val_loss", "val_balanced_accuracy", "val_balanced_accuracy_at_0.5", "val_auroc",
    "val_worst_group_balanced_accuracy", "threshold", "lr", "seconds",
)


def train_classifier(
    train: tuple,
    val: tuple,
    config: ClassifierConfig,
    seed: int,
    init_state: dict | None = None,
    log: Log = print,
    *,
    epoch_batches: EpochBatches | None = None,
    lr: float | None = None,
    init_description: str | None = None,
) -> tuple[HFClassifier, dict]:
    """Train a ResNet-18 HF classifier; return it at its best validation epoch, and a history.

    train: (images, labels): images (N, 3, H, W) in [0, 1] (array, memmap or `Frames`),
        labels 0/1 (1 = HF).
    val: (images, labels, groups): groups (one label per image, or None) only feed the
        history's worst-group validation balanced accuracy.
    init_state: a state_dict of an `HFClassifier` to start from (synthetic pretraining);
        otherwise ResNet-18 from `config.pretrained_weights` or random init.
    epoch_batches: a function rng -> list of position arrays into the training images, one
        epoch (default: a shuffled pass). The real/synthetic mixing strategy uses it.
    lr: overrides config.lr (fine-tuning).
    """
    previous_threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        return _train(train, val, config, seed, init_state, log, epoch_batches, lr, init_description)
    finally:
        if config.torch_threads:
            torch.set_num_threads(previous_threads)


def _training_data(train: tuple) -> tuple[Frames, np.ndarray]:
    images, labels = train
    frames = as_frames(images)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(frames):
        raise ValueError(f"{len(frames)} training images but {len(labels)} labels")
    if len(frames) < 2:
        raise ValueError("need at least two training images")
    return frames, labels


def _initial_model(config: ClassifierConfig, init_state: dict | None, init_description: str | None) -> HFClassifier:
    if init_state is None:
        return build_classifier(config.image_size, config.pretrained_weights, compute_dtype=config.compute_dtype())
    model = build_classifier(config.image_size, None, compute_dtype=config.compute_dtype())
    model.load_state_dict(init_state)
    model.description = init_description or "initialised from a given state"
    return model


def train_one_epoch(model: HFClassifier, optimizer, frames: Frames, labels: np.ndarray, batches: list[np.ndarray],
                    pool: ThreadPoolExecutor | None, generator: torch.Generator, config: ClassifierConfig,
                    device) -> list[float]:
    """One optimiser step per batch; returns the training loss of every step."""
    model.train()
    losses = []
    for positions, batch in zip(batches, _read_batches(frames, batches, pool, config.workers)):
        x = augment(torch.from_numpy(batch), config.noise_std, generator).to(device)
        y = torch.from_numpy(labels[positions]).to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def evaluate(model: HFClassifier, images, labels: np.ndarray, groups, batch_size: int, device) -> dict:
    """Validation loss and metrics; the threshold is the one these same scores make best."""
    scores = predict(model, images, batch_size, device)
    eps = 1e-7
    loss = float(-np.mean(labels * np.log(scores + eps) + (1 - labels) * np.log(1 - scores + eps)))
    threshold = choose_threshold(scores, labels)
    worst = float("nan")
    if groups is not None:
        groups = np.asarray(groups)
        per_group = [balanced_accuracy_at(scores[groups == g], labels[groups == g], threshold)
                     for g in np.unique(groups)]
        finite = [v for v in per_group if np.isfinite(v)]
        worst = float(min(finite)) if finite else float("nan")
    return {
        "val_loss": loss,
        "val_balanced_accuracy": balanced_accuracy_at(scores, labels, threshold),
        "val_balanced_accuracy_at_0.5": balanced_accuracy_at(scores, labels, 0.5),
        "val_auroc": auroc(scores, labels),
        "val_worst_group_balanced_accuracy": worst,
        "threshold": threshold,
    }


def _train(train, val, config: ClassifierConfig, seed: int, init_state, log: Log, epoch_batches, lr,
           init_description) -> tuple[HFClassifier, dict]:
    t_start = time.perf_counter()
    seed_everything(seed, deterministic_cudnn=True)
    device = resolve_device(config.device or "auto")

    frames, train_labels = _training_data(train)
    val_images, val_labels, val_groups = (tuple(val) + (None,))[:3]
    val_labels = np.asarray(val_labels, dtype=np.int64)

    model = _initial_model(config, init_state, init_description)
    model.to(device)
    learning_rate = config.lr if lr is None else lr
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
    )
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    make_batches = epoch_batches or shuffled_batches(len(frames), config.batch_size)

    history: dict = {key: [] for key in HISTORY_KEYS}
    best_key, best_state, best_epoch = None, None, -1
    pool = ThreadPoolExecutor(max_workers=config.workers) if config.workers > 0 else None
    try:
        for epoch in range(config.epochs):
            t_epoch = time.perf_counter()
            losses = train_one_epoch(model, optimizer, frames, train_labels, make_batches(rng), pool, generator,
                                     config, device)
            metrics = evaluate(model, val_images, val_labels, val_groups, max(config.batch_size, 128), device)
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), **metrics,
                   "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t_epoch}
            for key in HISTORY_KEYS:
                history[key].append(row[key])

            # a validation set without both classes has no balanced accuracy: fall back on its loss
            ba, val_loss = metrics["val_balanced_accuracy"], metrics["val_loss"]
            scheduler.step(ba if np.isfinite(ba) else -val_loss)
            key = (ba if np.isfinite(ba) else -np.inf, -val_loss)
            if best_key is None or key > best_key:
                best_key, best_epoch = key, epoch
                best_state = copy.deepcopy(model.state_dict())
            log(
                f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, "
                f"val loss {val_loss:.4f}, val balanced accuracy {ba:.3f} (threshold {row['threshold']:.3f}), "
                f"val AUROC {row['val_auroc']:.3f}, lr {row['lr']:.2e}, {row['seconds']:.1f} s"
            )
    finally:
        if pool is not None:
            pool.shutdown(wait=True)

    model.load_state_dict(best_state)
    model.eval()
    history.update(
        best_epoch=best_epoch,
        best_val_balanced_accuracy=history["val_balanced_accuracy"][best_epoch],
        best_threshold=history["threshold"][best_epoch],
        n_train=len(frames),
        n_train_hf=int(train_labels.sum()),
        n_val=len(val_labels),
        n_val_hf=int(val_labels.sum()),
        seed=seed,
        lr_start=learning_rate,
        model_description=model.description,
        device=str(device),
        compute_dtype=dtype_name(model.compute_dtype),
        seconds=time.perf_counter() - t_start,
    )
    log(f"best epoch {best_epoch + 1} (val balanced accuracy {history['best_val_balanced_accuracy']:.3f}), "
        f"{history['seconds']:.1f} s in all")
    return model, history
