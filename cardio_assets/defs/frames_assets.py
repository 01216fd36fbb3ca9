"""The `frames` asset: the paper's ED/ES images and control masks, one partition per cell."""


from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from cardio_assets.defs.k8s import cpu_op_tags
from cardio_assets.defs.partitions import cell_partitions
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.defs.versions import CODE_VERSION, data_version
from cardio_assets.frames.cell_frames import build_cell_frames
from cardio_assets.lake.mirror import fetched
from cardio_assets.lake.values import FrameSet


@asset(code_version=CODE_VERSION, group_name="frames", partitions_def=cell_partitions, op_tags=cpu_op_tags())
def frames(
    context: AssetExecutionContext, settings: PipelineSettings, cohort: pd.DataFrame, patient_splits: pd.DataFrame
) -> Output[FrameSet]:
    """R = ED, G = ES, B = ED of a short-axis slice, cropped around the heart; 9 per training patient, 1 otherwise."""
    cell = context.partition_key
    patients = cohort[cohort["cell"] == cell].merge(patient_splits[["patient_id", "split"]], on="patient_id")
    spec = settings.get_profile().frames
    # a phantom in a lake on object storage: this cell's patient folders, if another machine wrote them
    for path in {p for column in ("image_path", "ed_mask_path", "es_mask_path") for p in patients[column].dropna()}:
        fetched(Path(path).parent)
    result = build_cell_frames(patients, spec, workers=settings.n_workers())
    return Output(result, data_version=data_version(result), metadata={
        "n_patients": len(patients),
        "n_images": len(result),
        "images_per_split": MetadataValue.json(result.index["split"].value_counts().to_dict()),
        "size": spec.size,
        "crop_px": spec.crop_px,
    })
