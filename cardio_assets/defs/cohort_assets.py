"""Cohort assets: source -> cohort (+ quarantine) -> patient splits -> subgroup cells."""


import pandas as pd
from dagster import AssetExecutionContext, AssetOut, MetadataValue, Output, asset, multi_asset

from cardio_assets.cohort.cell_counts import summarize_cells, without_cell_counts
from cardio_assets.cohort.sources import describe_real_source, prepare_phantom, scan_source
from cardio_assets.cohort.splits import split_patients
from cardio_assets.cohort.validation import drop_duplicate_ids, quarantine_frame, validate_entries
from cardio_assets.defs.images import png_markdown
from cardio_assets.defs.k8s import cpu_op_tags
from cardio_assets.defs.metadata import table_metadata
from cardio_assets.defs.resources import SOURCES, PipelineSettings
from cardio_assets.defs.versions import CODE_VERSION, data_version
from cardio_assets.generation.synthesis import privacy_salt
from cardio_assets.phantom.scanner_grid import write_scanner_grid


@asset(code_version=CODE_VERSION, group_name="cohort", op_tags=cpu_op_tags())
def cohort_source(context: AssetExecutionContext, settings: PipelineSettings) -> dict:
    """What to read: the built-in phantom (generated here on first run) or a real cohort's folder."""
    if settings.source not in SOURCES:
        raise ValueError(f"unknown source {settings.source!r}; choose one of {SOURCES}")
    # the lake's salt for source-patient hashes, made here, upstream of everything: the 36 synthetic
    # partitions read it and, running at once on a fresh lake, would each make their own
    privacy_salt(settings.lake_dir())
    metadata = {}
    if settings.source == "phantom":
        profile = settings.get_profile()
        description = prepare_phantom(settings.lake_dir(), profile.name, profile.phantom, settings.n_workers())
        grid = write_scanner_grid(profile.phantom, profile.frames, settings.reports_dir() / "phantom_scanners.png")
        metadata["scanners"] = MetadataValue.md(png_markdown(grid, "One patient on every phantom scanner"))
        metadata["patients_per_vendor"] = MetadataValue.json(description["phantom_manifest"]["counts"]["study"]["per_vendor"])
    else:
        description = describe_real_source(settings.source, settings.source_root, settings.metadata_csv)
    context.add_output_metadata({
        "source": settings.source,
        "folders": MetadataValue.json([p["root"] for p in description["parts"]]),
        **metadata,
    })
    return description


@multi_asset(
    group_name="cohort",
    op_tags=cpu_op_tags(),
    outs={
        "cohort": AssetOut(code_version=CODE_VERSION, description="One row per usable patient: attributes, cell, files, ED/ES frames, geometry."),
        "cohort_quarantine": AssetOut(code_version=CODE_VERSION, description="Patients left out, each with the file and the reason."),
    },
)
def cohort(context: AssetExecutionContext, settings: PipelineSettings, cohort_source: dict):
    scan = scan_source(cohort_source, settings.diagnosis_overrides(), ukbb_instance_fallback=settings.ukbb_instance_fallback)
    context.log.info(f"validating {len(scan.entries)} patients with {settings.n_workers()} workers")
    table, bad_volumes = validate_entries(scan.entries, workers=settings.n_workers())
    table, duplicates = drop_duplicate_ids(table)
    quarantine = pd.concat(
        [quarantine_frame([q.as_dict() for q in scan.quarantine]), bad_volumes, duplicates], ignore_index=True
    )
    for row in quarantine.itertuples():
        context.log.warning(f"quarantined: {row.detail} [{row.reason}]")
    yield Output(table, output_name="cohort", data_version=data_version(table), metadata={
        "n_patients": len(table),
        "n_with_cell": int(table["cell"].notna().sum()),
        # kept without a cell (missing sex, age, BMI or diagnosis): split, never in frames
        "n_without_cell": int(table["cell"].isna().sum()),
        "without_cell_by_reason": MetadataValue.json(without_cell_counts(table)),
        "n_hf": int((table["diagnosis"] == "hf").sum()),
        "by_subset": MetadataValue.json(table["subset"].value_counts().to_dict()),
        "by_vendor": MetadataValue.json(table["vendor"].fillna("unknown").value_counts().to_dict()),
        "by_site": MetadataValue.json(table["site"].fillna("unknown").value_counts().to_dict()),
    })
    yield Output(quarantine, output_name="cohort_quarantine", data_version=data_version(quarantine), metadata={
        "n_quarantined": len(quarantine),
        "by_reason": MetadataValue.json(quarantine["reason"].value_counts().to_dict()),
        "preview": table_metadata(quarantine.head(20)),
    })


@asset(code_version=CODE_VERSION, group_name="cohort", op_tags=cpu_op_tags())
def patient_splits(settings: PipelineSettings, cohort: pd.DataFrame) -> Output[pd.DataFrame]:
    """By patient: 20% test, 20% of the rest validation, stratified by cell; held-out cohort apart;
    the out-of-distribution vendors or sites apart from everything (`cohort.ood`)."""
    ood = settings.ood_policy()
    splits = split_patients(cohort, seed=settings.seed, ood=ood)
    return Output(splits, data_version=data_version(splits), metadata={
        "seed": settings.seed,
        "ood_holdout": str(ood) if ood else "none",
        "counts": MetadataValue.json(splits["split"].value_counts().to_dict()),
        "n_without_cell": int(splits["cell"].isna().sum()),
    })


@asset(code_version=CODE_VERSION, group_name="cohort", op_tags=cpu_op_tags())
def subgroup_cells(cohort: pd.DataFrame, patient_splits: pd.DataFrame) -> Output[pd.DataFrame]:
    """The 36 sex x age x BMI x diagnosis cells: counts per split, HF prevalence, sampling weights."""
    table = summarize_cells(cohort, patient_splits)
    return Output(table, data_version=data_version(table), metadata={
        "empty_cells": int((table["n_patients"] == 0).sum()),
        "n_without_cell": int(cohort["cell"].isna().sum()),  # not in any cell's counts
        "table": table_metadata(table),
    })
