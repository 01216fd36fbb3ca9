"""Realism of the synthetic frames: FID and KID per subgroup (the paper's Table 1), and the
diversity of images made from one prompt and one mask.

FID and KID are computed by torch-fidelity's functions on features its extractor computes from
uint8 (3, H, W) tensors, each image's features once per report (`FeatureBank`). The feature
extractor is either
- torch-fidelity's InceptionV3 from a local weights file (`inception_extractor(path)`;
  nothing is downloaded), or
- any torch module registered with torch-fidelity (`module_extractor(module, description)`),
  e.g. the penultimate layer of a ResNet-18 trained by this package on real frames
  (`classifier_extractor`). Such FIDs are comparable with each other, not with published
  Inception FIDs; every report names the extractor.

Each comparison draws n images from each side (equal n; n = min(asked, available)), without
replacement, and is repeated `repeats` times with fresh draws: mean (std) over repeats.
For a real subgroup against itself ("Male - Male", the lower bound) the subgroup's patients
are split at random into two disjoint halves at every repeat. Against synthetic images, the
synthetic side is drawn with the real side's mix of the other three attributes
(`matching_weights`): the synthetic set is balanced over the 36 cells while the real one
follows the cohort, and FID would otherwise measure that difference of mix. KID uses subsets of size
min(1000, n).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset, resolve_feature_layer_for_metric

from cardio_assets.classify.train import Frames, as_frames
from cardio_assets.cohort.cells import AGE_BAND_LABELS, BMI_BAND_LABELS, SEX_LABELS

# --------------------------------------------------------------------------- datasets


class UInt8Frames(Dataset):
    """Rows of an image array (float [0, 1], (N, 3, H, W), memmap welcome) as uint8 tensors."""

    def __init__(self, images, positions=None):
        self.frames: Frames = as_frames(images)
        self.positions = np.arange(len(self.frames)) if positions is None else np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.frames.take([self.positions[i]])[0]
        return torch.from_numpy(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))


# --------------------------------------------------------------------------- feature extractors


@dataclass(frozen=True)
class FeatureExtractor:
    """A torch-fidelity feature extractor by registry name, and how reports describe it."""

    name: str
    description: str
    weights_path: str | None = None
    options: dict = field(default_factory=dict)

    def kwargs(self) -> dict:
        out = {"feature_extractor": self.name, **self.options}
        if self.weights_path is not None:
            out["feature_extractor_weights_path"] = self.weights_path
        return out


def inception_extractor(weights_path: str | Path) -> FeatureExtractor:
    """torch-fidelity's InceptionV3 (the standard FID network) from a local weights file
    (torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`)."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"InceptionV3 weights file for FID not found: {path}")
    return FeatureExtractor("inception-v3-compat", f"InceptionV3 (torch-fidelity FID network), weights from {path}",
                            weights_path=str(path))


_MODULES: dict[str, nn.Module] = {}


class ModuleFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of a torch module mapping float images in [0, 1]
    (N, 3, H, W) to features (N, D); the module is looked up by the registered name."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        if name not in _MODULES:
            raise KeyError(f"no module registered as feature extractor {name!r}")
        self.module = _MODULES[name]

    def forward(self, x: torch.Tensor):
        features = self.module(x.float() / 255.0)
        return (torch.flatten(features, 1).to(torch.float32),)

    @staticmethod
    def get_provided_features_list():
        return ("features",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "features"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return (torch.rand([1, 3, 32, 32]) * 255).to(torch.uint8)


def module_extractor(module: nn.Module, description: str, name: str | None = None) -> FeatureExtractor:
    """Register `module` (float [0, 1] images -> features) with torch-fidelity; a copy is
    kept, so the caller's module is not changed. The name defaults to one derived from the
    description; registering a name again replaces its module."""
    if name is None:
        slug = re.sub(r"[^a-z0-9]+", "-", description.lower()).strip("-")[:40] or "module"
        name = f"cardio-{slug}-{hashlib.blake2b(description.encode(), digest_size=4).hexdigest()}"
    _MODULES[name] = copy.deepcopy(module).eval().requires_grad_(False)
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(name, ModuleFeatureExtractor)
    elif FEATURE_EXTRACTORS_REGISTRY[name] is not ModuleFeatureExtractor:
        raise ValueError(f"feature extractor name {name!r} is taken by torch-fidelity")
    return FeatureExtractor(name, description)


def classifier_extractor(classifier, description: str | None = None) -> FeatureExtractor:
    """The 512-d penultimate layer of an `HFClassifier` trained on real frames."""
    from cardio_assets.classify.model import PenultimateFeatures

    description = description or (
        f"penultimate layer (512-d) of a ResNet-18 HF classifier trained on real frames "
        f"({getattr(classifier, 'description', '')})"
    )
    return module_extractor(PenultimateFeatures(classifier), description)


# --------------------------------------------------------------------------- FID / KID


class FeatureBank:
    """Features of an image set's rows by one extractor, each row pushed through the network once.

    Table 1 and the extractor checks draw overlapping subsets of the same frames dozens of times
    (24 comparisons x repeats); handing each draw to `torch_fidelity.calculate_metrics` would
    extract every drawn image again (two thirds of the realism report's time on the demo). The
    features come from torch-fidelity's own extractor and batching (`create_feature_extractor`,
    `get_featuresdict_from_dataset`) and go to its own FID and KID functions, so the values are
    the ones `calculate_metrics` gives, up to the floating-point effect of batching rows otherwise.
    `subset(positions)` is a view that shares the cache.
    """

    def __init__(self, images, extractor: FeatureExtractor, batch_size: int = 64, cuda: bool | None = None):
        self._store = _FeatureStore(as_frames(images), extractor, batch_size,
                                    torch.cuda.is_available() if cuda is None else cuda)
        self._rows = np.arange(len(self._store.frames))

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def extracted(self) -> int:
        """Rows pushed through the network so far (over all views of this bank)."""
        return int(self._store.done.sum())

    def subset(self, positions) -> "FeatureBank":
        view = copy.copy(self)
        view._rows = self._rows[np.asarray(positions, dtype=np.int64)]
        return view

    def features(self, positions) -> torch.Tensor:
        """(len(positions), D) float32 features of these rows, extracting those not seen yet."""
        return torch.from_numpy(self._store.features(self._rows[np.asarray(positions, dtype=np.int64)]))


class _FeatureStore:
    def __init__(self, frames: Frames, extractor: FeatureExtractor, batch_size: int, cuda: bool):
        self.frames, self.extractor, self.batch_size, self.cuda = frames, extractor, batch_size, cuda
        self.done = np.zeros(len(frames), dtype=bool)
        self.values: np.ndarray | None = None
        self._network = self._layer = None

    def features(self, rows: np.ndarray) -> np.ndarray:
        missing = np.unique(rows[~self.done[rows]])
        if len(missing):
            new = self._extract(missing)
            if self.values is None:  # zero pages cost nothing until written: only drawn rows take memory
                self.values = np.zeros((len(self.frames), new.shape[1]), dtype=np.float32)
            self.values[missing] = new
            self.done[missing] = True
        return self.values[rows]

    def _extract(self, rows: np.ndarray) -> np.ndarray:
        if self._network is None:
            kwargs = self.extractor.kwargs()
            layer, kid_layer = (resolve_feature_layer_for_metric(m, **kwargs) for m in ("fid", "kid"))
            if layer != kid_layer:
                raise ValueError(f"extractor {self.extractor.name!r} gives FID and KID different layers ({layer}, {kid_layer})")
            name = kwargs.pop("feature_extractor")
            self._network = create_feature_extractor(name, [layer], cuda=self.cuda, verbose=False, **kwargs)
            self._layer = layer
        out = get_featuresdict_from_dataset(UInt8Frames(self.frames, rows), self._network, self.batch_size,
                                            self.cuda, save_cpu_ram=True, verbose=False)
        return out[self._layer].to(torch.float32).numpy()


def _fidelity(features_a: torch.Tensor, features_b: torch.Tensor, n: int, kid_subsets: int) -> dict:
    """torch-fidelity's FID and KID (its defaults: polynomial kernel, rng seed 2020) of two feature sets."""
    stats = [fid_features_to_statistics(f) for f in (features_a, features_b)]
    fid = fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID]
    kid = kid_features_to_metric(features_a, features_b, kid_subsets=kid_subsets, kid_subset_size=min(1000, n),
                                 verbose=False)[KEY_METRIC_KID_MEAN]
    return {"fid": float(fid), "kid": float(kid)}


def fid_kid(images_a, images_b, extractor: FeatureExtractor, n: int = 500, repeats: int = 3, seed: int = 0,
            groups_a=None, kid_subsets: int = 100, batch_size: int = 64, cuda: bool | None = None,
            weights_b: np.ndarray | None = None) -> dict:
    """FID and KID between two image sets, mean (std) over `repeats` draws of n images each.

    images_a, images_b: image arrays, `Frames`, or `FeatureBank`s of `extractor` (pass banks
    when the same images take part in several comparisons: each is then extracted once).
    With `images_b is None`, set a is compared with itself: its items are split into two
    disjoint halves at every repeat, by `groups_a` (e.g. patient ids) when given.
    weights_b: draw set b's images with these probabilities (without replacement; n is capped
    by the number of images of nonzero weight), e.g. to give it set a's mix of cells.
    """
    rng = np.random.default_rng(seed)
    bank_a = _bank(images_a, extractor, batch_size, cuda)
    same = images_b is None
    bank_b = bank_a if same else _bank(images_b, extractor, batch_size, cuda)
    fids, kids, used = [], [], 0
    for _ in range(repeats):
        if same:
            pos_a, pos_b = _disjoint_halves(len(bank_a), groups_a, rng)
        else:
            pos_a, pos_b = np.arange(len(bank_a)), np.arange(len(bank_b))
        p_b = None
        if weights_b is not None:
            pos_b = pos_b[np.asarray(weights_b)[pos_b] > 0]
            p_b = np.asarray(weights_b, dtype=np.float64)[pos_b]
            p_b = p_b / p_b.sum() if len(p_b) else p_b
        m = min(n, len(pos_a), len(pos_b))
        if m < 2:
            break
        pos_a = rng.choice(pos_a, size=m, replace=False)
        pos_b = rng.choice(pos_b, size=m, replace=False, p=p_b)
        r = _fidelity(bank_a.features(pos_a), bank_b.features(pos_b), m, kid_subsets)
        fids.append(r["fid"])
        kids.append(r["kid"])
        used = m
    return {
        "n": used, "repeats": len(fids),
        "fid_mean": float(np.mean(fids)) if fids else float("nan"),
        "fid_std": float(np.std(fids, ddof=1)) if len(fids) > 1 else (0.0 if fids else float("nan")),
        "kid_mean": float(np.mean(kids)) if kids else float("nan"),
        "kid_std": float(np.std(kids, ddof=1)) if len(kids) > 1 else (0.0 if kids else float("nan")),
        "extractor": extractor.description,
    }


def _bank(images, extractor: FeatureExtractor, batch_size: int, cuda: bool | None) -> FeatureBank:
    if isinstance(images, FeatureBank):
        if images._store.extractor != extractor:
            raise ValueError(f"a FeatureBank of {images._store.extractor.name!r} passed for extractor {extractor.name!r}")
        return images
    return FeatureBank(images, extractor, batch_size, cuda)


def _disjoint_halves(n: int, groups, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if groups is None:
        order = rng.permutation(n)
        return order[: n // 2], order[n // 2:]
    groups = np.asarray(groups)
    unique = pd.unique(groups)
    chosen = set(unique[rng.permutation(len(unique))[: len(unique) // 2]])
    first = np.array([g in chosen for g in groups])
    return np.flatnonzero(first), np.flatnonzero(~first)


# The paper's Table 1: for each attribute, two groups A and B, rows A-A, A-B, B-B, for
# real-real (the lower bound) and real-synthetic (real of the first, synthetic of the second).
TABLE1_ATTRIBUTES: tuple[tuple[str, str, tuple[str, str], tuple[str, str]], ...] = (
    ("Sex", "sex", ("male", "female"), (SEX_LABELS["male"], SEX_LABELS["female"])),
    ("Age", "age_band", ("lt60", "ge70"), (AGE_BAND_LABELS["lt60"], AGE_BAND_LABELS["ge70"])),
    ("BMI", "bmi_band", ("normal", "obese"), (BMI_BAND_LABELS["normal"], BMI_BAND_LABELS["obese"])),
    ("Condition", "diagnosis", ("healthy", "hf"), ("Healthy", "HF")),
)
def matching_weights(reference_keys, keys) -> np.ndarray:
    """Sampling probabilities over `keys` that give a draw the mix of `reference_keys`: each
    item weighs its key's share in the reference over its key's count here (0 for a key the
    reference lacks)."""
    reference_share = pd.Series(list(reference_keys)).value_counts(normalize=True)
    keys = pd.Series(list(keys))
    count = keys.value_counts()
    weights = keys.map(reference_share / count).fillna(0.0).to_numpy(dtype=np.float64)
    return weights / weights.sum() if weights.sum() > 0 else weights


def _other_attributes(index: pd.DataFrame, column: str) -> list[tuple]:
    """Each row's cell without the compared attribute (e.g. age, BMI and diagnosis for sex)."""
    others = [c for c in ("sex", "age_band", "bmi_band", "diagnosis") if c != column and c in index]
    return list(index[others].itertuples(index=False, name=None))


REAL_REAL = "Real - Real (lower bound)"
REAL_SYNTHETIC = "Real - Synthetic"
REALISM_COLUMNS = ("attribute", "comparison", "kind", "n", "repeats", "fid_mean", "fid_std", "kid_mean", "kid_std",
                   "extractor")


def realism_table(real, synthetic, extractor: FeatureExtractor, n: int = 500, repeats: int = 3, seed: int = 0,
                  real_splits: tuple[str, ...] | None = ("train",), kid_subsets: int = 100, batch_size: int = 64,
                  log=print) -> pd.DataFrame:
    """Table 1: FID/KID between real subgroups and between real and synthetic of a subgroup.

    real, synthetic: objects with `.images` and `.index` (e.g. `ImageSet`); synthetic may
    be None (real-real rows only). `real_splits`: the real images used (default: training
    frames, from which the synthetic images' prompts and masks come).
    """
    real_index = real.index.reset_index(drop=True)
    real_rows = np.arange(len(real_index))
    if real_splits is not None and "split" in real_index:
        real_rows = np.flatnonzero(real_index["split"].isin(real_splits).to_numpy())
    real_bank = FeatureBank(real.images, extractor, batch_size)
    synthetic_bank = None if synthetic is None else FeatureBank(synthetic.images, extractor, batch_size)
    rows = []
    for i, (title, column, (a, b), (label_a, label_b)) in enumerate(TABLE1_ATTRIBUTES):
        labels = {a: label_a, b: label_b}
        for j, (x, y) in enumerate(((a, a), (a, b), (b, b))):
            comparison = f"{labels[x]} - {labels[y]}"
            rx = real_rows[real_index[column].to_numpy()[real_rows] == x]
            ry = real_rows[real_index[column].to_numpy()[real_rows] == y]
            if x == y:
                res = fid_kid(real_bank.subset(rx), None, extractor, n, repeats, seed=[seed, i, j, 0],
                              groups_a=real_index["patient_id"].to_numpy()[rx], kid_subsets=kid_subsets,
                              batch_size=batch_size)
            else:
                res = fid_kid(real_bank.subset(rx), real_bank.subset(ry), extractor, n, repeats,
                              seed=[seed, i, j, 0], kid_subsets=kid_subsets, batch_size=batch_size)
            rows.append({"attribute": title, "comparison": comparison, "kind": REAL_REAL, **res})
            log(f"FID {title} {comparison} real-real: {res['fid_mean']:.2f} ({res['fid_std']:.2f}), n={res['n']}")
            if synthetic is not None:
                s_index = synthetic.index.reset_index(drop=True)
                sy = np.flatnonzero(s_index[column].to_numpy() == y)
                # synthetic sets are balanced over the 36 cells, real ones follow the cohort (few HF,
                # few young): drawn with the real side's mix of the other attributes, the comparison
                # measures the images, not the mix
                weights = matching_weights(_other_attributes(real_index.iloc[rx], column), _other_attributes(s_index.iloc[sy], column))
                res = fid_kid(real_bank.subset(rx), synthetic_bank.subset(sy), extractor, n, repeats,
                              seed=[seed, i, j, 1], kid_subsets=kid_subsets, batch_size=batch_size, weights_b=weights)
                rows.append({"attribute": title, "comparison": comparison, "kind": REAL_SYNTHETIC, **res})
                log(f"FID {title} {comparison} real-synthetic: {res['fid_mean']:.2f} ({res['fid_std']:.2f}), "
                    f"n={res['n']}")
    return pd.DataFrame(rows, columns=list(REALISM_COLUMNS))


# --------------------------------------------------------------------------- extractor sanity

SANITY_COLUMNS = ("check", "expectation", "n", "fid", "kid")


def extractor_sanity(real, extractor: FeatureExtractor, n: int = 500, seed: int = 0, real_splits: tuple[str, ...] | None = ("train",),
                     kid_subsets: int = 100, batch_size: int = 64) -> pd.DataFrame:
    """Does the feature extractor see what matters? Three FIDs against one set A of real frames:

    - real frames of other patients (B): near 0, the floor every Table 1 value sits on;
    - B with the ED and ES channels swapped: clearly above the floor, or the extractor is blind
      to the ED-to-ES contraction (the heart-failure signal the synthetic frames must carry);
    - uniform noise of B's shape: far above the floor.

    A and B are disjoint halves of the real patients, n images each (fewer if fewer exist).
    """
    index = real.index.reset_index(drop=True)
    rows = np.arange(len(index))
    if real_splits is not None and "split" in index:
        rows = np.flatnonzero(index["split"].isin(real_splits).to_numpy())
    rng = np.random.default_rng([seed, 7])
    half_a, half_b = _disjoint_halves(len(rows), index["patient_id"].to_numpy()[rows], rng)
    m = min(n, len(half_a), len(half_b))
    frames = as_frames(real.images)
    a = frames.take(np.sort(rows[rng.choice(half_a, size=m, replace=False)]))
    b = frames.take(np.sort(rows[rng.choice(half_b, size=m, replace=False)]))
    others = {
        ("real frames of other patients", "near 0 (the floor)"): b,
        # R = ED, G = ES, B = ED (frames/preprocess.py): swapped, R = ES, G = ED, B = ES
        ("the same, ED and ES channels swapped", "clearly above the floor"): b[:, [1, 0, 1]],
        ("uniform noise", "far above the floor"): rng.random(b.shape, dtype=np.float32),
    }
    out, bank_a = [], FeatureBank(a, extractor, batch_size)
    for (check, expectation), images in others.items():
        r = fid_kid(bank_a, images, extractor, n=m, repeats=1, seed=[seed, 7], kid_subsets=kid_subsets, batch_size=batch_size)
        out.append({"check": check, "expectation": expectation, "n": r["n"], "fid": r["fid_mean"], "kid": r["kid_mean"]})
    return pd.DataFrame(out, columns=list(SANITY_COLUMNS))


MEMORISATION_CHECKS = (
    ("frames it trained on, two halves of the patients", "the floor"),
    ("frames it trained on against frames of patients it never saw", "near the floor, or it memorised its training frames"),
)


def memorisation_check(seen, unseen, extractor: FeatureExtractor, n: int = 500, seed: int = 0,
                       kid_subsets: int = 100, batch_size: int = 64) -> pd.DataFrame:
    """Has the extractor memorised the real frames it trained on, which Table 1 compares?

    seen: real frames of patients the extractor trained on; unseen: real frames of patients it never
    saw, chosen alike (same slice and frame selection, same cohort mix: e.g. central training frames
    and the test split). An extractor that memorised its training frames puts them apart from any
    other image, real or synthetic, and inflates every real-vs-synthetic FID over its floor.
    """
    groups = seen.index["patient_id"].to_numpy()
    seen_bank = FeatureBank(seen.images, extractor, batch_size)
    floor = fid_kid(seen_bank, None, extractor, n, repeats=1, seed=[seed, 8], groups_a=groups,
                    kid_subsets=kid_subsets, batch_size=batch_size)
    m = floor["n"]  # the unseen comparison at the floor's size: FID's bias depends on n
    across = fid_kid(seen_bank, unseen.images, extractor, m, repeats=1, seed=[seed, 8, 1],
                     kid_subsets=kid_subsets, batch_size=batch_size)
    rows = [{"check": check, "expectation": expectation, "n": r["n"], "fid": r["fid_mean"], "kid": r["kid_mean"]}
            for (check, expectation), r in zip(MEMORISATION_CHECKS, (floor, across))]
    return pd.DataFrame(rows, columns=list(SANITY_COLUMNS))


def sanity_holds(sanity: pd.DataFrame, margin: float = 2.0) -> bool:
    """The swapped frames and the noise each at least `margin` times the floor (taken as at least 1)."""
    floor, swapped, noise = (float(v) for v in sanity["fid"])
    return swapped >= margin * max(floor, 1.0) and noise >= margin * max(floor, 1.0)


# --------------------------------------------------------------------------- diversity

MS_SSIM_MIN_SIDE = 161  # pytorch_msssim: 11-px window and 4 downsamplings need > 160 px


def intra_prompt_diversity(images) -> float:
    """Mean pairwise MS-SSIM (Wang et al. 2003: 5 scales, 11-px Gaussian window,
    `pytorch_msssim`) over all pairs of images made from the same prompt and mask; lower
    means more diverse. Images smaller than 161 px are first upsampled (bilinear) to 176
    px, as the standard MS-SSIM needs; values are then comparable between sets of one size.
    NaN for fewer than two images."""
    from pytorch_msssim import ms_ssim

    x = torch.from_numpy(np.asarray(as_frames(images).take(np.arange(len(images))), dtype=np.float32))
    if len(x) < 2:
        return float("nan")
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        x = F.interpolate(x, size=(176, 176), mode="bilinear", align_corners=False).clamp(0, 1)
    pairs = np.array(list(itertools.combinations(range(len(x)), 2)))
    values = []
    for start in range(0, len(pairs), 64):
        p = pairs[start:start + 64]
        values.append(ms_ssim(x[p[:, 0]], x[p[:, 1]], data_range=1.0, size_average=False))
    return float(torch.cat(values).mean())


def diversity_table(synthetic, by: tuple[str, ...] | None = None, max_groups: int = 50, max_per_group: int = 8,
                    seed: int = 0) -> pd.DataFrame:
    """Intra-prompt diversity of synthetic images grouped by prompt and mask.

    `by`: the index columns that identify one prompt and one mask. Default: `prompt` and
    whichever mask-identifying columns exist (`mask_id`, `source_patient_id`, `source_row`,
    `source_slice`, `slice`, `slice_offset`, `frame_offset`). Up to `max_groups` groups with
    at least two images (seeded choice), up to `max_per_group` images each. One row per
    group, with its cell, n_images and ms_ssim.
    """
    index = synthetic.index.reset_index(drop=True)
    if by is None:
        by = ("prompt",) + tuple(c for c in ("mask_id", "source_patient_id", "source_row", "source_slice", "slice",
                                             "slice_offset", "frame_offset") if c in index)
    missing = [c for c in by if c not in index]
    if missing:
        raise ValueError(f"synthetic index lacks the grouping columns {missing}")
    rng = np.random.default_rng(seed)
    groups = [(key, rows.to_numpy()) for key, rows in index.groupby(list(by), sort=True).groups.items()
              if len(rows) >= 2]
    if len(groups) > max_groups:
        groups = [groups[i] for i in sorted(rng.choice(len(groups), size=max_groups, replace=False))]
    frames = as_frames(synthetic.images)
    out = []
    for key, rows in groups:
        rows = np.sort(rng.permutation(rows)[:max_per_group])
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key)), "cell": index["cell"].iloc[rows[0]] if "cell" in index else None,
                    "n_images": len(rows), "ms_ssim": intra_prompt_diversity(frames.subset(rows))})
    return pd.DataFrame(out, columns=list(by) + ["cell", "n_images", "ms_ssim"])


# --------------------------------------------------------------------------- scanner shift

SHIFT_COLUMNS = ("comparison", "n", "repeats", "fid_mean", "fid_std", "kid_mean", "kid_std")


def scanner_shift_table(real_in, real_out, synthetic, extractor: FeatureExtractor, n: int = 500, repeats: int = 3,
                        seed: int = 0, kid_subsets: int = 100, batch_size: int = 64) -> pd.DataFrame:
    """How far the held-out vendor's or site's real frames lie from what the models train on.

    real_in: real frames of the training scanners; real_out: real frames of the held-out ones (never
    trained on); synthetic: the generator's frames (None: real rows only). Rows: the training
    scanners against themselves (the lower bound), against the held-out scanners (the shift), and
    synthetic frames against each: synthetic frames closer to the held-out scanners than the
    training scanners are would be a sign the generator covers part of the shift."""
    sets = {"real, training scanners": real_in, "real, held-out scanners": real_out, "synthetic": synthetic}
    banks = {name: FeatureBank(images.images, extractor, batch_size) for name, images in sets.items() if images is not None}
    pairs = [("real, training scanners", None), ("real, training scanners", "real, held-out scanners")]
    if synthetic is not None:
        pairs += [("synthetic", "real, training scanners"), ("synthetic", "real, held-out scanners")]
    rows = []
    for k, (a, b) in enumerate(pairs):
        groups = sets[a].index["patient_id"].to_numpy() if b is None else None
        res = fid_kid(banks[a], None if b is None else banks[b], extractor, n, repeats, seed=[seed, 7, k],
                      groups_a=groups, kid_subsets=kid_subsets, batch_size=batch_size)
        rows.append({"comparison": f"{a} - {a if b is None else b}", **{c: res[c] for c in SHIFT_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=list(SHIFT_COLUMNS))
