"""Downstream assets: classifiers under six strategies, and the fairness and realism reports."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, AssetOut, MetadataValue, Output, asset, multi_asset

from cardio_assets.classify.attributes import ATTRIBUTES, AttributePredictor
from cardio_assets.classify.model import PenultimateFeatures
from cardio_assets.classify.run_store import read_run
from cardio_assets.classify.strategies import STRATEGIES, STRATEGY_NAMES, ImageSet, combine_runs, run_strategies
from cardio_assets.classify.train import per_image
from cardio_assets.cohort.training_patients import CLASSIFIER_FOLDER, write_training_patients
from cardio_assets.defs.automation import AFTER_REGENERATION
from cardio_assets.defs.check_rules import runs_that_ran, skipped_strategies
from cardio_assets.defs.gpu import GPU_POOL, GpuResource
from cardio_assets.defs.images import gather, png_markdown
from cardio_assets.defs.k8s import cpu_op_tags, gpu_op_tags
from cardio_assets.defs.metadata import table_metadata
from cardio_assets.defs.partitions import strategy_partitions
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.defs.versions import CODE_VERSION
from cardio_assets.generation import Sampler
from cardio_assets.lake.mirror import fetched
from cardio_assets.metrics.attribute_fidelity import attribute_fidelity
from cardio_assets.metrics.fairness import fairness_metrics
from cardio_assets.metrics.fairness_report import write_fairness_report
from cardio_assets.metrics.fairness_tables import report_strategies
from cardio_assets.metrics.qc_summary import qc_by_cell, qc_by_slice
from cardio_assets.metrics.realism import (
    diversity_table,
    extractor_sanity,
    inception_extractor,
    memorisation_check,
    module_extractor,
    realism_table,
    scanner_shift_table,
)
from cardio_assets.metrics.realism_report import table1, write_realism_report
from cardio_assets.metrics.sharpness import high_frequency_energy, sharpness_table
from cardio_assets.metrics.shift import shift_table
from cardio_assets.metrics.table2 import table2
from cardio_assets.phantom.ceiling import accuracy_against_ceiling

ALL_FRAMES = AssetIn("frames", partition_mapping=AllPartitionMapping())
ALL_SYNTHETIC = AssetIn("synthetic_frames", partition_mapping=AllPartitionMapping())
ALL_QC_LOGS = AssetIn("synthetic_qc_log", partition_mapping=AllPartitionMapping())


def _synthetic_set(synthetic_frames: dict) -> ImageSet | None:
    kept = [fs for fs in synthetic_frames.values() if len(fs)]
    return ImageSet.concat(kept) if kept else None


@asset(code_version=CODE_VERSION, group_name="classifiers", pool=GPU_POOL, op_tags=gpu_op_tags(), partitions_def=strategy_partitions,
       ins={"frames": ALL_FRAMES, "synthetic_frames": ALL_SYNTHETIC}, automation_condition=AFTER_REGENERATION)
def classifier_strategy_runs(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict,
                             synthetic_frames: dict) -> pd.DataFrame:
    """One training strategy (the partition), every seed: one row per run, naming its folder in the run store.

    Each strategy is its own step, so a cluster trains them on separate GPUs; a run finished
    before on the same data and settings is read from the store, not trained again."""
    name = context.partition_key
    config = gpu.apply(settings.get_profile().classifier)
    if settings.resnet_weights:
        config = dataclasses.replace(config, pretrained_weights=settings.resnet_weights)
    real, _ = gather(frames)
    synthetic = _synthetic_set(synthetic_frames)
    if STRATEGIES[name].synthetic_multiple and synthetic is None:
        context.log.warning(f"no synthetic image passed QC: strategy {name} cannot run and is reported empty")
        return pd.DataFrame([{"strategy": name, "skipped_reason": "no synthetic images passed QC"}])
    _, runs, _ = run_strategies([name], real, synthetic, config, seeds=range(config.n_seeds), log=context.log.info,
                                store=fetched(settings.models_dir() / CLASSIFIER_FOLDER / "runs"))
    context.add_output_metadata({"seeds": config.n_seeds, "reused_stored_runs": int(runs["reused_stored_run"].sum()),
                                 "val_balanced_accuracy": MetadataValue.json(runs["val_balanced_accuracy"].round(4).tolist())})
    return runs


@multi_asset(
    group_name="classifiers",
    op_tags=cpu_op_tags(),
    ins={"classifier_strategy_runs": AssetIn(partition_mapping=AllPartitionMapping())},
    outs={
        "classifier_predictions": AssetOut(code_version=CODE_VERSION, description="Scores of every run on the real test split and the balanced held-out cohort.",
                                           automation_condition=AFTER_REGENERATION),
        "classifier_runs": AssetOut(code_version=CODE_VERSION, description="One row per strategy x seed: data sizes, weights provenance, best epoch, threshold.",
                                    automation_condition=AFTER_REGENERATION),
    },
)
def classifier_runs(context: AssetExecutionContext, settings: PipelineSettings, classifier_strategy_runs: dict):
    """The six strategies' runs together: their predictions from the run store, and the patients each trained on."""
    per_strategy = pd.concat([classifier_strategy_runs[n] for n in STRATEGY_NAMES if n in classifier_strategy_runs], ignore_index=True)
    store = settings.models_dir() / CLASSIFIER_FOLDER / "runs"
    results = {folder: read_run(fetched(store / folder)) for folder in runs_that_ran(per_strategy)["stored_run"]}
    missing = [folder for folder, result in results.items() if result is None]
    if missing:
        raise FileNotFoundError(f"classifier runs named by classifier_strategy_runs are not in {store}: {missing}")
    predictions, runs, patients = combine_runs(list(results.values()))
    # kept for the leakage check (no_test_patient_in_training on classifier_runs)
    write_training_patients(settings.models_dir() / CLASSIFIER_FOLDER, patients)
    skipped = skipped_strategies(per_strategy)
    if skipped:
        runs = pd.concat([runs, per_strategy[per_strategy["strategy"].isin(skipped)][["strategy", "skipped_reason"]]], ignore_index=True)
    names = [n for n in STRATEGY_NAMES if n in set(runs["strategy"]) and n not in skipped]
    yield Output(predictions, output_name="classifier_predictions", metadata={"n_rows": len(predictions)})
    yield Output(runs, output_name="classifier_runs", metadata={
        "strategies": MetadataValue.json(names), "skipped": MetadataValue.json(skipped),
        "seeds": int(runs["seed"].dropna().nunique()),
    })


@asset(code_version=CODE_VERSION, group_name="reports", op_tags=cpu_op_tags(), automation_condition=AFTER_REGENERATION)
def fairness_report(context: AssetExecutionContext, settings: PipelineSettings, classifier_predictions: pd.DataFrame, classifier_runs: pd.DataFrame) -> pd.DataFrame:
    """Table 2 and more: balanced accuracy per group, gaps, underdiagnosis, AUROC, bootstrap CIs, paired comparisons."""
    config = settings.get_profile().classifier
    fairness = fairness_metrics(classifier_predictions, bootstrap_n=config.bootstrap_n, seed=settings.seed)
    out = settings.reports_dir() / "fairness"
    paths = write_fairness_report(fairness, out, runs=classifier_runs)
    plots = {name: p for name, p in paths.items() if str(p).endswith(".png")}
    metadata = {
        "report": MetadataValue.path(str(paths["report"])),
        "table_2_test": table_metadata(table2(fairness, "test"), index=True),
        "runs": table_metadata(runs_summary(classifier_runs)),
    }
    for evaluation_set in ("heldout", "ood_test", "ood_heldout"):
        if (classifier_predictions["evaluation_set"] == evaluation_set).any():
            metadata[f"table_2_{evaluation_set}"] = table_metadata(table2(fairness, evaluation_set), index=True)
    if "distribution_shift_ood_test" in paths:
        metadata["in_vs_out_of_distribution"] = table_metadata(
            shift_table(fairness, "test", "ood_test", report_strategies(fairness, None)))
    for name, path in plots.items():
        metadata[f"plot_{name}"] = MetadataValue.md(png_markdown(Path(path), name))
        metadata[f"plot_{name}_file"] = MetadataValue.path(str(path))
    context.add_output_metadata(metadata)
    return fairness


@asset(code_version=CODE_VERSION, group_name="reports", pool=GPU_POOL,
       ins={"frames": ALL_FRAMES, "synthetic_frames": ALL_SYNTHETIC, "synthetic_qc_log": ALL_QC_LOGS},
       op_tags=gpu_op_tags(), automation_condition=AFTER_REGENERATION)
def realism_report(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict,
                   synthetic_frames: dict, synthetic_qc_log: dict, attribute_predictors: dict, controlnet: dict) -> pd.DataFrame:
    """Table 1: FID/KID between real subgroups and real vs synthetic of a subgroup; intra-prompt diversity."""
    profile = settings.get_profile()
    accuracy = memorisation = None
    predictor = AttributePredictor.load(fetched(settings.lake_path(attribute_predictors["folder"])), attribute_predictors["image_size"])
    if settings.inception_weights:
        extractor = inception_extractor(settings.inception_weights)
    else:
        accuracy = accuracy_against_ceiling(attribute_predictors["validation"], attribute_predictors.get("ceiling", {}),
                                            attribute_predictors.get("ceiling_all_parameters") or None)
        extractor = module_extractor(PenultimateFeatures(predictor.model),
                                     "penultimate layer of the attribute predictors' ResNet-18, trained here on real frames (no InceptionV3 weights configured)")
    real, _ = gather(frames, splits=("train",))
    synthetic = _synthetic_set(synthetic_frames)
    table = realism_table(real, synthetic, extractor, n=profile.fid_images, repeats=profile.fid_repeats, seed=settings.seed, log=context.log.info)
    sanity = extractor_sanity(real, extractor, n=profile.fid_images, seed=settings.seed)
    context.log.info(f"feature extractor sanity (FID): {dict(zip(sanity['check'], sanity['fid'].round(2)))}")
    if accuracy is not None:  # the extractor trained on the real training frames that Table 1 compares
        seen, _ = gather(frames, splits=("train",), central_only=True)
        unseen, _ = gather(frames, splits=("test",))
        memorisation = memorisation_check(seen, unseen, extractor, n=profile.fid_images, seed=settings.seed)
        context.log.info(f"feature extractor memorisation (FID): {dict(zip(memorisation['check'], memorisation['fid'].round(2)))}")
    # real frames the predictors never trained on, against the kept synthetic frames
    unseen_real, _ = gather(frames, splits=("val", "test"))
    as_drawn = sharpness = None
    if synthetic is not None:
        (real_p, real_energy), (synthetic_p, synthetic_energy) = (
            per_image(images, predictor.probabilities, high_frequency_energy) for images in (unseen_real.images, synthetic.images))
        as_drawn = attribute_fidelity(real_p, unseen_real.index, synthetic_p, synthetic.index, attributes=tuple(ATTRIBUTES))
        context.log.info("attributes as drawn (synthetic minus real mean own-class probability): "
                         + ", ".join(f"{a}={c} {d:+.3f}" for a, c, d in zip(as_drawn["attribute"], as_drawn["class"], as_drawn["difference"])))
        sharpness = sharpness_table(real_energy, unseen_real.index, synthetic_energy, synthetic.index)
        context.log.info(f"sharpness, synthetic over real: {dict(zip(sharpness['frame'], sharpness['synthetic_over_real'].round(3)))}")
    qc_log = pd.concat(list(synthetic_qc_log.values()), ignore_index=True) if synthetic_qc_log else None
    qc, qc_slices = (qc_by_cell(qc_log), qc_by_slice(qc_log)) if qc_log is not None else (None, None)
    if qc is not None and len(qc):
        context.log.info(f"QC per cell, lowest: {qc.iloc[0][['cell', 'pass_rate', 'source_frames_pass_rate']].to_dict()}; "
                         f"by source slice offset: {dict(zip(qc_slices['source_slice_offset'], qc_slices['pass_rate'].round(3)))}")
    diversity = _diversity(settings, gpu, frames, controlnet, profile)
    held_out, _ = gather(frames, splits=("ood_test", "ood_heldout"))
    shift = None
    if len(held_out):  # a vendor or site held out: how far it lies from the training scanners and the synthetic frames
        training_scanners, _ = gather(frames, splits=("train",), central_only=True)
        shift = scanner_shift_table(training_scanners, held_out, synthetic, extractor, n=profile.fid_images,
                                    repeats=profile.fid_repeats, seed=settings.seed)
        context.log.info(f"scanner shift (FID): {dict(zip(shift['comparison'], shift['fid_mean'].round(2)))}")
    paths = write_realism_report(table, settings.reports_dir() / "realism", diversity=diversity, extractor_description=extractor.description,
                                 sanity=sanity, extractor_accuracy=accuracy, scanner_shift=shift, memorisation=memorisation,
                                 sampling=profile.diffusion.sampling_summary(), attributes_as_drawn=as_drawn,
                                 sharpness=sharpness, qc=qc, qc_slices=qc_slices)
    context.add_output_metadata({
        "report": MetadataValue.path(str(paths["report"])),
        "table_1": table_metadata(table1(table)),
        "feature_extractor": extractor.description,
        "feature_extractor_sanity": table_metadata(sanity),
        **({"attributes_as_drawn": table_metadata(as_drawn.round(3))} if as_drawn is not None else {}),
        **({"sharpness": table_metadata(sharpness.round(4))} if sharpness is not None else {}),
        **({"qc_by_cell": table_metadata(qc.round(3)), "qc_by_slice": table_metadata(qc_slices.round(3))} if qc is not None else {}),
        "intra_prompt_ms_ssim": float(diversity["ms_ssim"].mean()) if len(diversity) else float("nan"),
        **({"scanner_shift": table_metadata(shift)} if shift is not None else {}),
        **({"feature_extractor_memorisation": table_metadata(memorisation)} if memorisation is not None else {}),
    })
    return table


def _diversity(settings, gpu, frames, controlnet, profile) -> pd.DataFrame:
    """Images from one mask and prompt with different seeds; mean pairwise MS-SSIM per group."""
    config = gpu.apply(profile.diffusion)
    real, controls = gather(frames, splits=("train",), central_only=True)
    rows = np.random.default_rng(settings.seed).permutation(len(real))[: profile.diversity_masks]
    masks = controls.frames().take(rows).astype(np.uint8)
    prompts = real.index["prompt"].iloc[rows].tolist()
    k = profile.diversity_seeds
    sampler = Sampler(fetched(settings.lake_path(controlnet["backbone"])), fetched(settings.lake_path(controlnet["folder"])), config)
    images = sampler.generate(np.repeat(masks, k, axis=0), [p for p in prompts for _ in range(k)],
                              [settings.seed + 1000 + j for _ in prompts for j in range(k)], log=None)
    index = pd.DataFrame({"prompt": [p for p in prompts for _ in range(k)], "mask_id": np.repeat(np.arange(len(prompts)), k),
                          "cell": [c for c in real.index["cell"].iloc[rows] for _ in range(k)]})
    return diversity_table(ImageSet(images, index), by=("prompt", "mask_id"))


RUN_COLUMNS = ("strategy", "seed", "n_train_real", "n_train_synthetic", "alpha", "best_epoch", "val_balanced_accuracy", "val_auroc",
               "threshold", "model_description", "skipped_reason")


def runs_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns of the run records a reader compares first (all of them are in runs.csv)."""
    return runs[[c for c in RUN_COLUMNS if c in runs.columns]]
