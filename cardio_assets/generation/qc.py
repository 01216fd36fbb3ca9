"""Quality control in the generation loop (after RoentGen-v2).

Each synthetic frame is checked against what it was generated from:

1. `mask_adherence`: does the image follow its label map? In bSSFP cine, blood is bright and
   muscle dark, so in the ED and the ES channel:
   - contrast: mean(LV cavity) - mean(myocardium) >= `min_contrast`, and the same for the RV
     cavity when the mask has one (at least `min_pixels` pixels); intensities are in [0, 1].
   - Dice: a two-class Otsu threshold is fitted to the intensities inside the heart (LV, MYO,
     RV pixels), applied to the heart's bounding box (padded by `bbox_margin` of its size), and
     the bright class is compared with the mask's blood pool (LV + RV): Dice >= `min_dice`.
     Fitting on heart pixels makes the threshold a blood/muscle split; applying it to the
     whole box penalises bright structures where the mask says there is none.
   A blank image (no contrast, Dice 0) and a noise image (contrast ~0, Dice ~blood fraction)
   fail both. Defaults (`min_contrast` 0.10, `min_dice` 0.60) are deliberately lenient; use
   `calibrate_thresholds` on real training frames to set them from the real distribution, those
   of the cell's BMI band (`calibration_rows`): pericardial fat is bright and hugs the heart, so
   inside the padded box it reads as blood pool, and a threshold set on all bands failed 21% of
   real obese frames (7% of normal-BMI ones), discarding the synthetic frames of the groups the
   method exists for more often than the others.
2. `attribute_agreement`: attribute predictors trained on real images (sex, age band, BMI band)
   against the prompt's attributes: an image fails where the probability given to its prompted
   class is under that class's floor, calibrated on real validation frames as the mask
   thresholds are (`classify/attributes.py`: what 98% of real frames of the class reach); only
   predictors validated as reliable on real held-out data have floors to check.

`generate_with_qc` regenerates failing items with the next attempt's seed, up to
`max_attempts` (3), then drops them with their failure modes; generation is batched across all
items still pending in each attempt.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cardio_assets.cohort.labels import LV, MYO, RV
from cardio_assets.generation.sampling import sample_seed

PHASES = (("ED", 0), ("ES", 1))


@dataclass(frozen=True)
class QCThresholds:
    min_contrast: float = 0.10  # blood minus myocardium mean intensity, images in [0, 1]
    min_dice: float = 0.60  # Otsu bright class vs mask blood pool inside the heart's box
    min_pixels: int = 4  # structures smaller than this are not scored
    bbox_margin: float = 0.10  # box padding, fraction of the box size


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float | None:
    """Otsu's threshold of 1-D values; None when they are (nearly) constant."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-6:
        return None
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / denom) if denom else 0.0


def _phase_scores(img: np.ndarray, lab: np.ndarray, th: QCThresholds) -> dict:
    heart = lab > 0
    blood = (lab == LV) | (lab == RV)
    out: dict = {}
    if heart.sum() < th.min_pixels:
        return {"scorable": False}
    means = {}
    for name, value in (("lv", LV), ("myo", MYO), ("rv", RV)):
        sel = lab == value
        means[name] = float(img[sel].mean()) if sel.sum() >= th.min_pixels else None
    out["mean"] = means
    out["lv_minus_myo"] = means["lv"] - means["myo"] if None not in (means["lv"], means["myo"]) else None
    out["rv_minus_myo"] = means["rv"] - means["myo"] if None not in (means["rv"], means["myo"]) else None
    ys, xs = np.nonzero(heart)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my = int(round(th.bbox_margin * (y1 - y0)))
    mx = int(round(th.bbox_margin * (x1 - x0)))
    y0, x0 = max(0, y0 - my), max(0, x0 - mx)
    y1, x1 = min(lab.shape[0], y1 + my), min(lab.shape[1], x1 + mx)
    t = otsu_threshold(img[heart])
    if t is None:
        out["dice"] = 0.0
    else:
        out["dice"] = _dice(img[y0:y1, x0:x1] > t, blood[y0:y1, x0:x1])
    out["threshold"] = t
    out["scorable"] = True
    return out


def mask_adherence(image: np.ndarray, labels: np.ndarray, thresholds: QCThresholds = QCThresholds()) -> dict:
    """Score how well a (3, H, W) [ED, ES, ED] image in [0, 1] follows its (3, H, W) label map.

    Returns {"score": mean Dice over ED/ES, "passed": bool, "failures": [str], "phases": {...}}.
    """
    image = np.asarray(image, dtype=np.float32)
    labels = np.asarray(labels)
    if image.shape != labels.shape or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must both be (3, H, W)")
    failures: list[str] = []
    phases, dices = {}, []
    if not np.isfinite(image).all():
        return {"score": 0.0, "passed": False, "failures": ["non-finite pixels"], "phases": {}}
    for name, ch in PHASES:
        s = _phase_scores(image[ch], labels[ch], thresholds)
        phases[name] = s
        if not s["scorable"]:
            continue
        for key, what in (("lv_minus_myo", "LV cavity"), ("rv_minus_myo", "RV cavity")):
            c = s[key]
            if c is not None and c < thresholds.min_contrast:
                failures.append(f"{name}: {what} not brighter than myocardium ({c:+.3f} < {thresholds.min_contrast})")
        if s["lv_minus_myo"] is None:
            failures.append(f"{name}: mask lacks LV cavity or myocardium")
        dices.append(s["dice"])
        if s["dice"] < thresholds.min_dice:
            failures.append(f"{name}: blood pool Dice below threshold ({s['dice']:.3f} < {thresholds.min_dice})")
    if not dices:
        failures.append("mask has no heart to check against")
    score = float(np.mean(dices)) if dices else 0.0
    return {"score": score, "passed": not failures, "failures": failures, "phases": phases}


def calibration_rows(index: pd.DataFrame, bmi_band: str, n: int, seed: int, min_rows: int = 100) -> tuple[np.ndarray, str]:
    """Rows of real training frames to calibrate one cell's QC thresholds on, and a description.

    Frames of the cell's BMI band (what surrounds the heart, pericardial fat above all, changes the
    Dice a real frame reaches), n of them at most, drawn with `seed`; every band when the band has
    fewer than `min_rows` frames (a quantile of a handful of frames is noise): the description says so.
    """
    rng = np.random.default_rng(seed)
    band = np.flatnonzero(index["bmi_band"].to_numpy() == bmi_band)
    if len(band) >= min_rows:
        return np.sort(rng.permutation(band)[:n]), f"real training frames of BMI band {bmi_band} ({min(n, len(band))} of {len(band)})"
    return (np.sort(rng.permutation(len(index))[:n]),
            f"real training frames of every BMI band ({min(n, len(index))} of {len(index)}; band {bmi_band} has {len(band)} < {min_rows})")


def calibrate_thresholds(
    images: np.ndarray, labels: np.ndarray, quantile: float = 0.02, floor: QCThresholds = QCThresholds(min_contrast=0.05, min_dice=0.3)
) -> tuple[QCThresholds, dict]:
    """Thresholds from real frames: the `quantile` of their contrast and Dice, not below `floor`.

    Returns (thresholds, summary of the real scores).
    """
    contrasts, dices = [], []
    loose = QCThresholds(min_contrast=-1.0, min_dice=0.0)
    for img, lab in zip(images, labels):
        r = mask_adherence(img, lab, loose)
        for ph in r["phases"].values():
            if ph.get("scorable"):
                dices.append(ph["dice"])
                contrasts.extend(c for c in (ph["lv_minus_myo"], ph["rv_minus_myo"]) if c is not None)
    if not dices:
        raise ValueError("no scorable frames to calibrate on")
    c_q, d_q = float(np.quantile(contrasts, quantile)), float(np.quantile(dices, quantile))
    th = QCThresholds(min_contrast=max(floor.min_contrast, c_q), min_dice=max(floor.min_dice, d_q))
    summary = {
        "n_frames": len(images),
        "quantile": quantile,
        "contrast": {"q": c_q, "median": float(np.median(contrasts))},
        "dice": {"q": d_q, "median": float(np.median(dices))},
        "thresholds": asdict(th),
    }
    return th, summary


def attribute_agreement(probabilities: dict[str, dict[str, float]], expected: dict[str, str],
                        floors: dict[str, dict[str, float]]) -> list[str]:
    """Failure modes where the prompt's class of a checked attribute gets less probability than its
    floor. `floors`: {attribute: {class: floor}} of the attributes to check; a class without a
    floor is not checked."""
    failures = []
    for attr in sorted(set(floors) & set(expected)):
        want = expected[attr]
        if want is None or want not in floors[attr]:
            continue
        got = probabilities.get(attr, {}).get(want)
        if got is None:
            failures.append(f"{attr}: no prediction (expected {want!r})")
        elif got < floors[attr][want]:
            failures.append(f"{attr}: p({want}) below the real frames' floor ({got:.3f} < {floors[attr][want]:.3f})")
    return failures


# ---------------------------------------------------------------------------- the loop
def failure_mode(failure: str) -> str:
    """A failure without its measured values: "ED: LV cavity not brighter than myocardium"."""
    return re.sub(r"\s*\([^()]*\)$", "", failure)


@dataclass
class QCItem:
    """One synthetic image to make: its cell, index within the cell, prompt and label map."""

    cell: str
    index: int
    prompt: str
    labels: np.ndarray  # (3, H, W) uint8
    expected: dict[str, str] = field(default_factory=dict)  # prompt attributes for QC
    source: str | None = None  # the real training patient the prompt/mask came from
    source_row: int | None = None  # that patient's frame (row of the cell's FrameSet) whose mask this is


def make_check(
    thresholds: QCThresholds = QCThresholds(),
    probabilities: Callable[[np.ndarray], list[dict[str, dict[str, float]]]] | None = None,
    floors: dict[str, dict[str, float]] | None = None,
) -> Callable[[np.ndarray, Sequence[QCItem]], list[list[str]]]:
    """A check_fn for `generate_with_qc`: mask adherence, then the attribute floors (of the
    trusted predictors) against `probabilities(images)` (one dict per image, e.g.
    `AttributePredictor.probabilities`), computed for the whole batch at once."""

    def check(images: np.ndarray, items: Sequence[QCItem]) -> list[list[str]]:
        failures = [[f"mask: {f}" for f in mask_adherence(image, item.labels, thresholds)["failures"]]
                    for image, item in zip(images, items)]
        if probabilities is not None and floors:
            for fails, probs, item in zip(failures, probabilities(images), items):
                fails += [f"attribute: {f}" for f in attribute_agreement(probs, item.expected, floors)]
        return failures

    return check


def generate_with_qc(
    generate_fn: Callable[[np.ndarray, list[str], list[int]], np.ndarray],
    check_fn: Callable[[np.ndarray, Sequence[QCItem]], list[list[str]]],
    items: Sequence[QCItem],
    max_attempts: int = 3,
    log: Callable[[str], None] = print,
    base_seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Generate every item, check it, regenerate failures with a new seed, drop after max_attempts.

    generate_fn(controls (n,3,H,W) uint8, prompts, seeds) -> images (n,3,H,W) in [0,1] (e.g.
    `Sampler.generate` or `functools.partial(generate, backbone_dir, controlnet_dir, config=cfg)`).
    check_fn(images, items) -> failure modes per image ([] = pass), for one attempt's batch.
    Returns (accepted, rejected): one record per item with cell, index, prompt, source,
    attempts, seeds tried, the accepted seed, failure modes per attempt, and for accepted items
    the image.
    """
    records = [
        {"cell": it.cell, "index": it.index, "prompt": it.prompt, "source": it.source,
         "attempts": 0, "seeds": [], "seed": None, "accepted": False, "failures": [], "failure_modes": []}
        for it in items
    ]
    pending = list(range(len(items)))
    for attempt in range(max_attempts):
        if not pending:
            break
        seeds = [sample_seed(items[i].cell, items[i].index, attempt, base_seed) for i in pending]
        controls = np.stack([np.asarray(items[i].labels) for i in pending])
        images = generate_fn(controls, [items[i].prompt for i in pending], seeds)
        checked = check_fn(images, [items[i] for i in pending])
        still = []
        for k, i in enumerate(pending):
            rec = records[i]
            rec["attempts"] = attempt + 1
            rec["seeds"].append(seeds[k])
            fails = list(checked[k])
            rec["failures"].append(fails)
            if fails:
                still.append(i)
            else:
                rec.update(accepted=True, seed=seeds[k], image=np.asarray(images[k], dtype=np.float32), failure_modes=[])
        log(f"qc attempt {attempt + 1}/{max_attempts}: {len(pending)} generated, "
            f"{len(pending) - len(still)} passed, {len(still)} failed")
        pending = still
    for i in pending:
        rec = records[i]
        modes = sorted({failure_mode(f) for fails in rec["failures"] for f in fails})
        rec["failure_modes"] = modes
        log(f"qc dropped {rec['cell']} #{rec['index']} after {rec['attempts']} attempts: {'; '.join(modes)}")
    accepted = [r for r in records if r["accepted"]]
    rejected = [r for r in records if not r["accepted"]]
    return accepted, rejected
