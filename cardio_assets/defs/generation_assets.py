"""Generator assets: backbone -> ControlNet -> attribute predictors -> synthetic frames per cell."""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from cardio_assets.classify.attributes import AttributePredictor, train_attribute_predictor
from cardio_assets.classify.strategies import ImageSet
from cardio_assets.cohort.cells import BMI_BANDS, Cell, label_prompt
from cardio_assets.cohort.training_patients import patient_roles, write_training_patients
from cardio_assets.defs.gpu import GPU_POOL, GpuResource, data_parallel_from_env
from cardio_assets.defs.images import gather, png_markdown, read_all
from cardio_assets.defs.k8s import gpu_op_tags
from cardio_assets.defs.metadata import table_metadata
from cardio_assets.defs.partitions import cell_partitions
from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.defs.versions import CODE_VERSION
from cardio_assets.generation import (
    Sampler,
    calibrate_thresholds,
    calibration_rows,
    generate_with_qc,
    load_backbone,
    make_check,
    sample_grid,
    train_controlnet_data_parallel,
    train_small_backbone,
)
from cardio_assets.generation.memorization import MEMORIZATION_RMS, NearestRealIndex
from cardio_assets.generation.synthesis import assemble_synthetic, plan_items, privacy_salt, prompt_for_cell, source_frames_pass
from cardio_assets.lake.atomic import atomic_dir
from cardio_assets.lake.fingerprint import rows_fingerprint
from cardio_assets.lake.mirror import fetched
from cardio_assets.phantom.ceiling import accuracy_against_ceiling, phantom_attribute_ceilings

ALL_FRAMES = AssetIn("frames", partition_mapping=AllPartitionMapping())


@asset(code_version=CODE_VERSION, group_name="generator", pool=GPU_POOL, op_tags=gpu_op_tags(), ins={"frames": ALL_FRAMES})
def diffusion_backbone(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict) -> dict:
    """The latent-diffusion backbone: local Stable Diffusion 2.1-base if configured, else trained here."""
    config = gpu.apply(settings.get_profile().diffusion)
    if settings.sd_backbone_dir:
        backbone = load_backbone(settings.sd_backbone_dir, device="cpu")  # fails loudly if the folder is not SD
        context.log.info(f"using the local backbone {settings.sd_backbone_dir} ({backbone.resolution} px), frozen")
        return {"folder": settings.lake_relative(settings.sd_backbone_dir), "trained_here": False, "resolution": backbone.resolution}
    images, _ = gather(frames, splits=("train",))
    folder = settings.models_dir() / "diffusion_backbone"
    context.log.info(f"no local backbone configured: training the {config.name} profile's small backbone on {len(images)} training frames")
    with atomic_dir(folder) as tmp:
        record = train_small_backbone(images.frames(), images.index["prompt"].tolist(), config, tmp, log=context.log.info,
                                      cells=images.index["cell"].tolist())
        write_training_patients(tmp, patient_roles("diffusion_backbone", "diffusion_backbone", images.index["patient_id"]))
    context.add_output_metadata({"trained_here": True, "seconds": record.get("seconds"), "device": gpu.describe()})
    return {"folder": settings.lake_relative(folder), "trained_here": True, "resolution": config.resolution, "record": record}


@asset(code_version=CODE_VERSION, group_name="generator", pool=GPU_POOL, op_tags=gpu_op_tags(gpus=data_parallel_from_env()),
       ins={"frames": ALL_FRAMES})
def controlnet(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict, diffusion_backbone: dict) -> dict:
    """ControlNet on the frozen backbone, conditioned on the prompt and the ED/ES masks; resumes after a kill."""
    config = gpu.apply(settings.get_profile().diffusion)
    images, controls = gather(frames, splits=("train",))
    out_dir, record, checkpoint_hash = train_controlnet_on(settings, gpu, images, controls, images.index["prompt"].tolist(),
                                                           diffusion_backbone, "controlnet", context.log.info)
    grids = sample_figures(settings, config, settings.lake_path(diffusion_backbone["folder"]), out_dir / "controlnet", images, controls)
    context.add_output_metadata({
        "steps": record.get("steps"),
        "final_loss": float(np.mean([p[1] for p in record.get("loss_curve", [])[-10:]])) if record.get("loss_curve") else None,
        "checkpoint_hash": checkpoint_hash,
        "backbone_trained_here": diffusion_backbone["trained_here"],
        "device": gpu.describe(),
        "bmi_varied": MetadataValue.md(png_markdown(grids[0], "one mask, BMI varied (paper Fig. 3)")),
        "seeds_varied": MetadataValue.md(png_markdown(grids[1], "one prompt, several seeds (paper Fig. 4)")),
        "grid_files": MetadataValue.json([str(g) for g in grids]),
    })
    return {"folder": settings.lake_relative(out_dir / "controlnet"), "backbone": diffusion_backbone["folder"],
            "checkpoint_hash": checkpoint_hash, "record": record}


def train_controlnet_on(settings: PipelineSettings, gpu: GpuResource, images: ImageSet, controls: ImageSet, prompts: list[str],
                        diffusion_backbone: dict, name: str, log) -> tuple[Path, dict, str]:
    """Train (or resume) a ControlNet into models/<name>: (its folder, training record, weights hash)."""
    config = gpu.apply(settings.get_profile().diffusion)
    out_dir = fetched(settings.models_dir() / name)  # a checkpoint another machine left: resume it
    backbone_dir = fetched(settings.lake_path(diffusion_backbone["folder"]))
    record = train_controlnet_data_parallel(
        gpu.data_parallel, backbone_dir, images.frames(), controls.frames(), prompts,
        config, out_dir, log=log, cells=images.index["cell"].tolist(),
    )
    write_training_patients(out_dir, patient_roles(name, name, images.index["patient_id"]))
    weights = next((out_dir / "controlnet").glob("*.safetensors"))
    return out_dir, record, hashlib.blake2b(weights.read_bytes(), digest_size=8).hexdigest()


def sample_figures(settings, config, backbone_dir, controlnet_dir, images, controls) -> list[Path]:
    """The paper's Fig. 3 (one mask, BMI varied) and Fig. 4 (one prompt, several seeds)."""
    index = images.index
    pick = index[(index["diagnosis"] == "hf") & (index["slice_offset"] == 0) & (index["frame_offset"] == 0)]
    row = int((pick if len(pick) else index).index[0])
    mask = read_all(_subset(controls, [row]), np.uint8)[0]
    first = index.iloc[row]
    cell = Cell.parse(first["cell"])
    sampler = Sampler(backbone_dir, controlnet_dir, config)
    out = settings.reports_dir() / "controlnet_samples"
    out.mkdir(parents=True, exist_ok=True)
    bmi_prompts = [prompt_for_cell(Cell(cell.sex, cell.age_band, b, cell.diagnosis), first) for b in BMI_BANDS]
    bmi_images = sampler.generate(np.stack([mask] * 3), bmi_prompts, [settings.seed] * 3, log=None)
    seeds = [settings.seed + i for i in range(4)]
    seed_images = sampler.generate(np.stack([mask] * 4), [first["prompt"]] * 4, seeds, log=None)
    real = read_all(_subset(images, [row]))
    grid_bmi = sample_grid(np.concatenate([real, bmi_images]), ["real"] + bmi_prompts, out / "bmi_varied.png", masks=np.stack([mask] * 4))
    grid_seed = sample_grid(seed_images, [f"seed {s}" for s in seeds], out / "seeds_varied.png", suptitle=first["prompt"])
    return [grid_bmi, grid_seed]


def _subset(image_set, rows):
    return ImageSet(image_set.frames(rows), image_set.index.iloc[rows].reset_index(drop=True))


@asset(code_version=CODE_VERSION, group_name="generator", pool=GPU_POOL, op_tags=gpu_op_tags(), ins={"frames": ALL_FRAMES})
def attribute_predictors(context: AssetExecutionContext, settings: PipelineSettings, frames: dict, cohort_source: dict) -> dict:
    """Sex / age band / BMI band / HF predictors trained on real frames, for quality control and FID features;
    on the phantom, measured against the ceiling of what its images carry (phantom/ceiling.py)."""
    profile = settings.get_profile()
    train, _ = gather(frames, splits=("train",), central_only=not profile.attribute_all_frames)
    val, _ = gather(frames, splits=("val",))
    predictor = train_attribute_predictor(
        train.frames(), train.index, val.frames(), val.index, image_size=profile.classifier.image_size,
        epochs=profile.attribute_epochs, seed=settings.seed, pretrained_weights=settings.resnet_weights or None,
        lr=profile.attribute_lr, schedule=profile.attribute_schedule,
        log=context.log.info, compute_dtype=profile.classifier.compute_dtype(), texture_blur=profile.attribute_texture_blur,
    )
    # the ceiling of what the frames show (the crop leaves out most of the chest wall), and of every parameter
    ceiling, ceiling_all = phantom_attribute_ceilings(cohort_source, settings.ood_policy(), profile.frames.crop_px)
    accuracy = accuracy_against_ceiling(predictor.validation, ceiling, ceiling_all if ceiling else None)
    if ceiling:
        context.log.info(f"attribute predictors against the phantom's ceiling: {accuracy.round(3).to_dict('records')}")
    folder = settings.models_dir() / "attribute_predictors"
    with atomic_dir(folder) as tmp:
        predictor.save(tmp)
        write_training_patients(tmp, patient_roles("attribute_predictors", "attribute_predictors", train.index["patient_id"], val.index["patient_id"]))
    context.add_output_metadata({
        "validation_balanced_accuracy": table_metadata(
            accuracy.assign(trusted_for_qc=[a in predictor.trusted for a in accuracy["attribute"]])),
        "trusted_for_qc": MetadataValue.json(sorted(predictor.trusted)),
        "init": predictor.model.description,
        # blur, contrast and brightness jitter in training (classify.train.texture_jitter): 0 = none
        "texture_augmentation_max_blur_px": profile.attribute_texture_blur,
    })
    return {"folder": settings.lake_relative(folder), "image_size": profile.classifier.image_size, "validation": predictor.validation,
            "trusted": sorted(predictor.trusted), "ceiling": ceiling, "ceiling_all_parameters": ceiling_all}


@multi_asset(
    group_name="generator",
    pool=GPU_POOL,
    op_tags=gpu_op_tags(),
    partitions_def=cell_partitions,
    ins={"frames": ALL_FRAMES},
    outs={
        "synthetic_frames": AssetOut(
            code_version=CODE_VERSION,
            description="Quality-controlled synthetic frames of one cell, tagged synthetic; equal count in every cell.",
            # no automation condition: regenerated by the weekly schedule or by hand (defs/automation.py says why)
        ),
        "synthetic_qc_log": AssetOut(code_version=CODE_VERSION, description="Every requested synthetic image: QC outcome, attempts, failure modes, provenance."),
    },
)
def synthetic_frames(
    context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict, controlnet: dict, attribute_predictors: dict
):
    result, log, frames_metadata, log_metadata = synthesize_cell(context, settings, gpu, frames, controlnet, attribute_predictors)
    yield Output(result, output_name="synthetic_frames", metadata=frames_metadata)
    yield Output(log, output_name="synthetic_qc_log", metadata=log_metadata)


def synthesize_cell(context: AssetExecutionContext, settings: PipelineSettings, gpu: GpuResource, frames: dict, controlnet: dict,
                    attribute_predictors: dict, label_only: bool = False) -> tuple:
    """One cell's synthetic frames with quality control: (frames, QC log, their metadata).

    label_only: prompts hold the diagnosis alone (the conditioning ablation's generator); QC then
    checks the masks only, since sex, age and BMI were not asked for."""
    cell = context.partition_key
    profile = settings.get_profile()
    config = gpu.apply(profile.diffusion)
    items, from_cell = plan_items(cell, frames, profile.synthetic_per_cell, settings.seed, privacy_salt(settings.lake_dir()))
    if label_only:
        items = [dataclasses.replace(it, prompt=label_prompt(it.expected["diagnosis"])) for it in items]
    if from_cell != cell:
        context.log.warning(f"{cell} has no training patient: borrowing masks from {from_cell}")
    # calibrated on the population the masks are drawn from: training images (central and
    # neighbouring slices and frames, not only the central ones, whose contrast is the highest)
    # of the prompted BMI band (generation/qc.py says why)
    real, real_controls = gather(frames, splits=("train",))
    sample, calibrated_on = calibration_rows(real.index, Cell.parse(cell).bmi_band, 500, settings.seed)
    thresholds, _ = calibrate_thresholds(real.frames().take(sample), real_controls.frames().take(sample).astype(np.uint8))
    predictor_dir, controlnet_dir, backbone_dir = (
        fetched(settings.lake_path(stored)) for stored in (attribute_predictors["folder"], controlnet["folder"], controlnet["backbone"]))
    predictor = AttributePredictor.load(predictor_dir, attribute_predictors["image_size"])
    floors = {} if label_only else predictor.qc_floors()
    check = make_check(thresholds, probabilities=predictor.probabilities, floors=floors)
    sampler = Sampler(backbone_dir, controlnet_dir, config)
    accepted, rejected = generate_with_qc(
        lambda c, p, s: sampler.generate(c, p, s, log=context.log.info), check, items, max_attempts=3,
        log=context.log.info, base_seed=settings.seed,
    )
    result, log = assemble_synthetic(cell, items, accepted, rejected, from_cell, controlnet["checkpoint_hash"], profile.frames.size)
    # memorization: distance of every kept image to its nearest real training image, exact, through an
    # index of all training frames that the first partition builds and the others read
    real_frames = real.frames()
    index = NearestRealIndex.open_or_build(fetched(settings.models_dir() / "memorization_index"), real_frames,
                                           rows_fingerprint(real_frames, real.index))
    rms, _ = index.nearest(result.images) if len(result) else (np.array([]), None)
    log["nearest_real_rms"] = np.nan
    log.loc[log["qc_passed"], "nearest_real_rms"] = rms
    log["near_copy"] = log["nearest_real_rms"] < MEMORIZATION_RMS
    # the reference: the same QC on the real frames the masks came from (log rows follow the items' order)
    log["source_frame_qc_passed"] = source_frames_pass(check, frames[from_cell], items)
    # where along the heart the mask lies (-1 basal neighbour, 0 central slice, +1 apical neighbour): QC fails apical masks most
    log["source_slice_offset"] = frames[from_cell].index["slice_offset"].to_numpy()[[it.source_row for it in items]].astype(int)
    pass_rate = len(accepted) / len(items) if items else 1.0
    failures = log.loc[~log["qc_passed"], "failure_modes"].value_counts().to_dict()
    frames_metadata = {
        "requested": len(items), "accepted": len(accepted), "qc_pass_rate": pass_rate,
        "borrowed_masks_from": from_cell if from_cell != cell else "",
        "qc_thresholds": MetadataValue.json(dataclasses.asdict(thresholds)),
        "qc_thresholds_calibrated_on": calibrated_on,
        "qc_trusted_attributes": MetadataValue.json(sorted(set(floors))),
        "qc_attribute_floors": MetadataValue.json(floors),
        "checkpoint_hash": controlnet["checkpoint_hash"],
        "near_copies": int(log["near_copy"].sum()),
    }
    log_metadata = {
        "qc_pass_rate": pass_rate,
        "source_frames_qc_pass_rate": float(log["source_frame_qc_passed"].mean()) if len(log) else float("nan"),
        "failure_modes": table_metadata(pd.DataFrame({"failure_mode": list(failures), "images": list(failures.values())})),
    }
    return result, log, frames_metadata, log_metadata
