"""Write the phantom cohort to disk in the UK Biobank layout.

One reader then serves the phantom and real UK Biobank data alike::

    <out_dir>/study/<eid>/sa.nii.gz          4D cine int16 (X, Y, Z, T)
    <out_dir>/study/<eid>/seg_sa_ED.nii.gz   3D uint8 labels at ED (frame 0)
    <out_dir>/study/<eid>/seg_sa_ES.nii.gz   3D uint8 labels at ES (smallest LV cavity)
    <out_dir>/study/metadata.csv             eid,31-0.0,21003-2.0,21001-2.0,41270-0.0,vendor,site
    <out_dir>/study/truth.csv                ground truth and every per-patient parameter
    <out_dir>/heldout/...                    the same, for the balanced held-out cohort
    <out_dir>/manifest.json                  config, its hash, counts; written last

Generation is deterministic per patient (its image depends only on config and eid), so
any number of workers gives byte-identical files, and an interrupted run resumes: each
patient folder and each CSV is written atomically (:mod:`cardio_assets.lake.atomic`), a
patient whose three files this config already wrote (their headers carry the config
hash) is skipped, and manifest.json, written last, is the only sign that a cohort is
complete.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np

from cardio_assets.cohort.cells import CELL_KEYS
from cardio_assets.lake.atomic import atomic_dir, atomic_write_text, remove_leftovers
from cardio_assets.phantom.anatomy import PatientParams, sample_anatomy
from cardio_assets.phantom.config import PHANTOM_VERSION, PhantomConfig
from cardio_assets.phantom.geometry import frame_seconds
from cardio_assets.phantom.population import (
    PatientAttributes,
    sample_heldout_attributes,
    sample_study_attributes,
)
from cardio_assets.phantom.render import render_patient
from cardio_assets.phantom.truth import patient_truth, truth_columns

SUBSETS = ("study", "heldout")
IMAGE_FILE, ED_FILE, ES_FILE = "sa.nii.gz", "seg_sa_ED.nii.gz", "seg_sa_ES.nii.gz"
PATIENT_FILES = (IMAGE_FILE, ED_FILE, ES_FILE)
# UK Biobank field ids, then where the patient was scanned (a multi-site export's own columns)
METADATA_COLUMNS = ("eid", "31-0.0", "21003-2.0", "21001-2.0", "41270-0.0", "vendor", "site")
MANIFEST = "manifest.json"


def _csv_text(rows: list[dict], columns: list[str] | tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# One patient
# ---------------------------------------------------------------------------------------
def _nifti(data: np.ndarray, affine: np.ndarray, descrip: str, dt: float | None) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    header = img.header
    header.set_xyzt_units("mm", "sec")
    if dt is not None:
        header.set_zooms(header.get_zooms()[:3] + (dt,))
    header["descrip"] = descrip.encode()[:79]
    return img


def _provenance(config: PhantomConfig, eid: str) -> str:
    """Header ``descrip`` of every file: which config and patient wrote it."""
    return f"cardio-assets phantom {config.config_hash()} eid {eid}"


def _written_for(folder: Path, config: PhantomConfig, eid: str) -> bool:
    """All three files exist and their headers say this config wrote them.

    Reads headers only (a few hundred bytes each), so an interrupted run resumes cheaply,
    while files left by a different config, or by anything else, are rewritten.
    """
    tag = _provenance(config, eid).encode()
    for name in PATIENT_FILES:
        path = folder / name
        if not path.is_file():
            return False
        try:
            descrip = bytes(nib.load(path).header["descrip"])
        except Exception:  # unreadable or truncated: rewrite it
            return False
        if not descrip.startswith(tag):
            return False
    return True


def _write_patient(params: PatientParams, config: PhantomConfig, folder: Path) -> dict:
    """Render and write one patient unless this config already wrote it; return its truth row."""
    if _written_for(folder, config, params.eid):
        truth, _, _ = patient_truth(params, config)  # labels only, no image: cheap
        return truth
    cine, ed_mask, es_mask, affine, truth = render_patient(params, config)
    tag = _provenance(config, params.eid)
    # the three files appear together: a patient folder is complete or absent
    with atomic_dir(folder) as tmp:
        nib.save(_nifti(cine, affine, tag, frame_seconds(params, config)), tmp / IMAGE_FILE)
        nib.save(_nifti(ed_mask, affine, tag + " ED frame 0", None), tmp / ED_FILE)
        nib.save(_nifti(es_mask, affine, tag + f" ES frame {truth['es_frame']}", None), tmp / ES_FILE)
    return truth


def _write_chunk(args: tuple[list[PatientAttributes], PhantomConfig, str]) -> list[dict]:
    attrs_list, config, subset_dir = args
    base = Path(subset_dir)
    return [_write_patient(sample_anatomy(a, config), config, base / a.eid) for a in attrs_list]


# ---------------------------------------------------------------------------------------
# The cohort
# ---------------------------------------------------------------------------------------
def cohort_attributes(config: PhantomConfig) -> dict[str, list[PatientAttributes]]:
    """Attributes of both cohorts, before any rendering (cheap)."""
    return {
        "study": sample_study_attributes(config.n_patients, config.hf_prevalence, config.seed),
        "heldout": sample_heldout_attributes(config.heldout_per_cell, config.seed),
    }


def metadata_row(a: PatientAttributes) -> dict:
    """One metadata.csv row with UK Biobank field ids."""
    return {"eid": a.eid, "31-0.0": 1 if a.sex == "male" else 0,
            "21003-2.0": f"{a.age:.1f}", "21001-2.0": f"{a.bmi:.1f}", "41270-0.0": a.icd10,
            "vendor": a.vendor, "site": a.site}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_complete(out: Path, manifest: dict | None, config: PhantomConfig) -> bool:
    if not manifest or manifest.get("config_hash") != config.config_hash():
        return False
    for subset in SUBSETS:
        sub = out / subset
        if not ((sub / "metadata.csv").is_file() and (sub / "truth.csv").is_file()):
            return False
        for eid in manifest.get("eids", {}).get(subset, []):
            if not all((sub / eid / name).is_file() for name in PATIENT_FILES):
                return False
    return True


def _remove_stale_patients(sub: Path, keep: set[str]) -> int:
    """Delete patient folders (digit names only) that the current config does not hold."""
    removed = 0
    if sub.is_dir():
        for child in sub.iterdir():
            if child.is_dir() and child.name.isdigit() and child.name not in keep:
                shutil.rmtree(child)
                removed += 1
    return removed


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _write_patients(people: list[PatientAttributes], config: PhantomConfig, sub: Path,
                    n_workers: int) -> list[dict]:
    """Write every patient of one subset under ``sub``; return their truth rows, in order."""
    chunk_size = max(1, min(32, len(people) // (4 * n_workers) or 1))
    jobs = [(chunk, config, str(sub)) for chunk in _chunks(people, chunk_size)]
    rows: list[dict] = []
    if n_workers == 1 or len(jobs) <= 1:
        for job in jobs:
            rows.extend(_write_chunk(job))
    else:
        # spawn: safe in processes that already hold threads (Dagster, torch)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            for chunk_rows in pool.map(_write_chunk, jobs):
                rows.extend(chunk_rows)
    return rows


def generate_phantom_cohort(out_dir: str | Path, config: PhantomConfig, workers: int = 1) -> dict:
    """Write (or reuse) the phantom cohort under ``out_dir``; return the manifest dict.

    If ``out_dir/manifest.json`` holds this config's hash and every file is present,
    nothing is written. Otherwise patients whose three files this config already wrote
    (an interrupted run; checked on the NIfTI headers) are skipped, the rest rendered with
    ``workers`` processes (spawned: call from under ``if __name__ == "__main__"`` in a
    script), patient folders the config does not hold are removed, the CSVs rewritten,
    and manifest.json written last.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    existing = _read_json(manifest_path)
    if _is_complete(out, existing, config):
        return existing

    if manifest_path.exists():
        manifest_path.unlink()  # from here on, the folder does not look complete
    remove_leftovers(out)

    started = time.perf_counter()
    attrs = cohort_attributes(config)
    truths: dict[str, list[dict]] = {}
    removed = 0
    n_workers = max(1, int(workers))
    for subset in SUBSETS:
        sub = out / subset
        sub.mkdir(parents=True, exist_ok=True)
        people = attrs[subset]
        removed += _remove_stale_patients(sub, {a.eid for a in people})
        rows = _write_patients(people, config, sub, n_workers)
        truths[subset] = rows
        atomic_write_text(sub / "metadata.csv", _csv_text([metadata_row(a) for a in people], METADATA_COLUMNS))
        atomic_write_text(sub / "truth.csv", _csv_text(rows, truth_columns()))

    manifest = _manifest(out, config, attrs, truths, time.perf_counter() - started, removed)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return manifest


def _manifest(out: Path, config: PhantomConfig, attrs: dict[str, list[PatientAttributes]],
              truths: dict[str, list[dict]], seconds: float, removed: int) -> dict:
    counts: dict[str, dict] = {}
    for subset in SUBSETS:
        rows = truths[subset]
        per_cell = {key: 0 for key in CELL_KEYS}
        for row in rows:
            per_cell[row["cell"]] += 1
        counts[subset] = {
            "patients": len(rows),
            "hf": sum(int(r["hf"]) for r in rows),
            "healthy": sum(1 - int(r["hf"]) for r in rows),
            "per_cell": per_cell,
            "per_vendor": {v: sum(r["vendor"] == v for r in rows) for v in sorted({r["vendor"] for r in rows})},
            "per_site": {v: sum(r["site"] == v for r in rows) for v in sorted({r["site"] for r in rows})},
        }
    n_bytes = sum(f.stat().st_size for s in SUBSETS for f in (out / s).rglob("*.nii.gz"))
    n_all = sum(len(attrs[s]) for s in SUBSETS)
    return {
        "generator": "cardio_assets.phantom",
        "phantom_version": PHANTOM_VERSION,
        "config": asdict(config),
        "config_hash": config.config_hash(),
        "layout": {"subsets": list(SUBSETS), "patient_files": list(PATIENT_FILES),
                   "metadata_columns": list(METADATA_COLUMNS), "ed_frame": 0,
                   "es_frame": "smallest LV cavity (truth.csv es_frame)",
                   "labels": {"0": "background", "1": "LV cavity", "2": "myocardium", "3": "RV cavity"}},
        "counts": counts,
        "eids": {s: [a.eid for a in attrs[s]] for s in SUBSETS},
        "bytes_nifti": n_bytes,
        "bytes_per_patient": round(n_bytes / n_all) if n_all else 0,
        "stale_patients_removed": removed,
        "seconds": round(seconds, 2),
    }
