"""Planning and assembling one cell's synthetic frames (the debiased generation step).

Each synthetic image takes its prompt and its mask from a real *training* patient of the
same cell (BRIEF step 6: masks from other cells made results clearly worse). A cell with
no training patient borrows from the nearest cell that has one: same sex and diagnosis,
BMI band relaxed first (nearest band first), then age band, then both; every such image
is flagged with the cell it borrowed from. Source patients are recorded as a salted hash,
never as their id.
"""

from __future__ import annotations

import hashlib
import secrets
from itertools import product
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cardio_assets.cohort.cells import AGE_BANDS, BMI_BANDS, Cell, prompt
from cardio_assets.frames.preprocess import resize_image
from cardio_assets.generation.qc import QCItem
from cardio_assets.lake.atomic import atomic_write_text
from cardio_assets.lake.mirror import fetched
from cardio_assets.lake.values import FrameSet


def privacy_salt(lake_dir: str | Path) -> str:
    """The data lake's secret salt for source-patient hashes, created once, kept out of outputs."""
    path = fetched(Path(lake_dir) / ".secrets" / "patient_hash_salt")
    if not path.exists():
        atomic_write_text(path, secrets.token_hex(16))
    return path.read_text().strip()


def patient_hash(patient_id: str, salt: str) -> str:
    return hashlib.blake2b(f"{salt}:{patient_id}".encode(), digest_size=8).hexdigest()


def _band_distance(a: str, b: str, bands: tuple[str, ...]) -> int:
    return abs(bands.index(a) - bands.index(b))


def fallback_cells(cell: Cell) -> list[str]:
    """Cells to borrow masks from, nearest first: vary BMI, then age, then both."""
    others = []
    for age, bmi in product(AGE_BANDS, BMI_BANDS):
        if (age, bmi) == (cell.age_band, cell.bmi_band):
            continue
        d_age, d_bmi = _band_distance(age, cell.age_band, AGE_BANDS), _band_distance(bmi, cell.bmi_band, BMI_BANDS)
        # relaxing BMI alone beats relaxing age alone beats relaxing both
        rank = (0 if d_age == 0 else 1 if d_bmi == 0 else 2, d_age + d_bmi, d_bmi, d_age)
        others.append((rank, Cell(cell.sex, age, bmi, cell.diagnosis).key))
    return [key for _, key in sorted(others)]


def source_rows(cell_key: str, frames: dict[str, FrameSet]) -> tuple[str, pd.DataFrame]:
    """(the cell the masks come from, its training rows with their position in that FrameSet)."""
    for key in [cell_key, *fallback_cells(Cell.parse(cell_key))]:
        fs = frames.get(key)
        if fs is None or len(fs) == 0:
            continue
        train = fs.index.reset_index(names="row")
        train = train[train["split"] == "train"]
        if len(train):
            return key, train
    raise ValueError(f"no training patient in {cell_key} nor in any cell it may borrow masks from")


def plan_items(cell_key: str, frames: dict[str, FrameSet], n: int, seed: int, salt: str) -> tuple[list[QCItem], str]:
    """n generation items for a cell: prompts and masks drawn from real training rows.

    Patients are drawn in turn (a seeded shuffle, repeated) so every source patient is used
    about equally, then one of that patient's training images' masks at random.
    """
    from_cell, train = source_rows(cell_key, frames)
    rng = np.random.default_rng([seed, int(hashlib.blake2b(cell_key.encode(), digest_size=4).hexdigest(), 16)])
    patients = sorted(train["patient_id"].unique())
    order = np.concatenate([rng.permutation(patients) for _ in range(-(-n // len(patients)))])[:n]
    cell = Cell.parse(cell_key)
    items = []
    for index, pid in enumerate(order):
        rows = train[train["patient_id"] == pid]
        row = rows.iloc[int(rng.integers(len(rows)))]
        prompt = row["prompt"]
        if from_cell != cell_key:  # a borrowed mask keeps this cell's attributes in the prompt
            prompt = prompt_for_cell(cell, row)
        items.append(QCItem(
            cell=cell_key,
            index=index,
            prompt=prompt,
            labels=np.asarray(frames[from_cell].controls[int(row["row"])]),
            expected={"sex": cell.sex, "age_band": cell.age_band, "bmi_band": cell.bmi_band, "diagnosis": cell.diagnosis},
            source=patient_hash(str(pid), salt),
            source_row=int(row["row"]),
        ))
    return items, from_cell


def source_frames_pass(check: Callable[[np.ndarray, Sequence[QCItem]], list[list[str]]], source: FrameSet,
                       items: Sequence[QCItem]) -> np.ndarray:
    """Per item: does the real frame its mask was drawn from (row `source_row` of `source`) pass the
    same QC, expecting that frame's own attributes? How often a real image with these very masks
    passes: thresholds calibrated on a BMI band's frames fail some real frames (a small RV at the
    apex, low in contrast), and a generator that draws such masks as real frames look fails there too."""
    rows = sorted({it.source_row for it in items})
    if not rows:
        return np.zeros(0, dtype=bool)
    own = source.index.iloc[rows]
    real = [QCItem(cell=str(r["cell"]), index=k, prompt="", labels=np.asarray(source.controls[row]),
                   expected={a: str(r[a]) for a in ("sex", "age_band", "bmi_band", "diagnosis")})
            for k, (row, (_, r)) in enumerate(zip(rows, own.iterrows()))]
    passed = {row: not fails for row, fails in zip(rows, check(np.asarray(source.images[rows], dtype=np.float32), real))}
    return np.array([passed[it.source_row] for it in items], dtype=bool)


def prompt_for_cell(cell: Cell, row) -> str:
    """The prompt of a cell for a borrowed mask: a representative age and BMI of the cell's bands."""
    age = {"lt60": 55.0, "60to70": 65.0, "ge70": 75.0}[cell.age_band]
    bmi = {"normal": 22.0, "overweight": 27.5, "obese": 33.0}[cell.bmi_band]
    return prompt(cell.sex, age, bmi, cell.diagnosis)


SYNTHETIC_COLUMNS = [
    "synthetic_id", "cell", "sex", "age_band", "bmi_band", "diagnosis", "prompt", "source_hash", "mask_from_cell",
    "borrowed_mask", "seed", "attempts", "qc_passed", "failure_modes", "checkpoint_hash", "split", "synthetic",
]


def assemble_synthetic(cell_key: str, items: list[QCItem], accepted: list[dict], rejected: list[dict],
                       from_cell: str, checkpoint_hash: str, size: int) -> tuple[FrameSet, pd.DataFrame]:
    """(FrameSet of accepted images, log of every item with its QC outcome)."""
    cell = Cell.parse(cell_key)
    by_index = {it.index: it for it in items}
    log_rows = []
    for rec in sorted(accepted + rejected, key=lambda r: r["index"]):
        log_rows.append({
            "synthetic_id": f"syn-{cell_key}-{rec['index']:05d}",
            "cell": cell_key, "sex": cell.sex, "age_band": cell.age_band, "bmi_band": cell.bmi_band,
            "diagnosis": cell.diagnosis, "prompt": rec["prompt"], "source_hash": rec["source"],
            "mask_from_cell": from_cell, "borrowed_mask": from_cell != cell_key,
            "seed": rec["seed"] if rec["accepted"] else (rec["seeds"][-1] if rec["seeds"] else None),
            "attempts": rec["attempts"], "qc_passed": rec["accepted"],
            "failure_modes": "; ".join(rec["failure_modes"]), "checkpoint_hash": checkpoint_hash,
            "split": "synthetic", "synthetic": True,
        })
    log = pd.DataFrame(log_rows, columns=SYNTHETIC_COLUMNS)
    ok = sorted(accepted, key=lambda r: r["index"])
    index = log[log["qc_passed"]].reset_index(drop=True)
    index["patient_id"] = index["synthetic_id"]  # each synthetic image is its own "patient"
    shape = (0, 3, size, size)
    images = np.stack([_fit(r["image"], size) for r in ok]).astype(np.float16) if ok else np.zeros(shape, np.float16)
    controls = np.stack([by_index[r["index"]].labels for r in ok]).astype(np.uint8) if ok else np.zeros(shape, np.uint8)
    return FrameSet(index=index, images=images, controls=controls), log


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """A generated (3, R, R) image at the frames' size (SD works at 512 px, the classifier at 224)."""
    return np.stack([resize_image(np.asarray(c, dtype=np.float32), size) for c in image])
