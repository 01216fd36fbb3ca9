"""The conditioning ablation (Ktena et al.): a generator told the diagnosis alone against the main one,
told the diagnosis and the patient's sex, age and BMI; both judged in and out of distribution.

Not part of `make demo` (it trains a second ControlNet and its classifiers: 12 minutes on the
demo profile, 2 CPU cores); `python -m cardio_assets.run --ablation` runs it on a lake the demo made, the UI's
`ablation_job` too. The label-only generator uses the same backbone, training frames, masks,
steps and seeds as the main one; only the prompts differ. QC checks its images' masks only
(sex, age and BMI were not asked for). Both arms train the same classifier strategies with the
same seeds; the main arm's runs are read from the run store, not trained again.
"""

import dataclasses

import pandas as pd
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, AssetOut, MetadataValue, Output, asset, multi_asset

from cardio_assets.classify.strategies import ImageSet, run_strategies
from cardio_assets.cohort.cells import label_prompt
from cardio_assets.cohort.training_patients import CLASSIFIER_FOLDER
from cardio_assets.defs.generation_assets import synthesize_cell, train_controlnet_on
from cardio_assets.defs.gpu import GPU_POOL, GpuResource
from cardio_assets.defs.images import gather
from cardio_assets.defs.k8s import gpu_op_tags
from cardio_assets.defs.metadata import table_metadata
from cardio_assets.defs.partitions import cell_partitions
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.defs.versions import CODE_VERSION
from cardio_assets.lake.mirror import fetched
from cardio_assets.metrics.ablation_report import ABLATION_STRATEGIES, LABEL_ONLY_SUFFIX, write_ablation_report
from cardio_assets.metrics.fairness import fairness_metrics

ALL_FRAMES = AssetIn("frames", partition_mapping=AllPartitionMapping())
LABEL_ONLY_CONTROLNET = "controlnet_label_only"
LABEL_ONLY_RUNS = "classifiers_label_only/runs"


@asset(code_version=CODE_VERSION, group_name="ablation", pool=GPU_POOL, op_tags=gpu_op_tags(), ins={"frames": ALL_FRAMES})
def label_only_controlnet(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict,
                          diffusion_backbone: dict) -> dict:
    """The main ControlNet's recipe with prompts that hold the diagnosis alone."""
    images, controls = gather(frames, splits=("train",))
    prompts = [label_prompt(d) for d in images.index["diagnosis"]]
    out_dir, record, checkpoint_hash = train_controlnet_on(settings, gpu, images, controls, prompts, diffusion_backbone,
                                                           LABEL_ONLY_CONTROLNET, context.log.info)
    context.add_output_metadata({"steps": record.get("steps"), "checkpoint_hash": checkpoint_hash,
                                 "prompts": MetadataValue.json(sorted(set(prompts)))})
    return {"folder": settings.lake_relative(out_dir / "controlnet"), "backbone": diffusion_backbone["folder"], "checkpoint_hash": checkpoint_hash,
            "record": record}


@multi_asset(
    group_name="ablation",
    pool=GPU_POOL,
    op_tags=gpu_op_tags(),
    partitions_def=cell_partitions,
    ins={"frames": ALL_FRAMES},
    outs={
        "label_only_synthetic_frames": AssetOut(code_version=CODE_VERSION, description="One cell's synthetic frames from the label-only generator, tagged synthetic."),
        "label_only_synthetic_qc_log": AssetOut(code_version=CODE_VERSION, description="Every requested label-only image: QC outcome (masks only), provenance."),
    },
)
def label_only_synthetic_frames(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict,
                                label_only_controlnet: dict, attribute_predictors: dict):
    result, log, frames_metadata, log_metadata = synthesize_cell(context, settings, gpu, frames, label_only_controlnet,
                                                                 attribute_predictors, label_only=True)
    yield Output(result, output_name="label_only_synthetic_frames", metadata=frames_metadata)
    yield Output(log, output_name="label_only_synthetic_qc_log", metadata=log_metadata)


@asset(code_version=CODE_VERSION, group_name="ablation", pool=GPU_POOL, op_tags=gpu_op_tags(),
       ins={"frames": ALL_FRAMES, "synthetic_frames": AssetIn(partition_mapping=AllPartitionMapping()),
            "label_only_synthetic_frames": AssetIn(partition_mapping=AllPartitionMapping())})
def conditioning_ablation(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict,
                          synthetic_frames: dict, label_only_synthetic_frames: dict) -> pd.DataFrame:
    """Classifiers trained with each arm's synthetic frames, in and out of distribution: the fairness table of both."""
    config = gpu.apply(settings.get_profile().classifier)
    if settings.resnet_weights:
        config = dataclasses.replace(config, pretrained_weights=settings.resnet_weights)
    real, _ = gather(frames)
    # the main arm's runs are the main graph's (read, not trained again); the label-only arm keeps its own
    # store: a store keeps one run per strategy and seed, so sharing it would replace the main graph's runs
    stores = {"": fetched(settings.models_dir() / CLASSIFIER_FOLDER / "runs"),
              LABEL_ONLY_SUFFIX: fetched(settings.models_dir() / LABEL_ONLY_RUNS)}
    predictions = []
    for arm, synthetic_sets in (("", synthetic_frames), (LABEL_ONLY_SUFFIX, label_only_synthetic_frames)):
        kept = [fs for fs in synthetic_sets.values() if len(fs)]
        if not kept:
            raise ValueError(f"no synthetic image of the {'label-only' if arm else 'main'} generator passed QC: nothing to compare")
        names = ABLATION_STRATEGIES if not arm else [s for s in ABLATION_STRATEGIES if s != "real"]
        arm_predictions, _, _ = run_strategies(names, real, ImageSet.concat(kept), config, seeds=range(config.n_seeds),
                                               log=context.log.info, store=stores[arm])
        predictions.append(arm_predictions.assign(strategy=arm_predictions["strategy"] + arm))
    fairness = fairness_metrics(pd.concat(predictions, ignore_index=True), bootstrap_n=config.bootstrap_n, seed=settings.seed)
    qc = {arm: sum(len(fs) for fs in sets.values())
          for arm, sets in (("attributes", synthetic_frames), ("label only", label_only_synthetic_frames))}
    paths, summary = write_ablation_report(fairness, settings.reports_dir() / "ablation", qc)
    context.add_output_metadata({"report": MetadataValue.path(str(paths["report"])), "summary": table_metadata(summary),
                                 "synthetic_images_kept": MetadataValue.json(qc)})
    return fairness
