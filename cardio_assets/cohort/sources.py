"""Where a cohort comes from: the built-in phantom (generated on demand) or real data.

`describe_source` turns settings into a small JSON-able description of what to read;
`scan_source` runs the right reader(s) on it. The phantom is written in the UK Biobank
layout and read by the very same reader as real UK Biobank data.
"""

from __future__ import annotations

from pathlib import Path

from cardio_assets.cohort.readers import scan_acdc, scan_mms, scan_ukbb
from cardio_assets.cohort.readers.base import ScanResult, SourceMissingError
from cardio_assets.lake.mirror import fetched
from cardio_assets.phantom.config import PhantomConfig
from cardio_assets.phantom.generate import generate_phantom_cohort


def prepare_phantom(lake_dir: str | Path, profile_name: str, config: PhantomConfig, workers: int) -> dict:
    """Generate (or reuse) the phantom cohort for a profile; returns its source description."""
    # in a lake on object storage, what another machine generated is fetched, not rendered again
    out = fetched(Path(lake_dir) / "phantom" / f"{profile_name}-{config.config_hash()}")
    manifest = generate_phantom_cohort(out, config, workers=workers)
    return {
        "source": "phantom",
        "layout": "ukbb",
        "parts": [
            {"subset": "study", "root": str(out / "study"), "metadata_csv": str(out / "study" / "metadata.csv")},
            {"subset": "heldout", "root": str(out / "heldout"), "metadata_csv": str(out / "heldout" / "metadata.csv")},
        ],
        "phantom_manifest": manifest,
    }


def describe_real_source(source: str, root: str, metadata_csv: str) -> dict:
    """Check a real source's paths exist; fail with where we looked if not."""
    if not root:
        raise SourceMissingError(f"source {source!r} needs a folder: set CARDIO_SOURCE_ROOT (or source_root in the UI)")
    if not Path(root).is_dir():
        raise SourceMissingError(f"source {source!r}: looked for the cohort folder at {Path(root).resolve()} and found none")
    if source in ("ukbb", "mms"):
        if not metadata_csv or not Path(metadata_csv).is_file():
            where = Path(metadata_csv).resolve() if metadata_csv else "(CARDIO_METADATA_CSV is not set)"
            raise SourceMissingError(f"source {source!r}: looked for the metadata CSV at {where} and found none")
    return {"source": source, "layout": source, "parts": [{"subset": "study", "root": root, "metadata_csv": metadata_csv}]}


def scan_source(description: dict, diagnosis_map: dict | None = None, ukbb_instance_fallback: bool = False) -> ScanResult:
    """Run the reader for each part of a source description and merge the results."""
    entries, quarantine = [], []
    for part in description["parts"]:
        layout = description["layout"]
        if layout == "ukbb":
            result = scan_ukbb(part["root"], part["metadata_csv"], subset=part["subset"], source=description["source"],
                               instance_fallback=ukbb_instance_fallback)
        elif layout == "mms":
            result = scan_mms(part["root"], part["metadata_csv"], diagnosis_map=diagnosis_map)
        elif layout == "acdc":
            result = scan_acdc(part["root"], diagnosis_map=diagnosis_map)
        else:
            raise ValueError(f"unknown layout {layout!r}")
        entries += result.entries
        quarantine += result.quarantine
    if not entries and not quarantine:
        roots = ", ".join(str(Path(p["root"]).resolve()) for p in description["parts"])
        raise SourceMissingError(f"source {description['source']!r}: no patients found in {roots}")
    return ScanResult(entries, quarantine)
