"""Tiny but valid NIfTI cohorts in each real layout, for tests (reused across test files).

Every patient gets a 24 x 24 x 4 x 8 int16 cine of a cartoon short-axis heart: a bright
disk LV cavity, a darker myocardial ring around it and a bright RV blob beside it. The LV
cavity is largest at ED and shrinks linearly to its smallest at ES, then grows back, so
"ES = the frame with the smallest LV" holds. Masks at ED and ES are written in the
source's own label convention (UKB / M&Ms 1 LV 2 MYO 3 RV; ACDC 1 RV 2 MYO 3 LV), with a
plausible 1.8 x 1.8 x 8 mm affine.

A patient is a small dict; every key but ``id`` is optional:

=================  ==========================================================================
``id``             patient id (str; ACDC also takes an int -> ``patient001``)
``sex``            "female" | "male" | None                      (default alternates)
``age``            years or None                                 (default 55)
``bmi``            kg/m^2 or None                                (default 24)
``diagnosis``      "hf" | "healthy"                              (default "healthy")
``icd10``          UKB: list of ICD-10 codes (default ["I500"] for hf, [] for healthy)
``pathology``      M&Ms Pathology (default DCM for hf, NOR for healthy)
``group``          ACDC Group (default DCM for hf, NOR for healthy)
``height``         cm (M&Ms / ACDC; default 170 when bmi is given); ``weight`` kg (from bmi)
``vendor``, ``vendor_name``, ``centre``   M&Ms (default "A", "Siemens", 1)
``ed``, ``es``     0-based frames of the cine's largest / smallest LV (default 0 and 3);
                   each writer stores them in its source's convention (ACDC: 1-based)
``n_frames``       cine length (default 8)
``split``          subfolder: M&Ms e.g. "Training/Labeled" (default flat), ACDC
                   "training" (default) or "testing"
``missing``        names of things not to write: "image", "ed_mask", "es_mask",
                   "folder" (metadata row only), "metadata" (folder only), ACDC "info"
``bad_label``      a label value written into one background voxel of the ED mask
``nan_voxels``     True: the cine is float32 with NaN voxels
``mask_shape``     (x, y, z) spatial shape of the masks, to mismatch the cine
``duplicate``      True: the metadata row is written twice; "conflict": the copy differs
``raw``            {column: raw string} written into the metadata row as is
``info_cfg``       ACDC: the raw text of Info.cfg
``info_encoding``  ACDC: "utf-8-sig" (byte-order mark), "latin-1", ... (default utf-8)
``info_crlf``      ACDC: True writes Info.cfg with CRLF line ends
``cine_frames``    keep only the first N frames of the cine (the masks are written as usual)
``es_mask``        "ed": the ED mask is saved as the ES mask; (dx, dy): the ES mask is
                   shifted in-plane by that many voxels (wrapping round)
``age_visit0``     UKB: age at recruitment, written in a ``21003-0.0`` column (present when
                   any patient has it)
=================  ==========================================================================

The table writers also take ``sep`` (default ","), ``encoding`` ("utf-8-sig" writes a
byte-order mark; "latin-1") and ``crlf`` (CRLF line ends), as real exports vary.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SHAPE_XYZ: tuple[int, int, int] = (24, 24, 4)
N_FRAMES = 8
SPACING_MM: tuple[float, float, float] = (1.8, 1.8, 8.0)
FRAME_S = 0.04
AFFINE = np.array(
    [
        [-SPACING_MM[0], 0.0, 0.0, 21.0],
        [0.0, -SPACING_MM[1], 0.0, 30.0],
        [0.0, 0.0, SPACING_MM[2], -12.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
# canonical intensities of the cartoon heart
_INTENSITY = {0: 40.0, 1: 700.0, 2: 180.0, 3: 620.0}
_ACDC_FROM_CANONICAL = np.array([0, 3, 2, 1], dtype=np.uint8)  # canonical -> ACDC label


@dataclass
class CohortPaths:
    root: Path  # the folder to give the reader
    metadata: Path | None  # the metadata table (None for ACDC)
    patients: dict[str, dict[str, Path]] = field(default_factory=dict)  # id -> file paths


# --- the cartoon heart -------------------------------------------------------------------


def _phase(t: int, ed: int, es: int, n_frames: int) -> float:
    """0 at ED, 1 at ES, linear in between (cyclically), so ES is the unique minimum."""
    d = (es - ed) % n_frames
    k = (t - ed) % n_frames
    if d == 0:
        return 0.0
    return k / d if k <= d else (n_frames - k) / (n_frames - d)


def heart_labels(phase: float, shape_xyz: tuple[int, int, int] = SHAPE_XYZ) -> np.ndarray:
    """Canonical labels (0 bg, 1 LV, 2 MYO, 3 RV) of the cartoon heart at a cardiac phase."""
    nx, ny, nz = shape_xyz
    x, y = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5, indexing="ij")
    labels = np.zeros(shape_xyz, dtype=np.uint8)
    cx, cy = nx * 0.55, ny * 0.5
    for z in range(nz):
        scale = 1.0 - 0.35 * z / max(nz - 1, 1)  # smaller towards the apex
        r_lv = (nx / 4.8 - 2.0 * phase) * scale
        r_out = r_lv + (2.0 + 0.8 * phase) * scale
        dist = np.hypot(x - cx, y - cy)
        rv = ((x - nx * 0.15) / ((2.2 - 0.5 * phase) * scale)) ** 2 + (
            (y - cy) / (5.0 * scale)
        ) ** 2 <= 1.0
        sl = np.zeros((nx, ny), dtype=np.uint8)
        sl[rv] = 3
        sl[dist <= r_out] = 2
        sl[dist <= r_lv] = 1
        labels[..., z] = sl
    return labels


def cartoon_cine(
    ed: int = 0, es: int = 3, n_frames: int = N_FRAMES, shape_xyz=SHAPE_XYZ, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(cine int16 (x, y, z, t), canonical labels uint8 (x, y, z, t))``."""
    rng = np.random.default_rng(seed)
    labels = np.stack(
        [heart_labels(_phase(t, ed, es, n_frames), shape_xyz) for t in range(n_frames)], axis=-1
    )
    lut = np.array([_INTENSITY[k] for k in range(4)], dtype=np.float32)
    cine = lut[labels] + rng.normal(0.0, 10.0, labels.shape).astype(np.float32)
    return np.clip(cine, 0, None).astype(np.int16), labels


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    zooms = SPACING_MM + ((FRAME_S,) if array.ndim == 4 else ())
    img.header.set_zooms(zooms[: array.ndim])
    nib.save(img, str(path))
    return path


def _seed(pid: str) -> int:
    return zlib.crc32(pid.encode())


def _patient_arrays(p: dict, pid: str, to_source=None):
    """Cine (int16, or float32 with NaN) and per-frame labels in the source convention."""
    ed, es, n = p.get("ed", 0), p.get("es", 3), p.get("n_frames", N_FRAMES)
    cine, labels = cartoon_cine(ed, es, n, seed=_seed(pid))
    if to_source is not None:
        labels = to_source[labels]
    if p.get("nan_voxels"):
        cine = cine.astype(np.float32)
        cine[0, 0, 0, :] = np.nan
        cine[5, 7, 1, ed] = np.nan
    if p.get("cine_frames"):
        cine = cine[..., : p["cine_frames"]]
    return cine, labels, ed, es


def _es_mask(labels: np.ndarray, ed: int, es: int, p: dict) -> np.ndarray:
    """The ES label map as the patient dict asks: the true one, the ED one, or shifted."""
    how = p.get("es_mask")
    if how == "ed":
        return labels[..., ed]
    if how is not None:
        return np.roll(labels[..., es], shift=tuple(how), axis=(0, 1))
    return labels[..., es]


def _shape_mask(mask: np.ndarray, p: dict, bad_label_here: bool) -> np.ndarray:
    mask = mask.copy()
    if bad_label_here and p.get("bad_label") is not None:
        mask[0, 0, 0, ...] = p["bad_label"]
    if p.get("mask_shape") is not None:
        spatial = tuple(p["mask_shape"])
        out = np.zeros(spatial + mask.shape[3:], dtype=mask.dtype)
        common = tuple(slice(0, min(a, b)) for a, b in zip(spatial, mask.shape[:3]))
        out[common] = mask[common]
        mask = out
    return mask


def _default_diagnosis_code(p: dict) -> str:
    return "DCM" if p.get("diagnosis", "healthy") == "hf" else "NOR"


def _sex_default(i: int, p: dict):
    return p["sex"] if "sex" in p else ("female", "male")[i % 2]


def _fmt(value) -> str:
    return "" if value is None else str(value)


def _height_weight(p: dict) -> tuple:
    height = p.get("height", 170.0 if p.get("bmi", 24.0) is not None else None)
    if "weight" in p:
        return height, p["weight"]
    bmi = p.get("bmi", 24.0)
    weight = None if bmi is None or height is None else bmi * (height / 100.0) ** 2
    return height, weight


def _write_table(rows: list[dict], path: Path, columns: list[str], *, index: bool = False,
                 sep: str = ",", encoding: str = "utf-8", crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=index, sep=sep, encoding=encoding,
                                               lineterminator="\r\n" if crlf else "\n")
    return path


def _rows_with_copies(p: dict, row: dict, age_column: str) -> list[dict]:
    row = {**row, **{k: _fmt(v) for k, v in p.get("raw", {}).items()}}
    rows = [row]
    if p.get("duplicate") == "conflict":
        rows.append({**row, age_column: "99"})
    elif p.get("duplicate"):
        rows.append(dict(row))
    return rows


# --- UK Biobank ---------------------------------------------------------------------------


def write_ukbb_cohort(
    dir: str | Path,
    patients: list[dict],
    *,
    columns: str = "fields",
    frame_columns: bool = False,
    root_name: str = "ukbb",
    sep: str = ",",
    encoding: str = "utf-8",
    crlf: bool = False,
) -> CohortPaths:
    """``<dir>/<root_name>/<eid>/{sa,seg_sa_ED,seg_sa_ES}.nii.gz`` and
    ``<dir>/<root_name>_metadata.csv``.

    `columns`: "fields" writes ``eid,31-0.0,21003-2.0,21001-2.0,41270-0.0[,41270-0.1...]``
    (sex 0/1, ICD-10 codes one per column, empty for none), "friendly" writes
    ``eid,sex,age,bmi,icd10`` (codes joined by ``;``). `frame_columns` adds ``ed_frame``
    and ``es_frame`` (0-based).
    """
    dir = Path(dir)
    root = dir / root_name
    root.mkdir(parents=True, exist_ok=True)
    result = CohortPaths(root, dir / f"{root_name}_metadata.csv")
    n_icd = max([1] + [len(_icd(p)) for p in patients])
    if columns == "fields":
        header = ["eid", "31-0.0", "21003-2.0", "21001-2.0"] + [
            f"41270-0.{k}" for k in range(n_icd)
        ]
    elif columns == "friendly":
        header = ["eid", "sex", "age", "bmi", "icd10"]
    else:
        raise ValueError(f"columns must be 'fields' or 'friendly', not {columns!r}")
    if frame_columns:
        header += ["ed_frame", "es_frame"]
    if any("age_visit0" in p for p in patients):
        header.append("21003-0.0")
    rows: list[dict] = []
    for i, p in enumerate(patients):
        pid = str(p["id"])
        missing = set(p.get("missing", ()))
        folder = root / pid
        files = {"folder": folder, "image": folder / "sa.nii.gz",
                 "ed_mask": folder / "seg_sa_ED.nii.gz", "es_mask": folder / "seg_sa_ES.nii.gz"}
        result.patients[pid] = files
        if "folder" not in missing:
            folder.mkdir(parents=True, exist_ok=True)
            cine, labels, ed, es = _patient_arrays(p, pid)
            if "image" not in missing:
                _save(cine, files["image"])
            if "ed_mask" not in missing:
                _save(_shape_mask(labels[..., ed], p, True), files["ed_mask"])
            if "es_mask" not in missing:
                _save(_shape_mask(_es_mask(labels, ed, es, p), p, False), files["es_mask"])
        if "metadata" in missing:
            continue
        sex, codes = _sex_default(i, p), _icd(p)
        if columns == "fields":
            row = {"eid": pid, "31-0.0": {"female": "0", "male": "1", None: ""}.get(sex, sex),
                   "21003-2.0": _fmt(p.get("age", 55)), "21001-2.0": _fmt(p.get("bmi", 24.0))}
            row.update({f"41270-0.{k}": (codes[k] if k < len(codes) else "")
                        for k in range(n_icd)})
            age_column = "21003-2.0"
        else:
            row = {"eid": pid, "sex": _fmt(sex), "age": _fmt(p.get("age", 55)),
                   "bmi": _fmt(p.get("bmi", 24.0)), "icd10": ";".join(codes)}
            age_column = "age"
        if frame_columns:
            row.update(ed_frame=str(p.get("ed", 0)), es_frame=str(p.get("es", 3)))
        row["21003-0.0"] = _fmt(p.get("age_visit0"))
        rows.extend(_rows_with_copies(p, row, age_column))
    _write_table(rows, result.metadata, header, sep=sep, encoding=encoding, crlf=crlf)
    return result


def _icd(p: dict) -> list[str]:
    if "icd10" in p:
        return list(p["icd10"])
    return ["I500"] if p.get("diagnosis", "healthy") == "hf" else []


# --- M&Ms-1 -------------------------------------------------------------------------------

MMS_COLUMNS = ["External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Age",
               "Pathology", "Sex", "Height", "Weight"]


def write_mms_cohort(
    dir: str | Path, patients: list[dict], *, index_column: bool = True, root_name: str = "mms",
    sep: str = ",", encoding: str = "utf-8", crlf: bool = False,
) -> CohortPaths:
    """``<dir>/<root_name>/[<split>/]<code>/<code>_sa.nii.gz`` and ``<code>_sa_gt.nii.gz``
    (4D, labelled at ED and ES only), and ``<dir>/<root_name>_metadata.csv`` with the
    release's columns (and, like the release, a leading unnamed index column)."""
    dir = Path(dir)
    root = dir / root_name
    root.mkdir(parents=True, exist_ok=True)
    result = CohortPaths(root, dir / f"{root_name}_metadata.csv")
    rows: list[dict] = []
    for i, p in enumerate(patients):
        pid = str(p["id"])
        missing = set(p.get("missing", ()))
        folder = root / p.get("split", "") / pid
        gt_path = folder / f"{pid}_sa_gt.nii.gz"
        files = {"folder": folder, "image": folder / f"{pid}_sa.nii.gz",
                 "ed_mask": gt_path, "es_mask": gt_path, "labels": gt_path}
        result.patients[pid] = files
        ed, es = p.get("ed", 0), p.get("es", 3)
        if "folder" not in missing:
            folder.mkdir(parents=True, exist_ok=True)
            cine, labels, ed, es = _patient_arrays(p, pid)
            if "image" not in missing:
                _save(cine, files["image"])
            if not {"ed_mask", "es_mask"} & missing:
                gt = np.zeros_like(labels)
                gt[..., ed] = _shape_mask(labels[..., ed], {"bad_label": p.get("bad_label")},
                                          True)
                gt[..., es] = _es_mask(labels, ed, es, p)
                _save(_shape_mask(gt, {"mask_shape": p.get("mask_shape")}, False), gt_path)
        if "metadata" in missing:
            continue
        height, weight = _height_weight(p)
        sex = _sex_default(i, p)
        row = {
            "External code": pid,
            "VendorName": p.get("vendor_name", "Siemens"),
            "Vendor": p.get("vendor", "A"),
            "Centre": _fmt(p.get("centre", 1)),
            "ED": str(ed),
            "ES": str(es),
            "Age": _fmt(p.get("age", 55)),
            "Pathology": p.get("pathology", _default_diagnosis_code(p)),
            "Sex": {"female": "F", "male": "M", None: ""}.get(sex, sex),
            "Height": _fmt(height),
            "Weight": _fmt(weight),
        }
        rows.extend(_rows_with_copies(p, row, "Age"))
    _write_table(rows, result.metadata, MMS_COLUMNS, index=index_column, sep=sep,
                 encoding=encoding, crlf=crlf)
    return result


# --- ACDC ---------------------------------------------------------------------------------


def acdc_id(value) -> str:
    return f"patient{value:03d}" if isinstance(value, int) else str(value)


def write_acdc_cohort(
    dir: str | Path, patients: list[dict], *, root_name: str = "acdc"
) -> CohortPaths:
    """``<dir>/<root_name>/<split>/patientNNN/`` with ``patientNNN_4d.nii.gz``,
    ``patientNNN_frameXX.nii.gz`` and ``_gt.nii.gz`` at ED and ES (XX 1-based, labels
    1 RV 2 MYO 3 LV) and ``Info.cfg`` (ED, ES 1-based, Group, Height, NbFrame, Weight)."""
    dir = Path(dir)
    root = dir / root_name
    root.mkdir(parents=True, exist_ok=True)
    result = CohortPaths(root, None)
    for p in patients:
        pid = acdc_id(p["id"])
        missing = set(p.get("missing", ()))
        folder = root / p.get("split", "training") / pid
        ed, es = p.get("ed", 0), p.get("es", 3)
        n = p.get("n_frames", N_FRAMES)
        files = {
            "folder": folder,
            "image": folder / f"{pid}_4d.nii.gz",
            "ed_image": folder / f"{pid}_frame{ed + 1:02d}.nii.gz",
            "es_image": folder / f"{pid}_frame{es + 1:02d}.nii.gz",
            "ed_mask": folder / f"{pid}_frame{ed + 1:02d}_gt.nii.gz",
            "es_mask": folder / f"{pid}_frame{es + 1:02d}_gt.nii.gz",
            "info": folder / "Info.cfg",
        }
        result.patients[pid] = files
        if "folder" in missing:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        cine, labels, ed, es = _patient_arrays(p, pid, to_source=_ACDC_FROM_CANONICAL)
        if "image" not in missing:
            _save(cine, files["image"])
        for frame, key in ((ed, "ed_image"), (es, "es_image")):
            if frame < cine.shape[-1]:  # a truncated cine (`cine_frames`) lacks later frames
                _save(cine[..., frame], files[key])
        if "ed_mask" not in missing:
            _save(_shape_mask(labels[..., ed], p, True), files["ed_mask"])
        if "es_mask" not in missing:
            _save(_shape_mask(_es_mask(labels, ed, es, p), p, False), files["es_mask"])
        if "info" in missing:
            continue
        if "info_cfg" in p:
            text = p["info_cfg"]
        else:
            height, weight = _height_weight(p)
            text = (
                f"ED: {ed + 1}\nES: {es + 1}\nGroup: {p.get('group', _default_diagnosis_code(p))}\n"
                f"Height: {_fmt(height)}\nNbFrame: {n}\nWeight: {_fmt(weight)}\n"
            )
        if p.get("info_crlf"):
            text = text.replace("\n", "\r\n")
        files["info"].write_bytes(text.encode(p.get("info_encoding", "utf-8")))
    return result


def make_patients(
    n: int, *, prefix: str = "", start: int = 1000001, hf_every: int = 4
) -> list[dict]:
    """`n` varied, valid patients (ids ``prefix + str(start + i)``), every `hf_every`-th HF."""
    ages = (45.0, 62.0, 74.0, 58.5, 69.9, 70.0)
    bmis = (22.0, 27.5, 31.0, 24.9, 30.0, 25.0)
    return [
        {
            "id": f"{prefix}{start + i}",
            "sex": ("female", "male")[i % 2],
            "age": ages[i % len(ages)],
            "bmi": bmis[i % len(bmis)],
            "diagnosis": "hf" if i % hf_every == hf_every - 1 else "healthy",
            "es": 3 + (i % 3),
        }
        for i in range(n)
    ]


UKB_HEADER = "eid,31-0.0,21003-2.0,21001-2.0,41270-0.0"


def entries_by_id(result):
    """A reader's scan result: its patient entries by id."""
    return {e.patient_id: e for e in result.entries}


def quarantine_rows(result):
    """A reader's scan result: its quarantine rows by (patient id, reason)."""
    return {(q.patient_id, q.reason): q for q in result.quarantine}


def validate_scan(scan):
    """(cohort, every quarantine row): the reader's rows and then validation's, as the cohort asset
    puts them together."""
    import pandas as pd

    from cardio_assets.cohort.validation import validate_entries

    cohort, quarantine = validate_entries(scan.entries)
    reader_rows = pd.DataFrame([q.as_dict() for q in scan.quarantine], columns=quarantine.columns)
    return cohort, pd.concat([reader_rows, quarantine], ignore_index=True)
